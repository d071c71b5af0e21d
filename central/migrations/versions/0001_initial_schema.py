"""Initial schema: sites, skill groups, agents, customers, calls, call legs, call events.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sites",
        sa.Column("site_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("listen", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("site_id", name="pk_sites"),
    )
    op.create_table(
        "skill_groups",
        sa.Column("site_id", sa.String(), nullable=False),
        sa.Column("skill_group_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("strategy", sa.String(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("site_id", "skill_group_id", name="pk_skill_groups"),
    )
    op.create_table(
        "agents",
        sa.Column("code", sa.String(), nullable=False),
        sa.Column("site_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("skills", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_agents"),
    )
    op.create_index("ix_agents_site_id", "agents", ["site_id"])
    op.create_table(
        "customers",
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("phone", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("level", sa.String(), nullable=False),
        sa.Column("city", sa.String(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name="pk_customers"),
        sa.UniqueConstraint("phone", name="uq_customers_phone"),
    )
    op.create_table(
        "calls",
        sa.Column("call_id", sa.String(), nullable=False),
        sa.Column("entry_site_id", sa.String(), nullable=False),
        sa.Column("ani", sa.String(), nullable=False),
        sa.Column("dnis", sa.String(), nullable=False),
        sa.Column("skill_group", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("served_site_id", sa.String(), nullable=False),
        sa.Column("agent_code", sa.String(), nullable=False),
        sa.Column("arrived_at", sa.Double(), nullable=True),
        sa.Column("answered_at", sa.Double(), nullable=True),
        sa.Column("ended_at", sa.Double(), nullable=True),
        sa.Column("wait_s", sa.Double(), nullable=False),
        sa.Column("talk_s", sa.Double(), nullable=False),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.Column("first_event_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("call_id", name="pk_calls"),
    )
    op.create_index("ix_calls_first_event_at_call_id", "calls", ["first_event_at", "call_id"])
    op.create_index(
        "ix_calls_entry_site_id_first_event_at", "calls", ["entry_site_id", "first_event_at", "call_id"]
    )
    op.create_table(
        "call_legs",
        sa.Column("call_id", sa.String(), nullable=False),
        sa.Column("site_id", sa.String(), nullable=False),
        sa.Column("first_at", sa.Double(), nullable=False),
        sa.Column("last_at", sa.Double(), nullable=False),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.Column("agent_code", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("call_id", "site_id", name="pk_call_legs"),
    )
    # The primary key (call_id, site_id, seq) is the unique key that makes ingest idempotent.
    op.create_table(
        "call_events",
        sa.Column("call_id", sa.String(), nullable=False),
        sa.Column("site_id", sa.String(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("agent_code", sa.String(), nullable=False),
        sa.Column("skill_group", sa.String(), nullable=False),
        sa.Column("ani", sa.String(), nullable=False),
        sa.Column("dnis", sa.String(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("call_id", "site_id", "seq", name="pk_call_events"),
    )


def downgrade() -> None:
    op.drop_table("call_events")
    op.drop_table("call_legs")
    op.drop_index("ix_calls_entry_site_id_first_event_at", table_name="calls")
    op.drop_index("ix_calls_first_event_at_call_id", table_name="calls")
    op.drop_table("calls")
    op.drop_table("customers")
    op.drop_index("ix_agents_site_id", table_name="agents")
    op.drop_table("agents")
    op.drop_table("skill_groups")
    op.drop_table("sites")
