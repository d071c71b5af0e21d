"""The service desk: customers' numbers and edits, tickets, notifications, knowledge base.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("account", sa.String(), server_default="", nullable=False))
        batch.add_column(sa.Column("address", sa.Text(), server_default="", nullable=False))
        batch.add_column(sa.Column("email", sa.String(), server_default="", nullable=False))
        batch.add_column(sa.Column("version", sa.Integer(), server_default="1", nullable=False))
        batch.add_column(sa.Column("updated_at", sa.Double(), server_default="0", nullable=False))
    op.create_index("ix_customers_account", "customers", ["account"])
    op.create_index("ix_calls_ani_first_event_at", "calls", ["ani", "first_event_at"])
    op.create_index("ix_calls_dnis_first_event_at", "calls", ["dnis", "first_event_at"])

    op.create_table(
        "customer_phones",
        sa.Column("phone", sa.String(), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("phone", name="pk_customer_phones"),
    )
    op.create_index("ix_customer_phones_customer_id", "customer_phones", ["customer_id"])
    # Every customer so far had one number: it becomes their primary number.
    op.execute(
        "INSERT INTO customer_phones (phone, customer_id, position) SELECT phone, customer_id, 0 FROM customers"
    )

    op.create_table(
        "tickets",
        sa.Column("ticket_id", sa.String(), nullable=False),
        sa.Column("category", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("unit", sa.String(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("call_id", sa.String(), nullable=False),
        sa.Column("origin_site_id", sa.String(), nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("due_at", sa.Double(), nullable=False),
        sa.Column("escalation", sa.Integer(), nullable=False),
        sa.Column("replied_at", sa.Double(), nullable=True),
        sa.Column("closed_at", sa.Double(), nullable=True),
        sa.Column("reopen_count", sa.Integer(), nullable=False),
        sa.Column("entry_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("ticket_id", name="pk_tickets"),
    )
    op.create_index("ix_tickets_unit_state_due_at", "tickets", ["unit", "state", "due_at", "ticket_id"])
    op.create_index("ix_tickets_state_due_at", "tickets", ["state", "due_at", "ticket_id"])
    op.create_index(
        "ix_tickets_category_state_due_at", "tickets", ["category", "state", "due_at", "ticket_id"]
    )
    op.create_index("ix_tickets_customer_id_created_at", "tickets", ["customer_id", "created_at"])
    op.create_index("ix_tickets_due_at", "tickets", ["due_at", "ticket_id"])
    op.create_index("ix_tickets_report", "tickets", ["unit", "category", "state", "due_at", "closed_at"])
    op.create_index("ix_tickets_call_id", "tickets", ["call_id"])

    op.create_table(
        "ticket_entries",
        sa.Column("ticket_id", sa.String(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("author", sa.String(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("from_state", sa.String(), nullable=False),
        sa.Column("to_state", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("ticket_id", "seq", name="pk_ticket_entries"),
    )

    op.create_table(
        "notifications",
        sa.Column("notification_id", sa.String(), nullable=False),
        sa.Column("ticket_id", sa.String(), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("address", sa.String(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("next_attempt_at", sa.Double(), nullable=False),
        sa.Column("done_at", sa.Double(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("notification_id", name="pk_notifications"),
    )
    op.create_index("ix_notifications_state_next_attempt_at", "notifications", ["state", "next_attempt_at"])
    op.create_index("ix_notifications_customer_id_created_at", "notifications", ["customer_id", "created_at"])
    op.create_index("ix_notifications_ticket_id", "notifications", ["ticket_id"])

    op.create_table(
        "notification_attempts",
        sa.Column("notification_id", sa.String(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("ok", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("notification_id", "attempt", name="pk_notification_attempts"),
    )

    op.create_table(
        "kb_articles",
        sa.Column("article_id", sa.String(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("category", sa.String(), nullable=False),
        sa.Column("service", sa.String(), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("proposed_by", sa.String(), nullable=False),
        sa.Column("reviewed_by", sa.String(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("published_at", sa.Double(), nullable=True),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("article_id", name="pk_kb_articles"),
    )
    op.create_index("ix_kb_articles_state_category_service", "kb_articles", ["state", "category", "service"])

    op.create_table(
        "kb_terms",
        sa.Column("term", sa.String(), nullable=False),
        sa.Column("article_id", sa.String(), nullable=False),
        sa.Column("tf", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("term", "article_id", name="pk_kb_terms"),
    )
    op.create_index("ix_kb_terms_article_id", "kb_terms", ["article_id"])

    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("request_hash", sa.String(), nullable=False),
        sa.Column("result_id", sa.String(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name="pk_idempotency_keys"),
    )


def downgrade() -> None:
    for table in (
        "idempotency_keys",
        "kb_terms",
        "kb_articles",
        "notification_attempts",
        "notifications",
        "ticket_entries",
        "tickets",
        "customer_phones",
    ):
        op.drop_table(table)
    op.drop_index("ix_calls_dnis_first_event_at", "calls")
    op.drop_index("ix_calls_ani_first_event_at", "calls")
    op.drop_index("ix_customers_account", "customers")
    with op.batch_alter_table("customers") as batch:
        for column in ("updated_at", "version", "email", "address", "account"):
            batch.drop_column(column)
