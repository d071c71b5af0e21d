"""The keep-until-written buffer of routing decisions, with a store that fails on demand."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import pytest

from central.decision_log import DecisionLog, PendingDecisions
from central.store import DatabaseUnavailable, Fenced, RecordedDecision
from tests.central.test_router_store import decision
from tests.helpers import eventually


def rec(n: int, call_id: str = "") -> RecordedDecision:
    return RecordedDecision(f"d{n}", call_id or f"c{n}", float(n), decision())


class FlakyStore:
    """Refuses writes while `failing` is set (like a locked or stopped database)."""

    def __init__(self) -> None:
        self.rows: dict[str, RecordedDecision] = {}
        self.failing = False
        self.fenced = False
        self.attempts = 0

    async def record_decisions(self, decisions: Sequence[RecordedDecision]) -> None:
        self.attempts += 1
        await asyncio.sleep(0)
        if self.fenced:
            raise Fenced(1, 2)
        if self.failing:
            raise DatabaseUnavailable("database is locked")
        for d in decisions:
            self.rows.setdefault(d.decision_id, d)


@contextlib.asynccontextmanager
async def running(log: DecisionLog) -> AsyncIterator[None]:
    task = asyncio.create_task(log.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_pending_keeps_arrival_order_until_written() -> None:
    pending = PendingDecisions(limit=10)
    for n in range(1, 5):
        assert pending.add(rec(n)) is None
    assert [d.decision_id for d in pending.oldest(3)] == ["d1", "d2", "d3"]
    # Taking a batch does not remove it: only a write that landed does.
    assert len(pending) == 4
    pending.written(["d1", "d2"])
    assert [d.decision_id for d in pending.oldest(10)] == ["d3", "d4"]
    assert pending.holds_up_to(3) and not pending.holds_up_to(2)
    assert pending.for_calls(["c4", "c9"]) == [rec(4)]
    assert pending.by_id(["d3", "d1"]) == {"d3": rec(3)}


def test_pending_is_bounded_and_counts_what_it_drops() -> None:
    pending = PendingDecisions(limit=3)
    evicted = [pending.add(rec(n)) for n in range(1, 6)]
    assert evicted == [None, None, None, rec(1), rec(2)]
    assert pending.overflowed == 2
    assert [d.decision_id for d in pending.oldest(10)] == ["d3", "d4", "d5"]
    with pytest.raises(ValueError):
        PendingDecisions(limit=0)


async def test_a_failed_write_keeps_the_decisions_and_the_next_flush_writes_them() -> None:
    store = FlakyStore()
    log = DecisionLog(store, retry_first_s=0.01, retry_max_s=0.02)
    async with running(log):
        store.failing = True
        for n in range(1, 4):
            log.add(rec(n))
        await eventually(lambda: _true(log.failed_writes >= 2), what="writes refused")
        # Refused, not lost: still readable, and none in the store.
        assert [d.decision_id for d in log.pending(["c1", "c2", "c3"])] == ["d1", "d2", "d3"]
        assert store.rows == {}
        flushed = asyncio.create_task(log.flush())
        await eventually(lambda: _true(log.failed_writes >= 3), what="another refused write")
        assert not flushed.done()  # flush() waits for the decisions, it does not give up on them
        store.failing = False
        await asyncio.wait_for(flushed, 10)
    assert sorted(store.rows) == ["d1", "d2", "d3"]
    assert len(log) == 0 and log.overflowed == 0


async def test_drain_writes_what_run_left_behind() -> None:
    store = FlakyStore()
    log = DecisionLog(store, retry_first_s=0.01, retry_max_s=0.02)
    async with running(log):
        store.failing = True
        log.add(rec(1))
        await eventually(lambda: _true(log.failed_writes >= 1), what="a refused write")
    store.failing = False
    log.add(rec(2))
    await log.drain()
    assert sorted(store.rows) == ["d1", "d2"]


async def test_a_full_buffer_drops_the_oldest_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyStore()
    store.failing = True
    log = DecisionLog(store, limit=2)
    for n in range(1, 4):
        log.add(rec(n))
    assert log.overflowed == 1
    assert any("dropped unwritten" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    store.failing = False
    await log.drain()
    assert sorted(store.rows) == ["d2", "d3"]


async def test_a_deposed_replicas_decisions_are_refused_not_retried_forever() -> None:
    store = FlakyStore()
    store.fenced = True
    log = DecisionLog(store)
    log.add(rec(1))
    await log.drain()
    assert store.attempts == 1 and log.refused == 1 and len(log) == 0 and store.rows == {}


async def _true(value: bool) -> bool:
    return value
