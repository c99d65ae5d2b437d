"""login throttling per client address and account (replaces the per-account lock-out)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 13:30:00

users.failed_logins and users.locked_until_ms stay (no longer written or read) so that an
older release can still run on this schema; the locks they held are cleared here.
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_throttle",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("username", sa.String(80), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_failure_ms", sa.BigInteger(), nullable=False),
        sa.Column("blocked_until_ms", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint("kind", "address", "username", name="uq_login_throttle"),
    )
    op.create_index("ix_login_throttle_username", "login_throttle", ["username"])
    op.create_index("ix_login_throttle_last_failure_ms", "login_throttle", ["last_failure_ms"])
    op.execute("UPDATE users SET failed_logins = 0, locked_until_ms = NULL")


def downgrade() -> None:
    op.drop_index("ix_login_throttle_last_failure_ms", table_name="login_throttle")
    op.drop_index("ix_login_throttle_username", table_name="login_throttle")
    op.drop_table("login_throttle")
