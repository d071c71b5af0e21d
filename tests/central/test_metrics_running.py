"""Central's record figures on /metrics are running counts: equal to a fresh count of the records.

Through the real store (SQLite and PostgreSQL): batches ingested in pieces, re-sent, out of order;
a new leader seeded from the database; and the comparison itself shown to catch a miscount.
"""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import cast

from prometheus_client.core import Metric
from sqlalchemy.ext.asyncio import AsyncEngine

from central.leadership import Leadership
from central.live_state import LiveState
from central.metrics import CentralCollector
from central.records import CallEvent, EventKind, Outcome, fold
from central.stats.intervals import (
    DAY_S,
    CallFacts,
    Figures,
    StatsPolicy,
    call_figures,
    interval_start,
    unique_calls,
)
from central.stats.running import RunningFigures
from central.stats.service import StatsService
from central.store import Store
from tests.central.factories import T0, answered_call, ev, overflowed_call

K = EventKind
POLICY = StatsPolicy()
NOW = T0 + 3600.0
SITES = ["gz", "sz"]
LEADER = cast(Leadership, SimpleNamespace(is_leader=True, epoch=1))
FOLLOWER = cast(Leadership, SimpleNamespace(is_leader=False, epoch=1))


def collector_of(store: Store, clock: list[float], leader: bool = True) -> CentralCollector:
    return CentralCollector(
        replica_id="1",
        clock=lambda: clock[0],
        leadership=lambda: LEADER if leader else FOLLOWER,
        live_state=LiveState([(s, s) for s in SITES], lambda: [], 5.0),
        store=store,
        site_ids=SITES,
        policy=POLICY,
    )


def a_call(i: int, rng: random.Random) -> list[CallEvent]:
    """One call of a varied day: answered soon or late, abandoned short or long, blocked, waiting."""
    call_id, site, start = f"c{i:04d}", rng.choice(SITES), rng.uniform(0.0, 3000.0)
    shape = rng.randrange(7)
    if shape == 0:
        return answered_call(call_id, site, start)
    if shape == 1:
        return [
            *answered_call(call_id, site, start)[:4],
            ev(K.ANSWERED, start + 45.0, 5, call_id=call_id, site=site, agent="0101", skill="general"),
            ev(K.ENDED, start + 90.0, 6, call_id=call_id, site=site, outcome=Outcome.ANSWERED),
        ]
    if shape in (2, 3):
        wait = 2.0 if shape == 2 else 30.0
        return [
            ev(K.ARRIVED, start, 1, call_id=call_id, site=site, ani="13800000009", dnis="10000"),
            ev(K.QUEUED, start + 0.5, 2, call_id=call_id, site=site, skill="general"),
            ev(K.ABANDONED, start + wait, 3, call_id=call_id, site=site, skill="general"),
            ev(K.ENDED, start + wait, 4, call_id=call_id, site=site, outcome=Outcome.ABANDONED),
        ]
    if shape == 4:
        return [ev(K.BLOCKED, start, 1, call_id=call_id, site=site, outcome=Outcome.BLOCKED)]
    if shape == 5:
        return [
            ev(K.ARRIVED, start, 1, call_id=call_id, site=site, ani="13800000009", dnis="10000"),
            ev(K.QUEUED, start + 0.5, 2, call_id=call_id, site=site, skill="general"),
        ]
    return overflowed_call(call_id)


async def fresh_count(engine: AsyncEngine, now: float) -> dict[str, Figures]:
    """Today's figures per entry site counted again from the database (the old per-scrape read)."""
    day = interval_start(now, DAY_S, POLICY.utc_offset_s)
    calls = await StatsService(engine, POLICY, cache_s=0.0).calls_between(day, day + DAY_S)
    by_site: dict[str, Figures] = {s: Figures() for s in SITES}
    for c in unique_calls(calls):
        by_site.setdefault(c.entry_site_id, Figures()).add(call_figures(c, POLICY))
    return by_site


