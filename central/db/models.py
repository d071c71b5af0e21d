"""The central database schema (SQLAlchemy 2.0 declarative); Alembic migrations create it.

Times are unix seconds as double precision on every database. Maps (an event's data, an
agent's skills) are JSON text encoded by us: the CockroachDB dialect hands JSON columns back
as strings on PostgreSQL, so a JSON column type would read differently on the two databases.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Double, Index, Integer, MetaData, PrimaryKeyConstraint, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names, so migrations can refer to them on every database.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Site(Base):
    __tablename__ = "sites"

    site_id: Mapped[str] = mapped_column(String, primary_key=True)
    name: Mapped[str] = mapped_column(String)
    listen: Mapped[str] = mapped_column(String)


class SkillGroup(Base):
    """Skill groups are defined per site in the province config."""

    __tablename__ = "skill_groups"

    site_id: Mapped[str] = mapped_column(String, primary_key=True)
    skill_group_id: Mapped[str] = mapped_column(String, primary_key=True)
    name: Mapped[str] = mapped_column(String)
    strategy: Mapped[str] = mapped_column(String)
    priority: Mapped[int] = mapped_column(Integer)


class Agent(Base):
    __tablename__ = "agents"

    code: Mapped[str] = mapped_column(String, primary_key=True)
    site_id: Mapped[str] = mapped_column(String, index=True)
    name: Mapped[str] = mapped_column(String)
    role: Mapped[str] = mapped_column(String)
    # JSON text: skill group id -> level.
    skills: Mapped[str] = mapped_column(Text)


class Customer(Base):
    __tablename__ = "customers"

    customer_id: Mapped[str] = mapped_column(String, primary_key=True)
    phone: Mapped[str] = mapped_column(String, unique=True)
    name: Mapped[str] = mapped_column(String)
    level: Mapped[str] = mapped_column(String)
    city: Mapped[str] = mapped_column(String)
    notes: Mapped[str] = mapped_column(Text)
    # The service desk (migration 0004): every number is also in customer_phones.
    account: Mapped[str] = mapped_column(String, index=True, server_default="")
    address: Mapped[str] = mapped_column(Text, server_default="")
    email: Mapped[str] = mapped_column(String, server_default="")
    # Optimistic edits: every update names the version it read and raises it by one.
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    updated_at: Mapped[float] = mapped_column(Double, server_default="0")


class Call(Base):
    """One row per call id, folded from all its events (central.records.fold)."""

    __tablename__ = "calls"
    __table_args__ = (
        # A customer's history finds their calls by caller number (migration 0004).
        Index("ix_calls_ani_first_event_at", "ani", "first_event_at"),
        # ... and the calls made to them (callbacks) by the number called.
        Index("ix_calls_dnis_first_event_at", "dnis", "first_event_at"),
        Index("ix_calls_first_event_at_call_id", "first_event_at", "call_id"),
        Index("ix_calls_entry_site_id_first_event_at", "entry_site_id", "first_event_at", "call_id"),
    )

    call_id: Mapped[str] = mapped_column(String, primary_key=True)
    entry_site_id: Mapped[str] = mapped_column(String)
    ani: Mapped[str] = mapped_column(String)
    dnis: Mapped[str] = mapped_column(String)
    skill_group: Mapped[str] = mapped_column(String)
    state: Mapped[str] = mapped_column(String)
    outcome: Mapped[str] = mapped_column(String)
    served_site_id: Mapped[str] = mapped_column(String)
    agent_code: Mapped[str] = mapped_column(String)
    arrived_at: Mapped[float | None] = mapped_column(Double)
    answered_at: Mapped[float | None] = mapped_column(Double)
    ended_at: Mapped[float | None] = mapped_column(Double)
    wait_s: Mapped[float] = mapped_column(Double)
    talk_s: Mapped[float] = mapped_column(Double)
    event_count: Mapped[int] = mapped_column(Integer)
    # Listing order (arrival order, and stable before ARRIVED itself has reached central).
    first_event_at: Mapped[float] = mapped_column(Double)


class CallLeg(Base):
    __tablename__ = "call_legs"

    call_id: Mapped[str] = mapped_column(String, primary_key=True)
    site_id: Mapped[str] = mapped_column(String, primary_key=True)
    first_at: Mapped[float] = mapped_column(Double)
    last_at: Mapped[float] = mapped_column(Double)
    event_count: Mapped[int] = mapped_column(Integer)
    agent_code: Mapped[str] = mapped_column(String)


class CallEvent(Base):
    """(call_id, site_id, seq) is unique: what makes ingest idempotent."""

    __tablename__ = "call_events"
    __table_args__ = (
        # The unique key is the primary key itself: no second index to write, and no sequence
        # (CockroachDB spreads a natural key over ranges better than a counter).
        PrimaryKeyConstraint("call_id", "site_id", "seq"),
    )

    call_id: Mapped[str] = mapped_column(String)
    site_id: Mapped[str] = mapped_column(String)
    seq: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String)
    at: Mapped[float] = mapped_column(Double)
    agent_code: Mapped[str] = mapped_column(String)
    skill_group: Mapped[str] = mapped_column(String)
    ani: Mapped[str] = mapped_column(String)
    dnis: Mapped[str] = mapped_column(String)
    outcome: Mapped[str] = mapped_column(String)
    # JSON text: the event's free-form string map.
    data: Mapped[str] = mapped_column(Text)


class RoutingDecision(Base):
    """Why a call was moved (or kept) between sites; pre-routes and pulls have no call id yet."""

    __tablename__ = "routing_decisions"
    __table_args__ = (Index("ix_routing_decisions_call_id_at", "call_id", "at"),)

    decision_id: Mapped[str] = mapped_column(String, primary_key=True)
    call_id: Mapped[str] = mapped_column(String)
    at: Mapped[float] = mapped_column(Double)
    origin_site_id: Mapped[str] = mapped_column(String)
    # "" : the call stayed (or a pre-route found every site busy).
    target_site_id: Mapped[str] = mapped_column(String)
    mode: Mapped[str] = mapped_column(String)
    skill_group: Mapped[str] = mapped_column(String)
    reason: Mapped[str] = mapped_column(Text)
    # JSON text: the candidate sites with their figures and notes.
    candidates: Mapped[str] = mapped_column(Text)


class CentralLeadership(Base):
    """One row (id 1): the epoch of the newest central leader. Every write checks it (fencing)."""

    __tablename__ = "central_leadership"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    epoch: Mapped[int] = mapped_column(BigInteger)


class IvrFlow(Base):
    """One version of an IVR flow, never changed once stored: a call keeps the version it started on."""

    __tablename__ = "ivr_flows"
    __table_args__ = (PrimaryKeyConstraint("flow_id", "version"),)

    flow_id: Mapped[str] = mapped_column(String)
    version: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text)
    # As pushed (YAML, comments kept), and as validated (canonical JSON: what the sites get).
    document: Mapped[str] = mapped_column(Text)
    canonical: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String)
    nodes: Mapped[int] = mapped_column(Integer)
    pushed_at: Mapped[float] = mapped_column(Double)


class ServiceCatalogRevision(Base):
    """Each push of the service catalog is a new revision; the highest is the catalog in force."""

    __tablename__ = "ivr_service_catalogs"

    revision: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    document: Mapped[str] = mapped_column(Text)
    canonical: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String)
    pushed_at: Mapped[float] = mapped_column(Double)


class AuditLogEntry(Base):
    """Central's append-only audit log (central/audit.py writes it; SQLite triggers refuse changes)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    entry_id: Mapped[str] = mapped_column(String(64), unique=True)
    at: Mapped[float] = mapped_column(Double)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256))
    source: Mapped[str] = mapped_column(String(256))
    outcome: Mapped[str] = mapped_column(String(16))
    site_id: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)


# The service desk's tables (customers' numbers, tickets, notifications, knowledge,
# idempotency), the index of call recordings (the files stay at the sites) and customers' PINs.
from central.db import pin_models, recording_models, servicedesk_models, session_models  # noqa: E402, F401
