"""IVR flows (every version kept) and the service catalog's revisions.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ivr_flows",
        sa.Column("flow_id", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("canonical", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(), nullable=False),
        sa.Column("nodes", sa.Integer(), nullable=False),
        sa.Column("pushed_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("flow_id", "version", name="pk_ivr_flows"),
    )
    op.create_table(
        "ivr_service_catalogs",
        sa.Column("revision", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("canonical", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(), nullable=False),
        sa.Column("pushed_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("revision", name="pk_ivr_service_catalogs"),
    )


def downgrade() -> None:
    op.drop_table("ivr_service_catalogs")
    op.drop_table("ivr_flows")