def exposed(by_site: dict[str, Figures]) -> dict[str, tuple[object, ...]]:
    """What /metrics shows of the figures: calls by outcome and the service level."""
    return {
        s: (
            f.offered,
            f.answered,
            f.abandoned + f.short_abandoned,
            f.blocked,
            f.failed,
            f.in_progress,
            f.service_level,
        )
        for s, f in by_site.items()
    }


def scraped(collector: CentralCollector) -> dict[tuple[str, str], float]:
    metrics: list[Metric] = list(collector.collect())
    return {
        (s.labels["site"], s.labels["outcome"]): s.value
        for m in metrics
        if m.name == "vcc_central_calls_today"
        for s in m.samples
    }


async def ingest_day(store: Store, n: int) -> list[list[CallEvent]]:
    """N calls, each site's events in two batches, in shuffled order across calls."""
    rng = random.Random(16)
    batches: list[tuple[str, list[CallEvent]]] = []
    calls = [a_call(i, rng) for i in range(n)]
    for events in calls:
        for site in SITES:
            mine = [e for e in events if e.site_id == site]
            if mine:
                cut = rng.randrange(len(mine) + 1)
                batches += [(site, mine[:cut]), (site, mine[cut:])]
    rng.shuffle(batches)
    for site, batch in batches:
        if batch:
            await store.ingest(site, batch)
    return calls


async def test_running_figures_equal_the_records_and_survive_duplicates_and_a_new_leader(
    store: Store, engine: AsyncEngine
) -> None:
    clock = [NOW]
    leader = collector_of(store, clock)
    calls = await ingest_day(store, 120)

    # (a) After ingest, the running figures are what the records say, scrape included.
    fresh = await fresh_count(engine, NOW)
    assert exposed(leader.records.by_site) == exposed(fresh)
    assert sum(f.offered for f in fresh.values()) == 120
    assert {k for k, f in fresh.items() if f.answered and f.abandoned and f.in_progress} == set(SITES)
    assert scraped(leader)[("gz", "offered")] == fresh["gz"].offered

    # (b) A duplicate event, a whole batch again, and a stale record told late count nothing more.
    before = exposed(leader.records.by_site)
    for events in calls[:30]:
        for site in SITES:
            mine = [e for e in events if e.site_id == site]
            if mine:
                assert (await store.ingest(site, [*mine, mine[0]])).stored == 0
    stale = fold(calls[0][:1])
    leader.ingested([stale])
    assert exposed(leader.records.by_site) == before == exposed(await fresh_count(engine, NOW))

    # (c) A new leader (a fresh replica's store on the same database) seeded from the records.
    successor = collector_of(Store(engine), clock)
    assert exposed(successor.records.by_site) != before  # nothing counted before seeding
    await successor.seed(StatsService(engine, POLICY))
    assert exposed(successor.records.by_site) == before

    # The comparison catches a miscount: a call told to the figures that the records lack.
    ghost = fold(answered_call("ghost", "gz", 10.0))
    successor.ingested([ghost])
    assert exposed(successor.records.by_site) != exposed(await fresh_count(engine, NOW))


async def test_figures_are_the_leaders_and_todays_only(store: Store) -> None:
    clock = [NOW]
    leader = collector_of(store, clock)
    follower = collector_of(store, clock, leader=False)
    await store.ingest("gz", answered_call("c1", "gz"))
    assert leader.records.by_site["gz"].answered == 1
    assert follower.records.by_site == {}
    # A deposed leader forgets them (another replica ingests now); a new day starts from zero.
    follower.deposed()
    assert follower.running.today(NOW) == {}
    clock[0] = NOW + DAY_S
    assert leader.records.by_site["gz"].offered == 0


def test_days_gone_are_dropped_even_unscraped() -> None:
    def call(call_id: str, at: float) -> CallFacts:
        answered = Outcome.ANSWERED
        return CallFacts(call_id, "gz", "gz", "g", "0101", answered, True, at, 3.0, 60.0, True, False, 8)

    running = RunningFigures(POLICY)
    running.update([call("d0", NOW), call("d2", NOW + 2 * DAY_S), call("late", NOW)])
    # The first day went when the third began, and a late record of it is not kept either.
    assert running.today(NOW) == {}
    assert running.today(NOW + 2 * DAY_S)["gz"].answered == 1
