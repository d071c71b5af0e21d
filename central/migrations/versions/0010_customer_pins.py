"""Customers' PINs: a salted argon2id hash per customer and the wrong entries counted (lockout).

Revision ID: 0010
Revises: 0007
Create Date: 2026-12-01

To put it after a newer head, change `down_revision` only.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customer_pins",
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("pin_hash", sa.String(256), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("locked_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name="pk_customer_pins"),
    )


def downgrade() -> None:
    op.drop_table("customer_pins")
