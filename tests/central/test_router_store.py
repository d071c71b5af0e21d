"""Routing decisions in the database (SQLite and PostgreSQL), the migration, the decision log."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from central.db.engine import SQLITE_BUSY_TIMEOUT_S, create_engine
from central.db.migrate import upgrade
from central.db.models import Base
from central.live_state import LiveState
from central.membership_view import MembershipView
from central.router import Router
from central.store import RecordedDecision, Store
from routing.global_router import CallToRoute, Candidate, Decision
from tests.central.province import province
from tests.helpers import eventually


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


@contextlib.contextmanager
def write_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Another process's writer on the same SQLite file: holds the write lock until released."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield other
    finally:
        other.close()


async def sqlite_router(path: Path, **engine_options: float) -> tuple[Router, Store, AsyncEngine]:
    url = f"sqlite+aiosqlite:///{path}"
    await upgrade(url)
    engine = create_engine(url, **engine_options)
    store = Store(engine)
    config = province()
    view = MembershipView((s.id, s.name) for s in config.sites)
    live = LiveState(((s.id, s.name) for s in config.sites), view.sites, 2.0)
    return Router(config.routing, live, store, config.sites, clock=lambda: 1000.0), store, engine


async def test_sqlite_engine_runs_wal_with_a_busy_timeout(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'central.db'}"
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one() == "wal"
            busy_ms = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar_one()
            assert busy_ms == SQLITE_BUSY_TIMEOUT_S * 1000
    finally:
        await engine.dispose()


async def test_decisions_survive_a_write_refused_by_a_locked_database(tmp_path: Path) -> None:
    """The reported failure: "cannot record 2 routing decisions: database is locked", dropped.
    Here the lock outlasts the busy timeout and the store's retries: the decisions are kept,
    readable, and land on the next flush once the lock is gone."""
    path = tmp_path / "central.db"
    router, store, engine = await sqlite_router(path, sqlite_busy_timeout_s=0.05)
    task = asyncio.create_task(router.run())
    try:
        stay = CallToRoute(origin="gz", skill_group="general", waited_s=1.0)
        with write_lock(path):
            await router.route_call("c1", stay)
            await router.route_call("c2", stay)
            await eventually(
                lambda: _true(router.decisions.failed_writes >= 1), timeout_s=30, what="a write refused"
            )
            assert await store.decisions_of(["c1", "c2"]) == {}  # WAL: readable under the lock
            assert sorted((await router.decisions_of(["c1", "c2"])).keys()) == ["c1", "c2"]
        await asyncio.wait_for(router.decisions.flush(), 30)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    stored = await store.decisions_of(["c1", "c2"])
    assert [len(stored.get("c1", [])), len(stored.get("c2", []))] == [1, 1]
    assert router.decisions.overflowed == 0
    await engine.dispose()


async def test_stopping_the_router_mid_write_loses_no_decision(tmp_path: Path) -> None:
    """The write in progress when central stops is finished, not cut off (a transaction
    cancelled inside aiosqlite can keep the lock from the final drain)."""
    path = tmp_path / "central.db"
    router, store, engine = await sqlite_router(path)
    task = asyncio.create_task(router.run())
    stay = CallToRoute(origin="gz", skill_group="general", waited_s=1.0)
    with write_lock(path):
        await router.route_call("c1", stay)
        await router.route_call("c2", stay)
        await eventually(lambda: _true(router.decisions.writing), what="the write waiting for the lock")
        task.cancel()
        await asyncio.sleep(0)  # the cancellation reaches run() while the lock is still held
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)
    stored = await store.decisions_of(["c1", "c2"])
    assert [len(stored.get("c1", [])), len(stored.get("c2", []))] == [1, 1]
    await engine.dispose()


async def _true(value: bool) -> bool:
    return value
