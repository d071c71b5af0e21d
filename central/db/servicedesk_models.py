"""The service desk's tables (migration 0004). Same conventions as central.db.models.

Keys are natural or generated strings rather than sequences (CockroachDB spreads them over
ranges); a ticket's entries and a notification's attempts are numbered within their parent.
"""

from __future__ import annotations

from sqlalchemy import Double, Index, Integer, PrimaryKeyConstraint, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from central.db.models import Base


class CustomerPhone(Base):
    """Every number of every customer: a number belongs to one customer (the screen pop's key)."""

    __tablename__ = "customer_phones"

    phone: Mapped[str] = mapped_column(String, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String, index=True)
    # 0 is the primary number.
    position: Mapped[int] = mapped_column(Integer)


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        # The lists: by unit and state in due order, by state in due order, by customer.
        Index("ix_tickets_unit_state_due_at", "unit", "state", "due_at", "ticket_id"),
        Index("ix_tickets_state_due_at", "state", "due_at", "ticket_id"),
        Index("ix_tickets_category_state_due_at", "category", "state", "due_at", "ticket_id"),
        Index("ix_tickets_customer_id_created_at", "customer_id", "created_at"),
        Index("ix_tickets_due_at", "due_at", "ticket_id"),
        # Covers the report (grouped by unit and category): read from the index alone.
        Index("ix_tickets_report", "unit", "category", "state", "due_at", "closed_at"),
    )

    ticket_id: Mapped[str] = mapped_column(String, primary_key=True)
    category: Mapped[str] = mapped_column(String)
    state: Mapped[str] = mapped_column(String)
    # "city:<site id>" or "dept:<name>"; "" until dispatched.
    unit: Mapped[str] = mapped_column(String)
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    customer_id: Mapped[str] = mapped_column(String)
    call_id: Mapped[str] = mapped_column(String, index=True)
    # The city where it was raised ("" for the back office).
    origin_site_id: Mapped[str] = mapped_column(String)
    created_by: Mapped[str] = mapped_column(String)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)
    due_at: Mapped[float] = mapped_column(Double)
    escalation: Mapped[int] = mapped_column(Integer)
    replied_at: Mapped[float | None] = mapped_column(Double)
    closed_at: Mapped[float | None] = mapped_column(Double)
    reopen_count: Mapped[int] = mapped_column(Integer)
    # Entries so far: the next entry's number.
    entry_count: Mapped[int] = mapped_column(Integer)


class TicketEntry(Base):
    """Notes, replies, transitions and escalations of a ticket, with author and time."""

    __tablename__ = "ticket_entries"
    __table_args__ = (PrimaryKeyConstraint("ticket_id", "seq"),)

    ticket_id: Mapped[str] = mapped_column(String)
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String)
    author: Mapped[str] = mapped_column(String)
    at: Mapped[float] = mapped_column(Double)
    body: Mapped[str] = mapped_column(Text)
    from_state: Mapped[str] = mapped_column(String)
    to_state: Mapped[str] = mapped_column(String)


class Notification(Base):
    """The outbox of messages to customers; the dispatcher sends those due and records outcomes."""

    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_state_next_attempt_at", "state", "next_attempt_at"),
        Index("ix_notifications_customer_id_created_at", "customer_id", "created_at"),
    )

    notification_id: Mapped[str] = mapped_column(String, primary_key=True)
    ticket_id: Mapped[str] = mapped_column(String, index=True)
    customer_id: Mapped[str] = mapped_column(String)
    channel: Mapped[str] = mapped_column(String)
    address: Mapped[str] = mapped_column(String)
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    # pending -> sent | failed
    state: Mapped[str] = mapped_column(String)
    attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Double)
    next_attempt_at: Mapped[float] = mapped_column(Double)
    done_at: Mapped[float | None] = mapped_column(Double)
    last_error: Mapped[str] = mapped_column(Text)


class NotificationAttempt(Base):
    __tablename__ = "notification_attempts"
    __table_args__ = (PrimaryKeyConstraint("notification_id", "attempt"),)

    notification_id: Mapped[str] = mapped_column(String)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[float] = mapped_column(Double)
    ok: Mapped[int] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(Text)


class KbArticle(Base):
    __tablename__ = "kb_articles"
    __table_args__ = (Index("ix_kb_articles_state_category_service", "state", "category", "service"),)

    article_id: Mapped[str] = mapped_column(String, primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String)
    service: Mapped[str] = mapped_column(String)
    # JSON text: a list of tags.
    tags: Mapped[str] = mapped_column(Text)
    # proposed -> published | rejected
    state: Mapped[str] = mapped_column(String)
    question: Mapped[str] = mapped_column(Text)
    proposed_by: Mapped[str] = mapped_column(String)
    reviewed_by: Mapped[str] = mapped_column(String)
    created_at: Mapped[float] = mapped_column(Double)
    published_at: Mapped[float | None] = mapped_column(Double)
    # Weighted term count (BM25's document length); 0 while not indexed.
    length: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)


class KbTerm(Base):
    """The inverted index of the published articles: term -> article, with its frequency."""

    __tablename__ = "kb_terms"
    __table_args__ = (PrimaryKeyConstraint("term", "article_id"),)

    term: Mapped[str] = mapped_column(String)
    article_id: Mapped[str] = mapped_column(String, index=True)
    tf: Mapped[int] = mapped_column(Integer)


class IdempotencyKey(Base):
    """A create's key: the same key with the same request returns the first result."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (PrimaryKeyConstraint("scope", "key"),)

    scope: Mapped[str] = mapped_column(String)
    key: Mapped[str] = mapped_column(String)
    request_hash: Mapped[str] = mapped_column(String)
    result_id: Mapped[str] = mapped_column(String)
    created_at: Mapped[float] = mapped_column(Double)
