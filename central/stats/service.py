"""Reads call records from central's database for the statistics (the I/O side of central.stats).

Interval figures are recomputed from the `calls` table every time they are asked for (with a
short cache): a late record corrects its interval as soon as it is folded, and each call id is
one row, so a record sent twice counts once. Fine for a province's day of calls (tens of
thousands of rows); a materialized aggregate would be the next step beyond that.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from functools import partial

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from central.db import models
from central.records import Outcome
from central.stats.intervals import (
    DAY_S,
    INTERVAL_S,
    CallFacts,
    IntervalRow,
    Level,
    StatsPolicy,
    aggregate,
    interval_start,
)

_CALLS = models.Base.metadata.tables["calls"]
_EVENTS = models.Base.metadata.tables["call_events"]
# A call's first event may precede its arrival by a little (site clocks); read this much earlier.
ARRIVAL_SLACK_S = 600.0


class StatsService:
    """Call facts and interval rows from the database; recent reads cached for `cache_s`."""

    def __init__(
        self,
        engine: AsyncEngine,
        policy: StatsPolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
        cache_s: float = 1.0,
    ) -> None:
        self._engine = engine
        self.policy = policy or StatsPolicy()
        self._clock = clock
        self._cache_s = cache_s
        self._today: tuple[float, list[CallFacts]] | None = None
        self._lock = asyncio.Lock()

    async def calls_between(self, start: float, end: float) -> list[CallFacts]:
        """Facts of the calls that arrived in [start, end)."""
        in_range = sa.and_(
            _CALLS.c.first_event_at >= start - ARRIVAL_SLACK_S,
            _CALLS.c.first_event_at < end,
            _CALLS.c.arrived_at.is_not(None),
        )
        calls_q = sa.select(
            _CALLS.c.call_id,
            _CALLS.c.entry_site_id,
            _CALLS.c.served_site_id,
            _CALLS.c.skill_group,
            _CALLS.c.agent_code,
            _CALLS.c.outcome,
            _CALLS.c.arrived_at,
            _CALLS.c.answered_at,
            _CALLS.c.ended_at,
            _CALLS.c.wait_s,
            _CALLS.c.talk_s,
            _CALLS.c.event_count,
        ).where(in_range)
        transfers_q = (
            sa.select(_EVENTS.c.call_id, _EVENTS.c.at)
            .where(_EVENTS.c.kind == "TRANSFERRED")
            .where(_EVENTS.c.call_id.in_(sa.select(_CALLS.c.call_id).where(in_range)))
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(calls_q)).all()
            transfer_rows = (await conn.execute(transfers_q)).all()
        transfers: dict[str, list[float]] = {}
        for call_id, at in transfer_rows:
            transfers.setdefault(call_id, []).append(float(at))
        result = []
        for r in rows:
            arrived_at = float(r.arrived_at)
            if not start <= arrived_at < end:
                continue
            answered_at = r.answered_at
            result.append(
                CallFacts(
                    call_id=r.call_id,
                    entry_site_id=r.entry_site_id,
                    served_site_id=r.served_site_id,
                    skill_group=r.skill_group,
                    agent_code=r.agent_code,
                    outcome=Outcome(r.outcome),
                    answered=answered_at is not None,
                    arrived_at=arrived_at,
                    wait_s=float(r.wait_s),
                    talk_s=float(r.talk_s),
                    ended=r.ended_at is not None,
                    transferred=answered_at is not None
                    and any(at >= answered_at for at in transfers.get(r.call_id, ())),
                    event_count=int(r.event_count),
                )
            )
        return result

    async def intervals(
        self,
        start: float,
        end: float,
        length_s: int = INTERVAL_S,
        levels: Sequence[Level] = tuple(Level),
    ) -> list[IntervalRow]:
        """Rows of the intervals of `length_s` between start and end (aligned to local midnight)."""
        calls = await self.calls_between(start, end)
        return await asyncio.to_thread(
            partial(aggregate, calls, self.policy, length_s, levels=levels, start=start, end=end)
        )

    async def today(self) -> tuple[list[CallFacts], float]:
        """Facts of today's calls and the age of that read (seconds), read at most once per cache_s."""
        async with self._lock:
            now = self._clock()
            if self._today is None or now - self._today[0] >= self._cache_s:
                day = interval_start(now, DAY_S, self.policy.utc_offset_s)
                self._today = (now, await self.calls_between(day, day + DAY_S))
            read_at, calls = self._today
        return calls, max(0.0, self._clock() - read_at)
