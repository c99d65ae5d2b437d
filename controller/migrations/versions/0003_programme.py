"""programme: item placement and play modes, session templates, extra sessions, audit log

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 22:35:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("areas") as b:
        b.add_column(sa.Column("require_distinct_approver", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("programme_items") as b:
        b.add_column(sa.Column("kind", sa.String(12), nullable=False, server_default="audio"))
        b.add_column(sa.Column("title", sa.String(300), nullable=True))
        b.alter_column("bulletin_id", existing_type=sa.Integer(), nullable=True)
        b.add_column(sa.Column("fallback_bulletin_id", sa.Integer(), nullable=True))
        b.create_foreign_key("fk_programme_items_fallback", "bulletins", ["fallback_bulletin_id"], ["id"])
        b.add_column(sa.Column("relay_url", sa.String(1000), nullable=True))
        b.add_column(sa.Column("targets", sa.Text(), nullable=True))
        b.add_column(sa.Column("exclude", sa.Text(), nullable=True))
        b.alter_column("start_ms", existing_type=sa.BigInteger(), nullable=True)
        b.add_column(sa.Column("session_key", sa.String(40), nullable=True))
        b.add_column(sa.Column("at_s", sa.Integer(), nullable=True))
        b.add_column(sa.Column("mode", sa.String(10), nullable=False, server_default="once"))
        b.add_column(sa.Column("day", sa.String(10), nullable=True))
        b.add_column(sa.Column("weekdays", sa.Integer(), nullable=False, server_default="0"))
        b.add_column(sa.Column("date_from", sa.String(10), nullable=True))
        b.add_column(sa.Column("date_to", sa.String(10), nullable=True))
        b.add_column(sa.Column("repeat_count", sa.Integer(), nullable=False, server_default="1"))
        b.add_column(sa.Column("repeat_gap_s", sa.Integer(), nullable=False, server_default="0"))
        b.add_column(sa.Column("sort_order", sa.Integer(), nullable=False, server_default="0"))
        b.add_column(sa.Column("approved_by", sa.Integer(), nullable=True))
        b.create_foreign_key("fk_programme_items_approved_by", "users", ["approved_by"], ["id"])
        b.add_column(sa.Column("approved_ms", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("events") as b:
        b.alter_column("item_id", existing_type=sa.String(80), type_=sa.String(200))
        b.add_column(sa.Column("programme_item_id", sa.Integer(), nullable=True))
        b.create_index("ix_events_programme_item_id", ["programme_item_id"])
    op.create_table(
        "session_templates",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("area_id", sa.String(120), sa.ForeignKey("areas.id"), nullable=False, index=True),
        sa.Column("key", sa.String(40), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("start_s", sa.Integer(), nullable=False),
        sa.Column("end_s", sa.Integer(), nullable=False),
        sa.Column("weekdays", sa.Integer(), nullable=False),
        sa.UniqueConstraint("area_id", "key"),
    )
    op.create_table(
        "extra_sessions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("area_id", sa.String(120), sa.ForeignKey("areas.id"), nullable=False, index=True),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("key", sa.String(40), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("start_s", sa.Integer(), nullable=False),
        sa.Column("end_s", sa.Integer(), nullable=False),
        sa.UniqueConstraint("area_id", "day", "key"),
    )
    op.create_table(
        "missed_plays",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("occurrence_id", sa.String(200), nullable=False, index=True),
        sa.Column("programme_item_id", sa.Integer(), nullable=False, index=True),
        sa.Column("rx_id", sa.String(80), nullable=False, index=True),
        sa.Column("planned_start_ms", sa.BigInteger(), nullable=False, index=True),
        sa.Column("detected_ms", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("occurrence_id", "rx_id"),
    )
    # APScheduler's SQLAlchemyJobStore table, so the whole schema lives in migrations.
    op.create_table(
        "apscheduler_jobs",
        sa.Column("id", sa.Unicode(191), primary_key=True),
        sa.Column("next_run_time", sa.Float(25), index=True),
        sa.Column("job_state", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False, index=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=True),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("object_type", sa.String(40), nullable=False),
        sa.Column("object_id", sa.String(120), nullable=False, index=True),
        sa.Column("detail", sa.Text(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("apscheduler_jobs")
    op.drop_table("missed_plays")
    op.drop_table("extra_sessions")
    op.drop_table("session_templates")
    with op.batch_alter_table("events") as b:
        b.drop_index("ix_events_programme_item_id")
        b.drop_column("programme_item_id")
    with op.batch_alter_table("programme_items") as b:
        for col in ("approved_ms", "approved_by", "sort_order", "repeat_gap_s", "repeat_count", "date_to",
                    "date_from", "weekdays", "day", "mode", "at_s", "session_key", "exclude", "targets",
                    "relay_url", "fallback_bulletin_id", "title", "kind"):
            b.drop_column(col)
    with op.batch_alter_table("areas") as b:
        b.drop_column("require_distinct_approver")
