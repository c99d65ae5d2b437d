"""trust and truth: bulletin warnings, the receivers' presence history

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 05:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bulletins") as b:
        # Kept but worth a look (a truncated file decoded only in part): code, English, Vietnamese.
        b.add_column(sa.Column("warning_code", sa.String(60), nullable=True))
        b.add_column(sa.Column("warning_message", sa.Text(), nullable=True))
        b.add_column(sa.Column("warning_message_vi", sa.Text(), nullable=True))
    op.create_table(
        "presence",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("rx_id", sa.String(80), sa.ForeignKey("receivers.id"), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("since_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_presence_rx_since", "presence", ["rx_id", "since_ms"])


def downgrade() -> None:
    op.drop_index("ix_presence_rx_since", table_name="presence")
    op.drop_table("presence")
    with op.batch_alter_table("bulletins") as b:
        b.drop_column("warning_message_vi")
        b.drop_column("warning_message")
        b.drop_column("warning_code")
