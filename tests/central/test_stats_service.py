"""Interval statistics read from central's database (SQLite and PostgreSQL): late and repeated events."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from central.records import EventKind, Outcome
from central.stats.intervals import INTERVAL_S, Level, StatsPolicy, interval_start
from central.stats.service import StatsService
from central.store import Store
from tests.central.factories import T0, answered_call, ev, overflowed_call

K = EventKind
POLICY = StatsPolicy()
START = interval_start(T0, INTERVAL_S, POLICY.utc_offset_s)


async def test_intervals_follow_the_records(store: Store, engine: AsyncEngine) -> None:
    stats = StatsService(engine, POLICY, clock=lambda: T0 + 100, cache_s=0.0)
    await store.ingest("gz", answered_call("c1", "gz"))
    overflow = overflowed_call("c2")
    await store.ingest("gz", [e for e in overflow if e.site_id == "gz"])
    await store.ingest("sz", [e for e in overflow if e.site_id == "sz"])
    # A transfer after the answer.
    transferred = [
        *answered_call("c3", "gz", start=1.0)[:6],
        ev(K.TRANSFERRED, 20.0, 7, call_id="c3", data={"to": "0102"}),
        ev(K.ENDED, 40.0, 8, call_id="c3", outcome=Outcome.ANSWERED),
    ]
    await store.ingest("gz", transferred)

    rows = await stats.intervals(START, START + INTERVAL_S)
    province = next(r.figures for r in rows if r.level is Level.PROVINCE)
    assert (province.offered, province.answered, province.transfers) == (3, 3, 1)
    gz = next(r.figures for r in rows if r.level is Level.ENTRY_SITE and r.key == "gz")
    assert gz.overflow_out == 1
    sz = next(r.figures for r in rows if r.level is Level.SERVED_SITE and r.key == "sz")
    assert (sz.answered, sz.overflow_in) == (1, 1)

    # A call whose events reach central late (an outbox drained after a partition): first only
    # its arrival and queueing, then the abandon. Its interval is corrected, not double counted.
    late = [
        ev(K.ARRIVED, 50.0, 1, call_id="c4", ani="13800000004", dnis="10000"),
        ev(K.QUEUED, 51.0, 2, call_id="c4", skill="general"),
    ]
    await store.ingest("gz", late)
    province = next(
        r.figures for r in await stats.intervals(START, START + INTERVAL_S, levels=[Level.PROVINCE])
    )
    assert (province.offered, province.in_progress, province.abandoned) == (4, 1, 0)

    ending = [
        ev(K.ABANDONED, 80.0, 3, call_id="c4", skill="general"),
        ev(K.ENDED, 80.0, 4, call_id="c4", outcome=Outcome.ABANDONED),
    ]
    await store.ingest("gz", ending)
    await store.ingest("gz", [*late, *ending])  # the whole batch sent again
    province = next(
        r.figures for r in await stats.intervals(START, START + INTERVAL_S, levels=[Level.PROVINCE])
    )
    assert (province.offered, province.in_progress, province.abandoned) == (4, 0, 1)
    assert province.abandon_rate == 0.25

    today, age = await stats.today()
    assert sorted(c.call_id for c in today) == ["c1", "c2", "c3", "c4"]
    assert age >= 0.0
