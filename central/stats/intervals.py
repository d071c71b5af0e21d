"""Interval statistics from call records (pure: no I/O, time comes in as arguments).

A call belongs to the interval of its arrival (ARRIVED, or BLOCKED for a call refused at the
trunk). Figures are always recomputed from the records of the interval, so a record that
arrives late (an outbox drained after a partition) corrects its interval the next time the
interval is computed, and a record seen twice (same call id) counts once.

Definitions (per group of calls — province, entry site, serving site, skill group, agent):

- offered: calls that arrived, blocked ones included.
- blocked: calls refused because no trunk channel was free (outcome BLOCKED).
- answered: calls an agent answered (an ANSWERED event; the call may still be going on).
- short abandons: calls abandoned after waiting less than `short_abandon_s` (default 5 s):
  misdials and callers who changed their mind; they are counted apart and left out of the
  rates below.
- abandoned: the other abandoned calls (waited `short_abandon_s` or longer).
- in progress: calls neither answered nor ended yet (in the IVR or queue): not judged yet.
- handled base = offered - short abandons - blocked - in progress.
- service level (SL) = answered within `sl_threshold_s` (default 20 s) / handled base.
- abandon rate = abandoned / handled base.
- ASA = mean wait of answered calls (arrival to answer, IVR included).
- AHT = mean talk time of answered calls that ended (answer to end, hold included; the
  records carry no wrap-up time).
- transfers: answered calls with a TRANSFERRED event after their answer.
- overflow out: calls answered at another site than the one they entered (counted at the
  entry site); overflow in: the same calls counted at the serving site.

The serving site of a call nobody answered is its entry site.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum

from central.records import CallRecord, Outcome
from vcc.call_events import EventKind

INTERVAL_S = 900
DAY_S = 86_400


@dataclass(frozen=True)
class StatsPolicy:
    """Thresholds and targets; every figure's definition refers to these."""

    sl_threshold_s: float = 20.0
    sl_target: float = 0.80
    short_abandon_s: float = 5.0
    asa_target_s: float = 20.0
    abandon_target: float = 0.05
    # An abandon rate at or above this scores 0 in the service quality index.
    abandon_ceiling: float = 0.20
    # Offset of local time from UTC: days (and so intervals) start at local midnight.
    utc_offset_s: int = 8 * 3600


class Level(StrEnum):
    PROVINCE = "province"
    ENTRY_SITE = "entry_site"
    SERVED_SITE = "served_site"
    SKILL_GROUP = "skill_group"
    AGENT = "agent"


@dataclass(frozen=True)
class CallFacts:
    """What the statistics need of one call record."""

    call_id: str
    entry_site_id: str
    served_site_id: str
    skill_group: str
    agent_code: str
    outcome: Outcome
    answered: bool
    arrived_at: float
    wait_s: float
    talk_s: float
    ended: bool
    transferred: bool
    # Tie-breaker when the same call is seen twice: the record that knows more events wins.
    event_count: int = 0


def facts(record: CallRecord, transferred: bool | None = None) -> CallFacts | None:
    """The facts of a record; None for a call that has neither arrived nor been blocked yet.

    `transferred` defaults to what the record's events say (a TRANSFERRED after the answer).
    """
    arrived_at = record.arrived_at
    if arrived_at is None:
        return None
    if transferred is None:
        transferred = record.answered_at is not None and any(
            e.kind is EventKind.TRANSFERRED and e.at >= record.answered_at for e in record.events
        )
    return CallFacts(
        call_id=record.call_id,
        entry_site_id=record.entry_site_id,
        served_site_id=record.served_site_id,
        skill_group=record.skill_group,
        agent_code=record.agent_code,
        outcome=record.outcome,
        answered=record.answered_at is not None,
        arrived_at=arrived_at,
        wait_s=record.wait_s,
        talk_s=record.talk_s,
        ended=record.ended_at is not None,
        transferred=transferred,
        event_count=record.event_count,
    )


@dataclass
class Figures:
    """Additive counters of one group of calls; the rates are derived from them."""

    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    blocked: int = 0
    failed: int = 0
    # Arrived, not ended yet.
    in_progress: int = 0
    answered_in_sl: int = 0
    transfers: int = 0
    overflow_in: int = 0
    overflow_out: int = 0
    wait_answered_s: float = 0.0
    talk_s: float = 0.0
    talk_count: int = 0

    def add(self, other: Figures) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def handled_base(self) -> int:
        return self.offered - self.short_abandoned - self.blocked - self.in_progress

    @property
    def service_level(self) -> float | None:
        return self.answered_in_sl / self.handled_base if self.handled_base > 0 else None

    @property
    def abandon_rate(self) -> float | None:
        return self.abandoned / self.handled_base if self.handled_base > 0 else None

    @property
    def asa_s(self) -> float | None:
        return self.wait_answered_s / self.answered if self.answered else None

    @property
    def aht_s(self) -> float | None:
        return self.talk_s / self.talk_count if self.talk_count else None

    def as_dict(self) -> dict[str, float | int | None]:
        counts: dict[str, float | int | None] = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("wait_answered_s", "talk_s", "talk_count")
        }
        return {
            **counts,
            "service_level": _round(self.service_level, 4),
            "abandon_rate": _round(self.abandon_rate, 4),
            "asa_s": _round(self.asa_s, 2),
            "aht_s": _round(self.aht_s, 2),
        }


