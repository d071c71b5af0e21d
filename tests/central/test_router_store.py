"""Routing decisions in the database (SQLite and PostgreSQL), the migration, the decision log."""

from __future__ import annotations

import asyncio
import contextlib

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from central.db.models import Base
from central.live_state import LiveState
from central.membership_view import MembershipView
from central.router import Router
from central.store import RecordedDecision, Store
from routing.global_router import CallToRoute, Candidate, Decision
from tests.central.province import province


def decision(target: str = "sz", reason: str = "溢出 overflow: waited 12.0s") -> Decision:
    return Decision(
        origin="gz",
        target=target,
        mode="overflow",
        reason=reason,
        skill_group="general",
        candidates=(
            Candidate("gz", True, 0.25, 0, 3, 20.0, 0, 4, False, "origin"),
            Candidate("sz", True, 0.5, 2, 0, -1.0, 3, 0, True, "chosen"),
        ),
    )


async def test_decisions_round_trip(store: Store) -> None:
    first = RecordedDecision("d1", "c1", 100.5, decision())
    later = RecordedDecision("d2", "c1", 101.0, decision("", "stays"))
    other = RecordedDecision("d3", "c2", 99.0, decision())
    pre = RecordedDecision("d4", "", 98.0, decision())
    await store.record_decisions([later, first, other, pre])
    # The same decision again (a retried batch) is not stored twice.
    await store.record_decisions([first])
    found = await store.decisions_of(["c1", "c2", "nope"])
    assert found == {"c1": [first, later], "c2": [other]}
    assert await store.decisions_by_id(["d4", "d9"]) == {"d4": pre}
    assert await store.decisions_of([]) == {}


def _diff(conn: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))


async def test_migrations_match_the_models(engine: AsyncEngine, database_url: str) -> None:
    """`alembic check` on both databases. The CockroachDB dialect reflects through CockroachDB's
    own catalog columns, so PostgreSQL is compared through the plain PostgreSQL dialect."""
    url = make_url(database_url)
    checked = engine
    if url.get_backend_name() == "cockroachdb":
        checked = create_async_engine(url.set(drivername="postgresql+asyncpg"))
    try:
        async with checked.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        if checked is not engine:
            await checked.dispose()


async def test_route_call_records_moves_and_first_answers_only(store: Store) -> None:
    config = province()
    view = MembershipView((s.id, s.name) for s in config.sites)
    live = LiveState(((s.id, s.name) for s in config.sites), view.sites, 2.0)
    router = Router(config.routing, live, store, config.sites, clock=lambda: 1000.0)
    task = asyncio.create_task(router.run())
    try:
        stay = CallToRoute(origin="gz", skill_group="general", waited_s=1.0)
        for _ in range(3):
            await router.route_call("c1", stay)
        await router.route_call("c2", stay)
        # Readable at once (pending), then stored.
        assert [len(v) for v in (await router.decisions_of(["c1", "c2"])).values()] == [1, 1]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # Cancelling the router wrote what was queued.
    stored = await store.decisions_of(["c1", "c2"])
    assert [len(stored["c1"]), len(stored["c2"])] == [1, 1]
    assert stored["c1"][0].decision.target == ""
