"""health: heartbeat history (15-minute buckets), area activity, as-run records, fault acknowledgements, report indexes

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 23:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "heartbeat_history",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("rx_id", sa.String(80), nullable=False),
        sa.Column("bucket_ms", sa.BigInteger(), nullable=False, index=True),
        sa.Column("beats", sa.Integer(), nullable=False),
        sa.Column("offset_n", sa.Integer(), nullable=False),
        sa.Column("offset_sum", sa.Float(), nullable=False),
        sa.Column("offset_min", sa.Float(), nullable=True),
        sa.Column("offset_max", sa.Float(), nullable=True),
        sa.Column("temp_n", sa.Integer(), nullable=False),
        sa.Column("temp_sum", sa.Float(), nullable=False),
        sa.Column("temp_min", sa.Float(), nullable=True),
        sa.Column("temp_max", sa.Float(), nullable=True),
        sa.Column("signal_n", sa.Integer(), nullable=False),
        sa.Column("signal_sum", sa.Float(), nullable=False),
        sa.Column("signal_min", sa.Float(), nullable=True),
        sa.Column("signal_max", sa.Float(), nullable=True),
        sa.Column("disk_free_min", sa.BigInteger(), nullable=True),
        sa.Column("playing_beats", sa.Integer(), nullable=False),
        sa.UniqueConstraint("rx_id", "bucket_ms"),
    )
    op.create_table(
        "fault_acks",
        sa.Column("fault_id", sa.Integer(), sa.ForeignKey("faults.id"), primary_key=True),
        sa.Column("acked_by", sa.Integer(), sa.ForeignKey("users.id"), nullable=True),
        sa.Column("acked_ms", sa.BigInteger(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
    )
    op.create_table(
        "area_activity",
        sa.Column("area_id", sa.String(120), primary_key=True),
        sa.Column("bucket_ms", sa.BigInteger(), primary_key=True),
        sa.Column("working", sa.Integer(), nullable=False),
    )
    op.create_table(
        "as_run",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("occurrence_id", sa.String(200), nullable=False),
        sa.Column("rx_id", sa.String(80), nullable=False),
        sa.Column("area_id", sa.String(120), nullable=False),
        sa.Column("programme_item_id", sa.Integer(), nullable=True),
        sa.Column("planned_start_ms", sa.BigInteger(), nullable=False, index=True),
        sa.Column("reported_ms", sa.BigInteger(), nullable=False),
        sa.Column("received_ms", sa.BigInteger(), nullable=False, index=True),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(12), nullable=False),
        sa.Column("played_ms", sa.BigInteger(), nullable=True),
        sa.Column("planned_ms", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.String(200), nullable=True),
        sa.UniqueConstraint("occurrence_id", "rx_id"),
    )
    op.create_index("ix_as_run_area_start", "as_run", ["area_id", "planned_start_ms"])
    op.create_index("ix_events_type_ts", "events", ["type", "ts_ms"])
    op.create_index("ix_events_received", "events", ["received_ms"])
    op.create_index("ix_faults_raised", "faults", ["raised_ms"])


def downgrade() -> None:
    op.drop_index("ix_faults_raised", "faults")
    op.drop_index("ix_events_received", "events")
    op.drop_index("ix_events_type_ts", "events")
    op.drop_index("ix_as_run_area_start", "as_run")
    op.drop_table("as_run")
    op.drop_table("area_activity")
    op.drop_table("fault_acks")
    op.drop_table("heartbeat_history")
