"""Customers' PINs at central (the flows' verify_pin): a right PIN verified, a wrong one not, the
lockout after MAX_PIN_ATTEMPTS wrong entries (also for guesses sent at once), the service desk's
new PIN ending it, every check audited, and the digits nowhere: not in the log, the audit or the
database."""

from __future__ import annotations

import asyncio
import logging

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from central.audit import AuditLog
from central.customer_pins import DEMO_PIN, MAX_PIN_ATTEMPTS, CustomerPins, PinCheck
from central.store import Store
from vcc.errors import InvalidArgument, NotFound

SITE = "site/gz"
WRONG = "975318"


@pytest.fixture
async def pins(engine: AsyncEngine, store: Store) -> CustomerPins:
    await store.seed_demo_customers(2, ["广州"])
    found = CustomerPins(engine, store, AuditLog(engine))
    await found.seed_demo(["demo-0000", "demo-0001"])
    return found


async def test_the_right_pin_is_verified_and_a_wrong_one_is_not(pins: CustomerPins) -> None:
    # The card: the customer's account number, or one of their phones.
    assert await pins.verify("A000000", DEMO_PIN, actor=SITE) is PinCheck.VERIFIED
    assert await pins.verify("13800000000", DEMO_PIN, actor=SITE) is PinCheck.VERIFIED
    assert await pins.verify("13800000000", WRONG, actor=SITE) is PinCheck.NOT_VERIFIED
    # Nobody's card, or the right digits for someone else's: no.
    assert await pins.verify("13999999999", DEMO_PIN, actor=SITE) is PinCheck.NOT_VERIFIED
    assert await pins.verify("", DEMO_PIN, actor=SITE) is PinCheck.NOT_VERIFIED
    # A right entry clears the wrong ones before it.
    assert await pins.verify("A000000", DEMO_PIN, actor=SITE) is PinCheck.VERIFIED
    state = await pins.state("demo-0000")
    assert state is not None and state.failed_attempts == 0 and not state.locked


async def test_wrong_entries_lock_the_pin_until_the_desk_sets_a_new_one(
    pins: CustomerPins, engine: AsyncEngine
) -> None:
    for _ in range(MAX_PIN_ATTEMPTS):
        assert await pins.verify("A000001", WRONG, actor=SITE) is PinCheck.NOT_VERIFIED
    # Locked: even the right PIN is not checked any more.
    assert await pins.verify("A000001", DEMO_PIN, actor=SITE) is PinCheck.LOCKED
    state = await pins.state("demo-0001")
    assert state is not None and state.locked
    # The other customer is not touched.
    assert await pins.verify("A000000", DEMO_PIN, actor=SITE) is PinCheck.VERIFIED
    await pins.set_pin("demo-0001", "4321", actor="operator/desk")
    assert await pins.verify("A000001", DEMO_PIN, actor=SITE) is PinCheck.NOT_VERIFIED
    assert await pins.verify("A000001", "4321", actor=SITE) is PinCheck.VERIFIED
    entries = await AuditLog(engine).list(limit=100)
    mine = [(e.actor, e.action, e.target, e.outcome) for e in reversed(entries) if e.action.startswith("pin")]
    assert mine[: MAX_PIN_ATTEMPTS + 2] == [
        *[(SITE, "pin-check", "customer demo-0001", "not-verified")] * (MAX_PIN_ATTEMPTS - 1),
        (SITE, "pin-locked", "customer demo-0001", "locked"),
        (SITE, "pin-check", "customer demo-0001", "not-verified"),
        (SITE, "pin-check", "customer demo-0001", "locked"),
    ]
    assert ("operator/desk", "pin-set", "customer demo-0001", "ok") in mine


async def test_guesses_sent_at_once_get_no_more_than_the_limit(pins: CustomerPins) -> None:
    guesses = [f"{n:06d}" for n in range(MAX_PIN_ATTEMPTS * 3)]
    answers = await asyncio.gather(*(pins.verify("A000000", g, actor=SITE) for g in guesses))
    assert answers.count(PinCheck.NOT_VERIFIED) == MAX_PIN_ATTEMPTS
    assert answers.count(PinCheck.LOCKED) == len(guesses) - MAX_PIN_ATTEMPTS
    assert await pins.verify("A000000", DEMO_PIN, actor=SITE) is PinCheck.LOCKED


async def test_the_digits_are_in_no_log_audit_or_table(
    pins: CustomerPins, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await pins.set_pin("demo-0000", "8642097", actor="operator/desk")
    for pin in ("8642097", "1357913", "1357913", "1357913", "1357913"):
        await pins.verify("A000000", pin, actor=SITE)
    with pytest.raises(InvalidArgument) as bad:
        await pins.set_pin("demo-0000", "12ab", actor="operator/desk")
    assert "12ab" not in str(bad.value)
    with pytest.raises(NotFound):
        await pins.set_pin("demo-9999", "1234", actor="operator/desk")
    async with engine.connect() as conn:
        tables = [
            repr((await conn.execute(sa.text(f"SELECT * FROM {t}"))).all())
            for t in ("customer_pins", "audit_log", "customers")
        ]
    audit = repr(await AuditLog(engine).list(limit=100))
    assert "pin-locked" in audit
    for digits in ("8642097", "1357913", DEMO_PIN):
        assert digits not in caplog.text
        assert digits not in audit
        assert all(digits not in t for t in tables)
    assert "$argon2id$" in tables[0]
