"""audio pipeline: job progress, loudness, peaks, text to speech

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 22:25:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bulletins", schema=None) as batch_op:
        batch_op.add_column(sa.Column("progress", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("error_message_vi", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("text", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("tts_engine", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("tts_voice", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("loudness_in_lufs", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("peak_in_db", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("updated_ms", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("media", schema=None) as batch_op:
        batch_op.add_column(sa.Column("loudness_lufs", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("true_peak_db", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("peaks", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("media", schema=None) as batch_op:
        batch_op.drop_column("peaks")
        batch_op.drop_column("true_peak_db")
        batch_op.drop_column("loudness_lufs")
    with op.batch_alter_table("bulletins", schema=None) as batch_op:
        batch_op.drop_column("updated_ms")
        batch_op.drop_column("peak_in_db")
        batch_op.drop_column("loudness_in_lufs")
        batch_op.drop_column("tts_voice")
        batch_op.drop_column("tts_engine")
        batch_op.drop_column("text")
        batch_op.drop_column("error_message_vi")
        batch_op.drop_column("progress")
