"""The dashboard's operator sessions (migration 0013). Same conventions as central.db.models.

One row per live session, shared by every central replica (a leader change keeps them): the
SHA-256 of the cookie's token (never the token: a reader of the database cannot take a session
over), the operator and role, when it began and when it was last used. Logout deletes the row;
an expired one is deleted when next seen and by the dashboard's sweep.
"""

from __future__ import annotations

from sqlalchemy import Double, String
from sqlalchemy.orm import Mapped, mapped_column

from central.db.models import Base


class DashboardSession(Base):
    __tablename__ = "dashboard_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    login: Mapped[str] = mapped_column(String(32))
    role: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[float] = mapped_column(Double)
    seen_at: Mapped[float] = mapped_column(Double)
