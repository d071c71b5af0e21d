"""The store on SQLite and on PostgreSQL (through the CockroachDB dialect)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from central.customers import Customer, demo_phone
from central.db.engine import create_engine
from central.db.migrate import current_revision, head_revision, upgrade
from central.records import CallEvent, CallState, EventKind, Outcome, fold, order
from central.store import DatabaseUnavailable, RecordedDecision, Store
from routing.global_router import Decision
from tests.central.factories import T0, answered_call, ev, overflowed_call
from tests.central.province import province
from tools.province.netutil import free_port
from vcc.errors import InvalidArgument


async def test_migrations_create_the_schema_once(database_url: str, engine: AsyncEngine) -> None:
    await upgrade(database_url)  # a second start changes nothing
    assert await current_revision(database_url) == head_revision()
    async with engine.connect() as conn:
        tables = set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
    assert {"sites", "skill_groups", "agents", "customers", "calls", "call_legs", "call_events"} <= tables


async def test_same_batch_twice_lands_once(store: Store) -> None:
    events = answered_call()
    first = await store.ingest("gz", events)
    second = await store.ingest("gz", events)
    assert (first.stored, first.duplicates) == (8, 0)
    assert (second.stored, second.duplicates) == (0, 8)
    record = await store.get_call("c1")
    assert record is not None
    assert record == dataclasses.replace(fold(events), legs=record.legs)
    assert record.event_count == 8
    assert await store.count_calls() == 1


async def test_overlapping_batches_land_once(store: Store) -> None:
    events = answered_call()
    a = await store.ingest("gz", events[:5])
    b = await store.ingest("gz", events[3:])
    assert (a.stored, a.duplicates, b.stored, b.duplicates) == (5, 0, 3, 2)
    record = await store.get_call("c1")
    assert record is not None
    assert (record.state, record.outcome, record.event_count) == (CallState.ENDED, Outcome.ANSWERED, 8)


async def test_duplicates_inside_one_batch_count_as_duplicates(store: Store) -> None:
    events = answered_call()
    result = await store.ingest("gz", events + events[:2])
    assert (result.stored, result.duplicates) == (8, 2)


async def test_a_call_from_two_sites_out_of_order_folds_right(store: Store) -> None:
    events = overflowed_call("c2")
    sz = [e for e in events if e.site_id == "sz"]
    gz = [e for e in events if e.site_id == "gz"]
    # The serving site's outbox reaches central first, the entry site's end comes first of gz's.
    await store.ingest("sz", list(reversed(sz)))
    partial = await store.get_call("c2")
    assert partial is not None
    assert (partial.entry_site_id, partial.arrived_at, partial.state) == ("sz", None, CallState.TALKING)
    await store.ingest("gz", gz[-1:])
    await store.ingest("gz", gz[:-1])
    record = await store.get_call("c2")
    assert record is not None
    assert record.entry_site_id == "gz"
    assert (record.served_site_id, record.agent_code) == ("sz", "0201")
    assert record.outcome is Outcome.ANSWERED
    assert record.wait_s == pytest.approx(5.0)
    assert record.talk_s == pytest.approx(60.0)
    assert list(record.events) == order(events)
    assert [(leg.site_id, leg.event_count, leg.agent_code) for leg in record.legs] == [
        ("gz", 4, ""),
        ("sz", 4, "0201"),
    ]


async def test_concurrent_ingests_of_the_same_call(store: Store) -> None:
    events = overflowed_call("c3")
    gz = [e for e in events if e.site_id == "gz"]
    sz = [e for e in events if e.site_id == "sz"]
    batches = [("gz", gz[:2]), ("sz", sz), ("gz", gz), ("sz", sz[1:]), ("gz", gz[2:]), ("sz", sz[:2])]
    results = await asyncio.gather(*(store.ingest(site, batch) for site, batch in batches))
    assert sum(r.stored for r in results) == len(events)
    assert sum(r.duplicates for r in results) == sum(len(b) for _, b in batches) - len(events)
    record = await store.get_call("c3")
    assert record is not None
    assert record == dataclasses.replace(fold(events), legs=record.legs)


async def test_concurrent_ingests_of_many_calls(store: Store) -> None:
    calls = [answered_call(f"k{i}", start=float(i)) for i in range(20)]
    halves = [(c[:5], c[4:]) for c in calls]
    await asyncio.gather(*(store.ingest("gz", part) for pair in halves for part in pair))
    assert await store.count_calls() == 20
    for i in (0, 7, 19):
        record = await store.get_call(f"k{i}")
        assert record is not None
        assert (record.event_count, record.outcome) == (8, Outcome.ANSWERED)


async def test_a_large_batch_is_stored_in_chunks(store: Store) -> None:
    events = [e for i in range(300) for e in answered_call(f"big{i:03d}", start=float(i))]
    assert len(events) == 2400
    result = await store.ingest("gz", events)
    assert (result.stored, result.duplicates) == (2400, 0)
    assert await store.count_calls() == 300
    again = await store.ingest("gz", events[1000:])
    assert (again.stored, again.duplicates) == (0, 1400)


async def test_event_data_round_trips(store: Store) -> None:
    e = ev(EventKind.DIGITS, 1.0, 1, data={"digits": "1#", "提示": "账单 / billing", "": "empty key"})
    await store.ingest("gz", [e])
    record = await store.get_call("c1")
    assert record is not None
    assert dict(record.events[0].data) == dict(e.data)
    assert record.events[0] == e


async def test_ingest_refuses_events_of_another_site(store: Store) -> None:
    with pytest.raises(ValueError, match="not from site"):
        await store.ingest("sz", answered_call())
    assert await store.count_calls() == 0


async def test_unknown_call(store: Store) -> None:
    assert await store.get_call("nope") is None


async def test_list_calls_pages_in_arrival_order(store: Store) -> None:
    for i in range(7):
        site = "gz" if i % 2 == 0 else "sz"
        events = answered_call(f"L{i}", site=site, start=float(10 - i))
        if i == 3:
            events = events[:4]  # still queued
        await store.ingest(site, events)
    expected = [f"L{i}" for i in reversed(range(7))]

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        records, token = await store.list_calls(page_size=3, page_token=token)
        seen += [r.call_id for r in records]
        pages += 1
        assert all(r.events == () for r in records)
        if not token:
            break
    assert seen == expected
    assert pages == 3

    gz, _ = await store.list_calls(entry_site_id="gz", page_size=100)
    assert [r.call_id for r in gz] == ["L6", "L4", "L2", "L0"]
    ended, _ = await store.list_calls(ended_only=True, page_size=100)
    assert "L3" not in [r.call_id for r in ended]
    assert len(ended) == 6
    with_events, _ = await store.list_calls(entry_site_id="sz", page_size=1, with_events=True)
    assert with_events[0].call_id == "L5"
    assert len(with_events[0].events) == 8


async def test_list_calls_with_exact_page_has_no_next_token(store: Store) -> None:
    for i in range(2):
        await store.ingest("gz", answered_call(f"E{i}", start=float(i)))
    records, token = await store.list_calls(page_size=2)
    assert [r.call_id for r in records] == ["E0", "E1"]
    assert token == ""


@pytest.mark.parametrize("token", ["garbage!", "bm90IGpzb24", "WzEsMiwzXQ", "WyJ4IiwieSJd", "W251bGwsIiJd"])
async def test_list_calls_refuses_bad_tokens(store: Store, token: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        await store.list_calls(page_token=token)
    assert info.value.error_id == "bad-page-token"


async def test_demo_customers_and_lookup(store: Store) -> None:
    await store.sync_province(province())
    await store.seed_demo_customers(5)
    await store.seed_demo_customers(5)  # at every start: the same customers, no duplicates
    c = await store.lookup_customer(demo_phone(4))
    assert c == Customer(
        customer_id="demo-0004",
        phone="13800000004",
        name="客户 0004 / Customer 0004",
        level="silver",
        city="Guangzhou",
        notes="demo customer",
        account="A000004",
        phones=("13800000004",),
        version=1,
    )
    levels = [(await store.lookup_customer(demo_phone(i))) for i in range(3)]
    assert [c.level for c in levels if c is not None] == ["gold", "silver", "normal"]
    assert await store.lookup_customer("13899999999") is None


async def test_upsert_customers_updates_by_id(store: Store) -> None:
    await store.upsert_customers([Customer("x1", "02012345", "Old name")])
    await store.upsert_customers([Customer("x1", "02012345", "New name", level="gold", city="Guangzhou")])
    c = await store.lookup_customer("02012345")
    assert c is not None
    assert (c.name, c.level, c.city) == ("New name", "gold", "Guangzhou")


async def test_sync_province_follows_the_config(store: Store, engine: AsyncEngine) -> None:
    config = province()
    await store.sync_province(config)
    await store.sync_province(config)
    agents = await store.agents()
    assert [(a["code"], a["site_id"], a["skills"]) for a in agents] == [
        ("0101", "gz", {"general": 5}),
        ("0102", "gz", {"billing": 9}),
        ("0201", "sz", {"billing": 4, "general": 3}),
    ]
    # An agent and a skill group leave the config.
    data = config.model_dump()
    data["sites"][0]["agents"] = data["sites"][0]["agents"][:1]
    data["sites"][1]["skill_groups"] = data["sites"][1]["skill_groups"][:1]
    data["sites"][1]["agents"][0]["skills"] = {"general": 3}
    await store.sync_province(type(config).model_validate(data))
    assert [a["code"] for a in await store.agents()] == ["0101", "0201"]
    async with engine.connect() as conn:
        groups = (
            await conn.execute(sa.text("select site_id, skill_group_id from skill_groups order by 1, 2"))
        ).all()
        sites = (await conn.execute(sa.text("select site_id, name from sites order by 1"))).all()
    assert [tuple(g) for g in groups] == [("gz", "billing"), ("gz", "general"), ("sz", "general")]
    assert [tuple(s) for s in sites] == [("gz", "Guangzhou"), ("sz", "Shenzhen")]


async def test_times_are_exact(store: Store) -> None:
    await store.ingest("gz", [ev(EventKind.ARRIVED, 0.123456, 1), ev(EventKind.ENDED, 1.5, 2)])
    record = await store.get_call("c1")
    assert record is not None
    assert record.arrived_at == T0 + 0.123456
    assert record.ended_at == T0 + 1.5


async def test_an_unreachable_database_is_reported_unavailable() -> None:
    engine = create_engine(f"cockroachdb+asyncpg://postgres@127.0.0.1:{free_port()}/central")
    try:
        with pytest.raises(DatabaseUnavailable) as info:
            await Store(engine).count_calls()
        assert info.value.error_id == "database-unavailable"
    finally:
        await engine.dispose()


# The leader keeps the events of the calls it ingested lately and refolds from them, reading
# nothing back: each test below gives the same call to a leader in pieces and checks its record
# against the fold of every event stored.


async def _record_matches_every_event(store: Store, call_id: str, events: list[CallEvent]) -> None:
    record = await store.get_call(call_id)
    assert record is not None
    assert record == dataclasses.replace(fold(events), legs=record.legs)


async def test_a_leader_folds_from_its_kept_events_as_from_the_database(engine: AsyncEngine) -> None:
    leader = Store(engine)
    await leader.take_over(1)
    events = overflowed_call("k1")
    gz = [e for e in events if e.site_id == "gz"]
    sz = [e for e in events if e.site_id == "sz"]
    batches = [("sz", sz[2:]), ("gz", gz[:2]), ("gz", gz[1:3]), ("sz", sz), ("gz", gz[2:] + gz[:1])]
    seen: dict[tuple[str, str, int], CallEvent] = {}
    for site, batch in batches:
        await leader.ingest(site, batch)
        seen.update((e.key, e) for e in batch)
        await _record_matches_every_event(leader, "k1", list(seen.values()))
    # Concurrent batches of one call: neither ingest's copy is kept, the next reads them back.
    again = overflowed_call("k2")
    halves = [
        ("gz", [e for e in again if e.site_id == "gz"]),
        ("sz", [e for e in again if e.site_id == "sz"]),
    ]
    await asyncio.gather(*(leader.ingest(site, batch[:2]) for site, batch in halves))
    await asyncio.gather(*(leader.ingest(site, batch[1:]) for site, batch in halves))
    await _record_matches_every_event(leader, "k2", again)


async def test_a_leader_back_after_another_led_reads_what_the_other_stored(engine: AsyncEngine) -> None:
    events = answered_call("k3")
    first, other = Store(engine), Store(engine)
    await first.take_over(1)
    await first.ingest("gz", events[:3])
    # Another replica leads for a while and stores the middle of the call.
    await other.take_over(2)
    await other.ingest("gz", events[3:6])
    await first.take_over(3)
    await first.ingest("gz", events[6:])
    await _record_matches_every_event(first, "k3", events)


async def test_a_kept_call_ingested_by_two_cities_at_once_is_folded_from_both(engine: AsyncEngine) -> None:
    # The leader holds a copy of the call's first events; then both cities' next batches arrive at
    # once. Whichever transaction commits last must have folded the other's events too.
    leader = Store(engine)
    await leader.take_over(1)
    events = overflowed_call("k4")
    gz = [e for e in events if e.site_id == "gz"]
    sz = [e for e in events if e.site_id == "sz"]
    await leader.ingest("gz", gz[:2])
    # The losing order, forced: gz's ingest takes its kept copy, then sz's whole ingest commits
    # before gz's transaction begins.
    transaction, sz_done, first = leader._transaction, asyncio.Event(), [True]

    async def gz_waits_for_sz(attempt: Any, **kw: Any) -> Any:
        if first.pop() if first else False:
            await sz_done.wait()
        return await transaction(attempt, **kw)

    async def sz_ingest() -> None:
        await asyncio.sleep(0)  # gz's ingest starts first
        await leader.ingest("sz", sz)
        sz_done.set()

    leader._transaction = gz_waits_for_sz  # type: ignore[method-assign]
    await asyncio.gather(leader.ingest("gz", gz[2:]), sz_ingest())
    leader._transaction = transaction  # type: ignore[method-assign]
    await _record_matches_every_event(leader, "k4", events)
    await leader.ingest("sz", sz[:1])  # a re-sent event changes nothing
    await _record_matches_every_event(leader, "k4", events)


class Statements:
    """The SQL a store sends: whether SQLAlchemy compiled it (or the driver got it as it is), and
    whether SQLAlchemy found it compiled already."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.seen: list[tuple[str, bool, Any]] = []
        self._engine = engine
        sa.event.listen(engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        compiled = context is not None and context.compiled is not None
        self.seen.append((" ".join(statement.split()), compiled, context.cache_hit if compiled else None))

    def close(self) -> None:
        sa.event.remove(self._engine.sync_engine, "before_cursor_execute", self._seen)


@pytest.mark.parametrize("compiled", ["", "0"])
async def test_the_ingests_rows_go_to_the_driver_as_they_are(
    engine: AsyncEngine, compiled: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VCC_INGEST_COMPILED", compiled)
    store = Store(engine)
    await store.take_over(1)
    await store.ingest("gz", answered_call("w1"))
    statements = Statements(engine)
    await store.ingest("gz", answered_call("w2") + answered_call("w3"))
    statements.close()
    inserts = [
        (by_sqlalchemy, hit) for sql, by_sqlalchemy, hit in statements.seen if sql.startswith("INSERT")
    ]
    assert len(inserts) == 3  # the events, the records, their legs: one statement each
    # Switched off (the way before), SQLAlchemy binds every row and, finding no cache key for the
    # ON CONFLICT statements, compiles each again.
    assert set(inserts) == ({(False, None)} if compiled == "" else {(True, engine.dialect.NO_CACHE_KEY)})
    for call_id in ("w2", "w3"):
        record = await store.get_call(call_id)
        assert record is not None
        assert record == dataclasses.replace(fold(answered_call(call_id)), legs=record.legs)


async def test_the_stores_on_conflict_statements_are_compiled_once(engine: AsyncEngine) -> None:
    store = Store(engine)
    decisions = [
        RecordedDecision(f"d{i}", "c1", T0 + i, Decision("gz", "", "overflow", "stay", "general", ()))
        for i in range(2)
    ]
    await store.record_decisions(decisions[:1])
    statements = Statements(engine)
    await store.record_decisions(decisions[1:])
    statements.close()
    inserts = [hit for sql, _, hit in statements.seen if sql.startswith("INSERT")]
    assert inserts == [engine.dialect.CACHE_HIT]
    assert set(await store.decisions_by_id(["d0", "d1"])) == {"d0", "d1"}


async def test_a_new_calls_events_are_not_read_back(engine: AsyncEngine) -> None:
    leader = Store(engine)
    await leader.take_over(1)
    statements = Statements(engine)
    events = overflowed_call("n1")
    gz = [e for e in events if e.site_id == "gz"]
    sz = [e for e in events if e.site_id == "sz"]
    await leader.ingest("gz", gz[:2])
    reads = [sql for sql, _, _ in statements.seen if sql.startswith("SELECT") and "FROM call_events" in sql]
    assert reads == []
    await _record_matches_every_event(leader, "n1", gz[:2])
    # Recorded by another replica meanwhile (not known here): read back, not taken as new.
    other = Store(engine)
    await other.ingest("sz", sz[:2])
    await leader.take_over(2)
    statements.seen.clear()
    await leader.ingest("sz", sz[2:])
    reads = [sql for sql, _, _ in statements.seen if sql.startswith("SELECT") and "FROM call_events" in sql]
    statements.close()
    assert len(reads) == 1
    await leader.ingest("gz", gz[2:])
    await _record_matches_every_event(leader, "n1", events)


async def test_switched_back_every_batch_reads_its_calls_events(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # VCC_INGEST_JOURNEYS=0 (a benchmark's "before"): no copies, every call read back, same records.
    monkeypatch.setenv("VCC_INGEST_JOURNEYS", "0")
    leader = Store(engine)
    await leader.take_over(1)
    events = answered_call("s1")
    statements = Statements(engine)
    first = await leader.ingest("gz", events[:4])
    again = await leader.ingest("gz", events)
    statements.close()
    reads = [sql for sql, _, _ in statements.seen if sql.startswith("SELECT") and "FROM call_events" in sql]
    assert len(reads) == 2
    assert (first.stored, again.stored, again.duplicates) == (4, 4, 4)
    await _record_matches_every_event(leader, "s1", events)
