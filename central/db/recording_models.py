"""The index of call recordings (migration 0007). Same conventions as central.db.models.

One row per (call, site): the file stays at the site; `agents` is ",1001,1002," so that one agent
is found with a LIKE on ",code," on every database.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Double, Index, PrimaryKeyConstraint, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from central.db.models import Base


class RecordingIndexEntry(Base):
    __tablename__ = "recordings"
    __table_args__ = (
        PrimaryKeyConstraint("call_id", "site_id"),
        Index("ix_recordings_started_at", "started_at"),
        Index("ix_recordings_caller_number_started_at", "caller_number", "started_at"),
    )

    call_id: Mapped[str] = mapped_column(String(64))
    site_id: Mapped[str] = mapped_column(String(32))
    agents: Mapped[str] = mapped_column(Text)
    caller_number: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[float] = mapped_column(Double)
    duration_s: Mapped[float] = mapped_column(Double)
    file: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    indexed_at: Mapped[float] = mapped_column(Double)
