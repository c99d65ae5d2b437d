"""fleet: receivers can be retired (kept for the as-run history, out of service)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 01:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("receivers") as b:
        b.add_column(sa.Column("retired_ms", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("receivers") as b:
        b.drop_column("retired_ms")
