"""The dashboard's operator sessions (migration 0013). Same conventions as central.db.models.

One row per live session, shared by every central replica (a leader change keeps them): the
SHA-256 of the cookie's token (never the token: a reader of the database cannot take a session
over), the operator and role, when it began and when it was last used. Logout deletes the row;
an expired one is deleted when next seen and by the dashboard's sweep.
"""

from __future__ import annotations

from sqlalchemy import Double, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from central.db.models import Base


class DashboardSession(Base):
    __tablename__ = "dashboard_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    login: Mapped[str] = mapped_column(String(32))
    role: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[float] = mapped_column(Double)
    seen_at: Mapped[float] = mapped_column(Double)


class DashboardLoginGuard(Base):
    """The dashboard's failed logins per user name and per source host (migration 0014), shared by
    the replicas so that a leader change does not forgive a guesser: the failures within the
    window (a JSON list of times), the end of a lockout, when the row last changed (the sweep)."""

    __tablename__ = "dashboard_login_guard"

    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    failures: Mapped[str] = mapped_column(Text)
    locked_until: Mapped[float] = mapped_column(Double)
    changed_at: Mapped[float] = mapped_column(Double)