@dataclass(frozen=True)
class IntervalRow:
    level: Level
    key: str
    start: float
    length_s: int
    figures: Figures = field(compare=False)

    def as_dict(self) -> dict[str, object]:
        return {
            "level": self.level.value,
            "key": self.key,
            "start": self.start,
            "length_s": self.length_s,
            **self.figures.as_dict(),
        }


def interval_start(at: float, length_s: int, utc_offset_s: int = 0) -> float:
    """Start (unix seconds) of the interval of `length_s` holding `at`, aligned to local midnight."""
    return math.floor((at + utc_offset_s) / length_s) * length_s - utc_offset_s


def unique_calls(calls: Iterable[CallFacts]) -> list[CallFacts]:
    """One entry per call id: the one that knows the most events (a re-sent record counts once)."""
    best: dict[str, CallFacts] = {}
    for c in calls:
        old = best.get(c.call_id)
        if old is None or (c.event_count, c.ended) >= (old.event_count, old.ended):
            best[c.call_id] = c
    return list(best.values())


def call_figures(c: CallFacts, policy: StatsPolicy) -> Figures:
    """The contribution of one call to its groups (overflow in/out set by the caller)."""
    f = Figures(offered=1)
    if c.answered or c.outcome is Outcome.ANSWERED:
        f.answered = 1
        f.wait_answered_s = c.wait_s
        f.answered_in_sl = int(c.wait_s <= policy.sl_threshold_s)
        if c.ended:
            f.talk_s = c.talk_s
            f.talk_count = 1
        f.transfers = int(c.transferred)
    elif c.outcome is Outcome.ABANDONED:
        if c.wait_s < policy.short_abandon_s:
            f.short_abandoned = 1
        else:
            f.abandoned = 1
    elif c.outcome is Outcome.BLOCKED:
        f.blocked = 1
    elif c.outcome is Outcome.FAILED or c.outcome is Outcome.SITE_LOST:
        # A lost city's call closed by an operator: the platform did not serve it.
        f.failed = 1
    else:
        f.in_progress = 1
    return f


def aggregate(
    calls: Iterable[CallFacts],
    policy: StatsPolicy,
    length_s: int = INTERVAL_S,
    *,
    levels: Sequence[Level] = tuple(Level),
    start: float | None = None,
    end: float | None = None,
) -> list[IntervalRow]:
    """Rows per (level, key, interval) of the calls that arrived in [start, end), sorted."""
    groups: dict[tuple[Level, str, float], Figures] = {}

    def bump(level: Level, key: str, at: float, f: Figures) -> None:
        if level in levels:
            groups.setdefault((level, key, at), Figures()).add(f)

    for c in unique_calls(calls):
        if (start is not None and c.arrived_at < start) or (end is not None and c.arrived_at >= end):
            continue
        at = interval_start(c.arrived_at, length_s, policy.utc_offset_s)
        base = call_figures(c, policy)
        served = c.served_site_id or c.entry_site_id
        overflow = bool(c.served_site_id) and c.served_site_id != c.entry_site_id
        bump(Level.PROVINCE, "", at, base)
        bump(Level.ENTRY_SITE, c.entry_site_id, at, _with(base, overflow_out=int(overflow)))
        bump(Level.SERVED_SITE, served, at, _with(base, overflow_in=int(overflow)))
        bump(Level.SKILL_GROUP, c.skill_group or "-", at, base)
        if c.agent_code:
            bump(Level.AGENT, c.agent_code, at, _with(base, overflow_in=int(overflow)))
    order = {level: i for i, level in enumerate(Level)}
    return [
        IntervalRow(level, key, at, length_s, f)
        for (level, key, at), f in sorted(
            groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1], kv[0][2])
        )
    ]


def total(calls: Iterable[CallFacts], policy: StatsPolicy) -> Figures:
    """The figures of all these calls together (each call id once)."""
    result = Figures()
    for c in unique_calls(calls):
        result.add(call_figures(c, policy))
    return result


def quality_index(f: Figures, policy: StatsPolicy) -> float | None:
    """The service quality index, 0 (worst) to 100 (every target met); None without calls.

    SQI = 100 * (0.50 * sl_score + 0.25 * abandon_score + 0.15 * asa_score + 0.10 * block_score)

    - sl_score = min(1, SL / SL target)
    - abandon_score = max(0, 1 - abandon rate / abandon ceiling)   (ceiling 20 %: 0 points)
    - asa_score = min(1, ASA target / ASA)   (1 when within target, or when no call was answered)
    - block_score = 1 - blocked / offered
    With no handled call (all blocked or short abandons), sl, abandon and asa scores count 0
    when something was blocked, else 1.
    """
    if f.offered == 0:
        return None
    block_score = 1.0 - f.blocked / f.offered
    sl, abandon_rate, asa = f.service_level, f.abandon_rate, f.asa_s
    if sl is None or abandon_rate is None:
        fallback = 0.0 if f.blocked else 1.0
        sl_score = abandon_score = asa_score = fallback
    else:
        sl_score = min(1.0, sl / policy.sl_target) if policy.sl_target > 0 else 1.0
        abandon_score = max(0.0, 1.0 - abandon_rate / policy.abandon_ceiling)
        asa_score = 1.0 if asa is None or asa <= policy.asa_target_s else policy.asa_target_s / asa
    return round(100.0 * (0.50 * sl_score + 0.25 * abandon_score + 0.15 * asa_score + 0.10 * block_score), 1)


def _with(base: Figures, **changes: int) -> Figures:
    f = Figures()
    f.add(base)
    for name, value in changes.items():
        setattr(f, name, value)
    return f


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
