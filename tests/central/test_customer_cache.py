"""The leader's customers by number (central.customer_cache): never stale after a write returned."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from central.customer_cache import CUSTOMER_CACHE_ENV, CustomerCache
from central.customers import Customer
from central.servicedesk.customer_store import CustomerStore
from central.store import Store

ALICE = Customer("x1", "02012345", "Alice")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def leading(clock: Clock | None = None, kept: int = 100) -> CustomerCache:
    cache = CustomerCache(kept=kept, ttl_s=5.0, clock=clock or Clock())
    cache.lead(True)
    return cache


def test_a_look_up_is_kept_found_or_not() -> None:
    cache = leading()
    cache.keep(cache.ticket(), "02012345", ALICE)
    cache.keep(cache.ticket(), "02099999", None)
    assert cache.get("02012345") == (True, ALICE)
    assert cache.get("02099999") == (True, None)
    assert cache.get("02000000") == (False, None)
    assert (cache.hits, cache.misses) == (2, 1)


def test_what_was_read_before_a_write_is_not_kept_after_it() -> None:
    cache = leading()
    ticket = cache.ticket()
    with cache.writing():
        pass
    cache.keep(ticket, "02012345", ALICE)
    assert cache.get("02012345") == (False, None)


def test_what_was_read_while_a_write_ran_is_not_kept() -> None:
    cache = leading()
    with cache.writing():
        assert cache.ticket() is None
        cache.keep(cache.ticket(), "02012345", ALICE)
        ticket = cache._generation  # even the generation of the moment is refused while it runs
        cache.keep(ticket, "02012345", ALICE)
    assert cache.get("02012345") == (False, None)


def test_a_write_forgets_everything_even_when_it_fails() -> None:
    cache = leading()
    cache.keep(cache.ticket(), "02012345", ALICE)
    with pytest.raises(RuntimeError), cache.writing():
        raise RuntimeError("the write failed, perhaps after its commit")
    assert cache.get("02012345") == (False, None)


def test_an_entry_lapses_after_its_time() -> None:
    clock = Clock()
    cache = leading(clock)
    cache.keep(cache.ticket(), "02012345", ALICE)
    clock.now += 4.9
    assert cache.get("02012345") == (True, ALICE)
    clock.now += 0.2
    assert cache.get("02012345") == (False, None)


def test_only_a_leader_keeps_and_a_new_term_starts_empty() -> None:
    cache = CustomerCache()
    cache.keep(cache.ticket(), "02012345", ALICE)
    assert cache.get("02012345") == (False, None)
    cache.lead(True)
    cache.keep(cache.ticket(), "02012345", ALICE)
    cache.lead(False)
    assert cache.get("02012345") == (False, None)
    cache.lead(True)
    assert cache.get("02012345") == (False, None)


def test_the_least_recently_used_number_goes_first() -> None:
    cache = leading(kept=2)
    for phone in ("1", "2"):
        cache.keep(cache.ticket(), phone, None)
    assert cache.get("1") == (True, None)
    cache.keep(cache.ticket(), "3", None)
    assert [cache.get(p)[0] for p in ("1", "2", "3")] == [True, False, True]


# -- at the store, on both databases ---------------------------------------------------------------


async def test_the_leader_answers_from_memory_until_a_desk_edit_returns(store: Store) -> None:
    await store.take_over(1)
    desk = CustomerStore(store)
    created = await desk.create(Customer("", "02012345", "Alice"))
    assert (await store.lookup_customer("02012345")) == created
    assert (await store.lookup_customer("02012345")) == created
    assert store.customers.hits == 1
    edited = await desk.update(Customer(created.customer_id, "02012345", "Alice Wong"), created.version)
    # Right after the edit returned: the new record, not the one remembered.
    assert (await store.lookup_customer("02012345")) == edited
    # A number nobody has is remembered as such, until a customer is given it.
    assert await store.lookup_customer("02055555") is None
    assert await store.lookup_customer("02055555") is None
    bob = await desk.create(Customer("", "02055555", "Bob"))
    assert (await store.lookup_customer("02055555")) == bob
    # A number moved to another customer's record is found on that one.
    await desk.update(Customer(bob.customer_id, "02066666", "Bob"), bob.version)
    assert await store.lookup_customer("02055555") is None


async def test_the_seed_is_a_write_too(store: Store) -> None:
    await store.take_over(1)
    await store.upsert_customers([ALICE])
    assert (await store.lookup_customer("02012345") or ALICE).name == "Alice"
    await store.upsert_customers([Customer("x1", "02012345", "Alice Wong")])
    assert (await store.lookup_customer("02012345") or ALICE).name == "Alice Wong"


async def test_a_follower_and_a_deposed_leader_read_the_database(engine: AsyncEngine) -> None:
    follower, leader = Store(engine), Store(engine)
    await follower.upsert_customers([ALICE])
    for _ in range(2):
        assert await follower.lookup_customer("02012345") is not None
    assert follower.customers.hits == 0
    await leader.take_over(1)
    await leader.lookup_customer("02012345")
    leader.deposed()
    # Another replica (the new leader) edits: the deposed one must not answer from memory.
    await follower.upsert_customers([Customer("x1", "02012345", "Alice Wong")])
    assert (await leader.lookup_customer("02012345") or ALICE).name == "Alice Wong"
    assert leader.customers.hits == 0


async def test_the_switch_turns_the_memory_off(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CUSTOMER_CACHE_ENV, "0")
    store = Store(engine)
    await store.take_over(1)
    await store.upsert_customers([ALICE])
    for _ in range(2):
        assert await store.lookup_customer("02012345") is not None
    assert store.customers.hits == 0


async def test_a_look_up_is_one_statement_without_begin_on_sqlite(engine: AsyncEngine) -> None:
    store = Store(engine)
    await store.upsert_customers([ALICE])
    sent: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement.split(maxsplit=1)[0].upper())

    sa.event.listen(engine.sync_engine, "before_cursor_execute", seen)
    try:
        assert await store.lookup_customer("02012345") == replace(ALICE, phones=("02012345",))
        lookup = list(sent)
        await store.upsert_customers([Customer("x1", "02012345", "Alice Wong")])
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", seen)
    assert lookup == ["SELECT"]
    if engine.dialect.name == "sqlite":
        # A write still takes the lock up front.
        assert sent[len(lookup)] == "BEGIN"
    assert (await store.lookup_customer("02012345") or ALICE).name == "Alice Wong"
