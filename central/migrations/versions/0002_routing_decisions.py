"""Routing decisions: why a call was moved between sites (global router, pre-routing).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "routing_decisions",
        sa.Column("decision_id", sa.String(), nullable=False),
        sa.Column("call_id", sa.String(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("origin_site_id", sa.String(), nullable=False),
        sa.Column("target_site_id", sa.String(), nullable=False),
        sa.Column("mode", sa.String(), nullable=False),
        sa.Column("skill_group", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        # JSON as text: reads back the same on SQLite and PostgreSQL/CockroachDB.
        sa.Column("candidates", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("decision_id", name="pk_routing_decisions"),
    )
    op.create_index("ix_routing_decisions_call_id_at", "routing_decisions", ["call_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_routing_decisions_call_id_at", table_name="routing_decisions")
    op.drop_table("routing_decisions")
