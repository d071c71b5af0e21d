"""The dashboard's login guard in central's database (issue 11): the failures one replica counted
are counted by the next (a leader change forgives no guesser), and the database gives the same
answers as the pure policy (vcc.login_guard) in virtual time."""

from __future__ import annotations

import random
import sqlite3

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from central.web.login import _GUARD, DatabaseGuard, MemoryGuard
from vcc.login_guard import LoginPolicy

POLICY = LoginPolicy(code_failures=3, code_window_s=60, code_lockout_s=120, source_failures=5)


async def test_failures_counted_by_one_replica_lock_the_name_at_the_other(engine: AsyncEngine) -> None:
    leader, next_leader = DatabaseGuard(engine, POLICY), DatabaseGuard(engine, POLICY)
    assert await leader.failed(100.0, "ops", "10.0.0.1") == []
    assert await leader.failed(101.0, "ops", "10.0.0.2") == []
    # The leader is gone; the next one counts the third failure as the third.
    [lock] = await next_leader.failed(102.0, "ops", "10.0.0.3")
    assert (lock.kind, lock.key, lock.until) == ("code", "ops", 222.0)
    assert await leader.refusal(103.0, "ops", "10.0.0.9") == "code-locked"
    assert await next_leader.refusal(221.0, "ops", "10.0.0.9") == "code-locked"
    assert await next_leader.refusal(222.0, "ops", "10.0.0.9") == ""
    # Another name from a fresh host is not touched.
    assert await leader.refusal(103.0, "other", "10.0.0.9") == ""


async def test_a_right_password_forgives_the_name_not_the_source(engine: AsyncEngine) -> None:
    guard = DatabaseGuard(engine, POLICY)
    for t in range(4):
        await guard.failed(float(t), f"name-{t % 2}", "10.0.0.1")
    await guard.succeeded("name-0")
    # name-0 had two failures, forgiven: two more do not lock it; the source's fifth locks it.
    assert await guard.failed(5.0, "name-0", "10.0.0.2") == []
    [lock] = await guard.failed(6.0, "name-0", "10.0.0.1")
    assert (lock.kind, lock.key) == ("source", "10.0.0.1")
    assert await guard.refusal(7.0, "fresh", "10.0.0.1") == "source-locked"
    assert await guard.refusal(7.0, "name-0", "10.0.0.3") == ""


async def test_the_database_answers_as_the_pure_policy(engine: AsyncEngine) -> None:
    """A random history of failures, successes and checks: the same refusals and lockouts."""
    rng = random.Random(11)
    database, memory = DatabaseGuard(engine, POLICY), MemoryGuard(POLICY)
    now = 1000.0
    for _ in range(150):
        now += rng.choice((0.5, 3.0, 20.0, 70.0))
        name, host = rng.choice(("a", "b", "c")), rng.choice(("h1", "h2"))
        move = rng.random()
        if move < 0.6:
            assert await database.failed(now, name, host) == await memory.failed(now, name, host)
        elif move < 0.7:
            if not await memory.refusal(now, name, host):
                await database.succeeded(name)
                await memory.succeeded(name)
        else:
            assert await database.refusal(now, name, host) == await memory.refusal(now, name, host)


async def test_the_sweep_forgets_only_what_no_longer_counts(engine: AsyncEngine) -> None:
    guard = DatabaseGuard(engine, POLICY)
    for t in (0.0, 1.0, 2.0):
        await guard.failed(t, "locked", "h")
    await guard.failed(650.0, "recent", "h2")
    await guard.sweep(700.0)
    # The lockout ended at 122 and every window is over: forgotten. The recent failure is kept:
    # two more lock the name.
    async with engine.connect() as conn:
        keys = set((await conn.execute(sa.select(_GUARD.c.key))).scalars())
    assert keys == {"recent", "h2"}
    assert await guard.failed(701.0, "recent", "h3") == []
    assert [lock.kind for lock in await guard.failed(702.0, "recent", "h4")] == ["code"]


async def test_a_failure_counted_while_another_replica_writes_waits_for_it_not_fails(
    engine: AsyncEngine, database_url: str
) -> None:
    """Two replicas on one SQLite file: another replica's write lands between this one's read
    of the failures and its write of the next. Under a deferred BEGIN SQLite refused that write
    at once ("database is locked", a 500 at the dashboard's login, seen in a fresh-clone run);
    the guard's transaction takes the write lock first, so the other replica waits instead."""
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's row locks serialise the two without this")
    path = sa.engine.make_url(database_url).database
    assert path
    guard = DatabaseGuard(engine, POLICY)
    other_wrote: list[bool] = []

    def other_replica_writes(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if other_wrote or not statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
            return
        other = sqlite3.connect(path, timeout=0)  # no waiting: is the guard holding the lock?
        try:
            other.execute(
                "INSERT INTO dashboard_login_guard (kind, key, failures, locked_until, changed_at) "
                "VALUES ('code', 'other-replica', '[]', 0, 0)"
            )
            other.commit()
            other_wrote.append(True)
        except sqlite3.OperationalError:
            other_wrote.append(False)  # locked: the guard took the write lock at its BEGIN
        finally:
            other.close()

    sa.event.listen(engine.sync_engine, "before_cursor_execute", other_replica_writes)
    try:
        assert await guard.failed(100.0, "ops", "10.0.0.1") == []
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", other_replica_writes)
    assert other_wrote == [False]
