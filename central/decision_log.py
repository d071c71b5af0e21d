"""Routing decisions on their way to the database: kept in memory until a write has landed.

A decision is made and answered before it is written (a RouteCall never waits for the database),
so between the answer and the commit the decision lives only here. A write that fails — SQLite
locked by another writer, PostgreSQL down or restarting — leaves its decisions in place; they are
written again, oldest first, on the next flush, with a growing pause between failed attempts.
Nothing is dropped for a failed write. Only two things end a decision without a row:

- the buffer is full (`limit` decisions: the database has refused writes for a long time). Memory
  must stay bounded, so the oldest decision makes room, and every such loss is counted in
  `overflowed` and logged as an error (the operator's alarm);
- the database refuses the write for good because this replica was deposed (`Fenced`): a deposed
  leader's writes must not land, by design.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Protocol

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from central.store import Fenced, RecordedDecision

log = logging.getLogger(__name__)

# Decisions held while the database refuses writes; beyond this the oldest are dropped (alarm).
DECISION_LIMIT = 100_000
DECISION_BATCH = 500
# After a failed write, the next attempt waits this long, doubling up to the maximum.
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0
# At shutdown, how long the decisions still held may take to reach the database.
DRAIN_S = 10.0


class DecisionStore(Protocol):
    async def record_decisions(self, decisions: Sequence[RecordedDecision]) -> None: ...


class PendingDecisions:
    """Decisions not in the database yet, oldest first, bounded (pure: no I/O, no clock)."""

    def __init__(self, limit: int = DECISION_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"limit: at least 1, not {limit}")
        self.limit = limit
        # decision id -> (sequence number, decision): the order of arrival.
        self._items: OrderedDict[str, tuple[int, RecordedDecision]] = OrderedDict()
        self._seq = 0
        self.overflowed = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, decision_id: object) -> bool:
        return decision_id in self._items

    def add(self, record: RecordedDecision) -> RecordedDecision | None:
        """Keep `record`; returns the oldest decision it pushed out when the buffer was full."""
        self._seq += 1
        self._items[record.decision_id] = (self._seq, record)
        if len(self._items) <= self.limit:
            return None
        self.overflowed += 1
        _, (_, evicted) = self._items.popitem(last=False)
        return evicted

    def oldest(self, n: int) -> list[RecordedDecision]:
        """The next batch to write (they stay here until `written`)."""
        batch: list[RecordedDecision] = []
        for _, record in self._items.values():
            if len(batch) == n:
                break
            batch.append(record)
        return batch

    def written(self, decision_ids: Iterable[str]) -> None:
        for decision_id in decision_ids:
            self._items.pop(decision_id, None)

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest decision added so far."""
        return self._seq

    def holds_up_to(self, seq: int) -> bool:
        """Whether some decision added at or before `seq` is still unwritten."""
        first = next(iter(self._items.values()), None)
        return first is not None and first[0] <= seq

    def for_calls(self, call_ids: Collection[str]) -> list[RecordedDecision]:
        wanted = set(call_ids)
        return [d for _, d in self._items.values() if d.call_id in wanted]

    def by_id(self, decision_ids: Collection[str]) -> dict[str, RecordedDecision]:
        return {i: self._items[i][1] for i in decision_ids if i in self._items}


