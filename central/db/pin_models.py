"""Customers' PINs (migration 0010). Same conventions as central.db.models.

One row per customer with a PIN: its argon2id hash (never the digits) and the count of wrong
entries since the last right one; at `MAX_PIN_ATTEMPTS` the PIN is locked until the service desk
sets a new one.
"""

from __future__ import annotations

from sqlalchemy import Double, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from central.db.models import Base


class CustomerPin(Base):
    __tablename__ = "customer_pins"

    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    pin_hash: Mapped[str] = mapped_column(String(256))
    failed_attempts: Mapped[int] = mapped_column(Integer)
    # 0: not locked; else when the last allowed wrong entry came.
    locked_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)
