"""Customers' PINs at central: set by the service desk, checked by the flows' `verify_pin`.

A PIN is kept only as a salted argon2id hash (vcc.passwords, as agents' passwords). Each check
first counts an attempt, in the same transaction that reads the hash, and only then compares:
concurrent guesses at any replica cannot get more than MAX_PIN_ATTEMPTS wrong entries between two
right ones. At the limit the PIN is locked until the service desk sets a new one. Every check and
every change is in central's audit log by outcome; the digits are never logged, audited or kept.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from central.audit import AuditEntry, AuditLog
from central.db.models import Base
from central.db.pin_models import CustomerPin
from central.store import Store, _is_transient
from vcc.errors import InvalidArgument, NotFound
from vcc.passwords import decoy_hash, hash_password, password_matches

log = logging.getLogger(__name__)

# Wrong entries in a row before the PIN locks (a bank card's usual three).
MAX_PIN_ATTEMPTS = 3
PIN_PATTERN = re.compile(r"[0-9]{4,12}")
# The PIN the demo customers are seeded with (tests and the demo; the service desk sets real ones).
DEMO_PIN = "246810"

_PINS = Base.metadata.tables[CustomerPin.__tablename__]
_CUSTOMERS = Base.metadata.tables["customers"]


class PinCheck(Enum):
    VERIFIED = "true"
    NOT_VERIFIED = "false"
    LOCKED = "locked"


@dataclass(frozen=True)
class PinState:
    customer_id: str
    failed_attempts: int
    locked: bool


@functools.cache
def demo_pin_hash() -> str:
    """One hash for all demo customers: hashing thousands at seeding would take minutes."""
    return hash_password(DEMO_PIN)


def check_pin_format(pin: str) -> None:
    if not PIN_PATTERN.fullmatch(pin):
        # The reason never echoes the value.
        raise InvalidArgument("bad-pin", "pin: 4 to 12 digits")


class CustomerPins:
    def __init__(
        self,
        engine: AsyncEngine,
        store: Store,
        audit: AuditLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._store = store
        self._audit = audit
        self._clock = clock
        self._insert = sqlite.insert if engine.dialect.name == "sqlite" else postgresql.insert

    async def customer_of(self, card: str) -> str | None:
        """The customer a card names: their account number, or one of their phone numbers."""
        async with self._engine.connect() as conn:
            found = (
                await conn.execute(sa.select(_CUSTOMERS.c.customer_id).where(_CUSTOMERS.c.account == card))
            ).scalar()
        if found is not None:
            return str(found)
        customer = await self._store.lookup_customer(card)
        return customer.customer_id if customer is not None else None

    async def set_pin(self, customer_id: str, pin: str, *, actor: str) -> None:
        """A new PIN (the service desk): its hash replaces the old one, and any lockout ends."""
        check_pin_format(pin)
        async with self._engine.connect() as conn:
            known = (
                await conn.execute(
                    sa.select(_CUSTOMERS.c.customer_id).where(_CUSTOMERS.c.customer_id == customer_id)
                )
            ).scalar()
        if known is None:
            raise NotFound("customer-not-found", f"no customer {customer_id!r}")
        await self.set_hashes({customer_id: hash_password(pin)})
        await self._record(actor, "pin-set", customer_id, "ok")

    async def set_hashes(self, hashes: dict[str, str]) -> None:
        """Store ready hashes (set_pin, the demo seed), each with no wrong entries and unlocked."""
        if not hashes:
            return
        now = self._clock()
        rows = [
            {"customer_id": c, "pin_hash": h, "failed_attempts": 0, "locked_at": 0.0, "updated_at": now}
            for c, h in hashes.items()
        ]
        stmt = self._insert(_PINS)
        stmt = stmt.on_conflict_do_update(
            index_elements=["customer_id"],
            set_={k: stmt.excluded[k] for k in ("pin_hash", "failed_attempts", "locked_at", "updated_at")},
        )
        async for attempt in _retrying():
            with attempt:
                async with self._engine.begin() as conn:
                    await conn.execute(stmt, rows)

    async def seed_demo(self, customer_ids: list[str]) -> None:
        """The demo customers without a PIN get DEMO_PIN (a PIN set since is kept)."""
        async with self._engine.connect() as conn:
            have = set((await conn.execute(sa.select(_PINS.c.customer_id))).scalars().all())
        missing = [c for c in customer_ids if c not in have]
        if missing:
            digest = demo_pin_hash()
            await self.set_hashes(dict.fromkeys(missing, digest))

    async def state(self, customer_id: str) -> PinState | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(_PINS).where(_PINS.c.customer_id == customer_id))).first()
        if row is None:
            return None
        return PinState(customer_id, int(row.failed_attempts), bool(row.locked_at))

    async def verify(self, card: str, pin: str, *, actor: str) -> PinCheck:
        """Verified, not verified (a wrong PIN, an unknown card, no PIN set) or locked."""
        customer_id = await self.customer_of(card) if card else None
        stored = await self._take_attempt(customer_id) if customer_id is not None else None
        if stored is None:
            # No PIN to check: the same slow hash as a real check (no timing tell), then no.
            await password_matches(decoy_hash(), pin)
            await self._record(actor, "pin-check", customer_id or "unknown", "not-verified")
            return PinCheck.NOT_VERIFIED
        pin_hash, attempts = stored
        assert customer_id is not None
        if attempts > MAX_PIN_ATTEMPTS:
            await self._lock(customer_id)  # a concurrent guess may have passed the limit first
            await self._record(actor, "pin-check", customer_id, "locked")
            return PinCheck.LOCKED
        if await password_matches(pin_hash, pin):
            await self._reset(customer_id)
            await self._record(actor, "pin-check", customer_id, "verified")
            return PinCheck.VERIFIED
        if attempts == MAX_PIN_ATTEMPTS:
            await self._lock(customer_id)
            await self._record(actor, "pin-locked", customer_id, "locked", attempts=attempts)
            log.warning("customer %s: PIN locked after %d wrong entries", customer_id, attempts)
        await self._record(actor, "pin-check", customer_id, "not-verified", attempts=attempts)
        return PinCheck.NOT_VERIFIED

    async def _take_attempt(self, customer_id: str) -> tuple[str, int] | None:
        """Count one attempt before comparing: (the hash, this attempt's number), or None (no PIN).
        A locked PIN answers a number above MAX_PIN_ATTEMPTS (and is not counted further)."""
        async for attempt in _retrying():
            with attempt:
                async with self._engine.begin() as conn:
                    row = (
                        await conn.execute(
                            sa.update(_PINS)
                            .where(_PINS.c.customer_id == customer_id, _PINS.c.locked_at == 0.0)
                            .values(failed_attempts=_PINS.c.failed_attempts + 1)
                            .returning(_PINS.c.pin_hash, _PINS.c.failed_attempts)
                        )
                    ).first()
                    if row is not None:
                        return str(row.pin_hash), int(row.failed_attempts)
                    locked = (
                        await conn.execute(
                            sa.select(_PINS.c.pin_hash).where(_PINS.c.customer_id == customer_id)
                        )
                    ).scalar()
                    return None if locked is None else (str(locked), MAX_PIN_ATTEMPTS + 1)
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _reset(self, customer_id: str) -> None:
        await self._update(customer_id, failed_attempts=0)

    async def _lock(self, customer_id: str) -> None:
        await self._update(customer_id, _PINS.c.locked_at == 0.0, locked_at=self._clock())

    async def _update(self, customer_id: str, *where: sa.ColumnElement[bool], **values: object) -> None:
        stmt = sa.update(_PINS).where(_PINS.c.customer_id == customer_id, *where).values(**values)
        async for attempt in _retrying():
            with attempt:
                async with self._engine.begin() as conn:
                    await conn.execute(stmt)

    async def _record(
        self, actor: str, action: str, customer_id: str, outcome: str, *, attempts: int = 0
    ) -> None:
        if self._audit is None:
            return
        detail = {"attempt": str(attempts)} if attempts else {}
        await self._audit.record(
            AuditEntry(
                at=self._clock(),
                actor=actor,
                action=action,
                target=f"customer {customer_id}",
                outcome=outcome,
                detail=detail,
            )
        )


def _retrying() -> AsyncRetrying:
    return AsyncRetrying(
        stop=stop_after_attempt(5),
        wait=wait_random_exponential(multiplier=0.01, max=0.5),
        retry=retry_if_exception(_is_transient),
        reraise=True,
    )