class DecisionLog:
    """Writes the decisions behind the answers, in batches; pending ones are readable at once."""

    def __init__(
        self,
        store: DecisionStore,
        *,
        limit: int = DECISION_LIMIT,
        batch: int = DECISION_BATCH,
        retry_first_s: float = RETRY_FIRST_S,
        retry_max_s: float = RETRY_MAX_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._pending = PendingDecisions(limit)
        self._batch = batch
        self._retry_first_s = retry_first_s
        self._retry_max_s = retry_max_s
        self._clock = clock
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        # The write in progress: never cancelled (a transaction cut off mid-way can keep SQLite's
        # write lock until its connection is collected), awaited by drain() instead.
        self._writing: asyncio.Task[bool] | None = None
        self.failed_writes = 0
        self.refused = 0
        self._failing_since: float | None = None

    @property
    def overflowed(self) -> int:
        """Decisions dropped because the buffer was full (each one logged as an error)."""
        return self._pending.overflowed

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def writing(self) -> bool:
        """A write is in progress (it may be waiting for the database's lock)."""
        return self._writing is not None and not self._writing.done()

    def add(self, record: RecordedDecision) -> None:
        evicted = self._pending.add(record)
        if evicted is not None:
            log.error(
                "routing decision %s (call %s) dropped unwritten: %d decisions wait for the database "
                "(%d dropped so far)",
                evicted.decision_id,
                evicted.call_id or "-",
                len(self._pending),
                self._pending.overflowed,
            )
        self._wake.set()

    def pending(self, call_ids: Sequence[str]) -> list[RecordedDecision]:
        return self._pending.for_calls(call_ids)

    def pending_by_id(self, decision_ids: Collection[str]) -> dict[str, RecordedDecision]:
        return self._pending.by_id(decision_ids)

    async def run(self) -> None:
        """Write until cancelled (then call drain()); a failed write is tried again later."""
        pause = self._retry_first_s
        while True:
            await self._wake.wait()
            self._wake.clear()
            while len(self._pending):
                if await self._write_next():
                    pause = self._retry_first_s
                    continue
                # The decisions stay; new ones wake us no sooner than the pause (the database
                # is what is slow, not the decisions).
                await asyncio.sleep(pause)
                pause = min(pause * 2, self._retry_max_s)

    async def flush(self) -> None:
        """Until every decision added so far is written (run() must be running)."""
        target = self._pending.last_seq
        while self._pending.holds_up_to(target):
            self._progress.clear()
            await self._progress.wait()

    async def drain(self) -> None:
        """At shutdown: let the write in progress finish, then write what is still held, trying
        for up to DRAIN_S; what the database still refuses then is logged, with its count."""
        if self._writing is not None:
            await asyncio.wait([self._writing])
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_delay(DRAIN_S),
                wait=wait_exponential(multiplier=self._retry_first_s, max=self._retry_max_s),
                retry=retry_if_exception_type(_WriteFailed),
                reraise=True,
            ):
                with attempt:
                    while len(self._pending):
                        if not await self._write_next():
                            raise _WriteFailed()
        except _WriteFailed:
            if len(self._pending):
                log.error(
                    "%d routing decisions not recorded: the database refused them until shutdown",
                    len(self._pending),
                )

    async def _write_next(self) -> bool:
        """Write the oldest batch in a task of its own (safe from our caller's cancellation)."""
        self._writing = asyncio.ensure_future(self._write(self._pending.oldest(self._batch)))
        return await asyncio.shield(self._writing)

    async def _write(self, batch: list[RecordedDecision]) -> bool:
        try:
            await self._store.record_decisions(batch)
        except Fenced as exc:
            # This replica no longer leads: its decisions must not land (fencing), whatever we do.
            self._pending.written(d.decision_id for d in batch)
            self.refused += len(batch)
            log.error("%d routing decisions of a deposed term not recorded: %s", len(batch), exc)
            self._progress.set()
            return True
        except Exception as exc:
            # Kept: the next flush writes them again (inserts of a decision id already stored are
            # ignored, so a write that landed but failed to say so does no harm).
            self.failed_writes += 1
            if self._failing_since is None:
                self._failing_since = self._clock()
            log.warning(
                "cannot record %d routing decisions yet (%s); %d kept for the next attempt",
                len(batch),
                exc,
                len(self._pending),
            )
            return False
        self._pending.written(d.decision_id for d in batch)
        if self._failing_since is not None:
            log.warning(
                "routing decisions recorded again after %.1fs of failed writes",
                self._clock() - self._failing_since,
            )
            self._failing_since = None
        self._progress.set()
        return True


class _WriteFailed(Exception):
    """One drain attempt could not write everything (the decisions are still held)."""
