"""The index of call recordings: one row per (call, site); the files stay at the sites.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

To put it after a newer head, change `down_revision` only.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "recordings",
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("site_id", sa.String(32), nullable=False),
        sa.Column("agents", sa.Text(), nullable=False),
        sa.Column("caller_number", sa.String(32), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("duration_s", sa.Double(), nullable=False),
        sa.Column("file", sa.String(128), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("indexed_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("call_id", "site_id", name="pk_recordings"),
    )
    op.create_index("ix_recordings_started_at", "recordings", ["started_at"])
    op.create_index(
        "ix_recordings_caller_number_started_at", "recordings", ["caller_number", "started_at"]
    )


def downgrade() -> None:
    op.drop_table("recordings")
