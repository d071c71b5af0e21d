"""The dashboard's failed logins in the database (per user name and per source host): shared by
the replicas, so a leader change keeps the throttle and the lockouts.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01

To put it after a newer head, change `down_revision` only.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dashboard_login_guard",
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("key", sa.String(256), nullable=False),
        sa.Column("failures", sa.Text(), nullable=False),
        sa.Column("locked_until", sa.Double(), nullable=False),
        sa.Column("changed_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "key", name="pk_dashboard_login_guard"),
    )


def downgrade() -> None:
    op.drop_table("dashboard_login_guard")
