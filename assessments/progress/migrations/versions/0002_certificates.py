"""Certificates of completed programme tracks (signed, one per learner and track).

Revision ID: 0002
Revises: 0001
Create Date: 2026-02-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "certificates",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user", sa.String(32), nullable=False),
        sa.Column("track", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("track_title", sa.String(200), nullable=False),
        sa.Column("completed_at", sa.Integer, nullable=False),
        sa.Column("issued_at", sa.Integer, nullable=False),
        sa.Column("pdf", sa.LargeBinary, nullable=False),
        sa.Column("pdf_sha256", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("signature", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_certificates"),
        sa.UniqueConstraint("user", "track", name="uq_certificates_user_track"),
    )


def downgrade() -> None:
    op.drop_table("certificates")
