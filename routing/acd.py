"""The local ACD: calls waiting per skill group, ready agents, and who takes which call.

Pure and deterministic: the site node tells it who is ready and which calls wait, and asks
`next_match()`. Order of service: highest priority first, then oldest arrival (a call keeps its
original arrival time when it comes back to a queue, so ring-no-answer never sends it to the
back). Among the ready agents of the chosen skill group, the group's strategy decides.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

Strategy = Literal["longest_idle", "most_skilled", "round_robin", "least_occupied"]


@dataclass(frozen=True, slots=True)
class QueuedCall:
    call_id: str
    skill_group: str
    arrived_at: float
    priority: int = 0
    # Tie-breaker that keeps the order total and stable.
    seq: int = 0

    @property
    def order(self) -> tuple[int, float, int]:
        return (-self.priority, self.arrived_at, self.seq)


@dataclass(frozen=True, slots=True)
class Standing:
    """What the strategies look at when an agent becomes ready."""

    idle_since: float
    last_offered_at: float = 0.0
    # Share of logged-in time spent on calls, 0..1.
    occupancy: float = 0.0


@dataclass(frozen=True, slots=True)
class Match:
    call: QueuedCall
    agent_code: str


@dataclass
class _Group:
    strategy: Strategy
    priority: int
    # Sorted by QueuedCall.order.
    calls: list[tuple[tuple[int, float, int], str]] = field(default_factory=list)
    # Ready members sorted by the strategy's key.
    ready: list[tuple[tuple[float, ...], str]] = field(default_factory=list)


class Acd:
    def __init__(self, groups: Mapping[str, tuple[Strategy, int]]) -> None:
        """groups: skill group id -> (strategy, group priority)."""
        self._groups = {gid: _Group(strategy, priority) for gid, (strategy, priority) in groups.items()}
        self._skills: dict[str, dict[str, int]] = {}
        self._queued: dict[str, QueuedCall] = {}
        # agent -> the keys under which it sits in each group's ready list.
        self._ready_keys: dict[str, dict[str, tuple[float, ...]]] = {}
        self._seq = 0

    # Agents ---------------------------------------------------------------------------------

    def set_skills(self, agent_code: str, skills: Mapping[str, int]) -> None:
        unknown = set(skills) - set(self._groups)
        if unknown:
            raise KeyError(f"unknown skill groups {sorted(unknown)}")
        self.agent_unavailable(agent_code)
        self._skills[agent_code] = dict(skills)

    def agent_ready(self, agent_code: str, standing: Standing) -> None:
        """The agent can take a call now (idempotent)."""
        self.agent_unavailable(agent_code)
        keys: dict[str, tuple[float, ...]] = {}
        for gid, level in self._skills.get(agent_code, {}).items():
            group = self._groups[gid]
            key = _strategy_key(group.strategy, level, standing)
            bisect.insort(group.ready, (key, agent_code))
            keys[gid] = key
        self._ready_keys[agent_code] = keys

    def agent_unavailable(self, agent_code: str) -> None:
        """The agent cannot take a call (busy, not ready, logged out); idempotent."""
        for gid, key in self._ready_keys.pop(agent_code, {}).items():
            ready = self._groups[gid].ready
            i = bisect.bisect_left(ready, (key, agent_code))
            if i < len(ready) and ready[i] == (key, agent_code):
                del ready[i]

    def is_ready(self, agent_code: str) -> bool:
        return agent_code in self._ready_keys

    # Calls ----------------------------------------------------------------------------------

    def enqueue(self, call_id: str, skill_group: str, arrived_at: float, priority: int = 0) -> QueuedCall:
        if call_id in self._queued:
            raise ValueError(f"call {call_id} is already queued")
        group = self._groups[skill_group]
        self._seq += 1
        call = QueuedCall(call_id, skill_group, arrived_at, priority + group.priority, self._seq)
        bisect.insort(group.calls, (call.order, call_id))
        self._queued[call_id] = call
        return call

    def dequeue(self, call_id: str) -> QueuedCall | None:
        call = self._queued.pop(call_id, None)
        if call is not None:
            calls = self._groups[call.skill_group].calls
            i = bisect.bisect_left(calls, (call.order, call_id))
            del calls[i]
        return call

    def position(self, call_id: str) -> int:
        """1 = next to be served in its skill group; 0 = not queued."""
        call = self._queued.get(call_id)
        if call is None:
            return 0
        calls = self._groups[call.skill_group].calls
        return bisect.bisect_left(calls, (call.order, call_id)) + 1

    def queued(self, call_id: str) -> QueuedCall | None:
        return self._queued.get(call_id)

    # Matching -------------------------------------------------------------------------------

    def next_match(self) -> Match | None:
        """The next (call, agent) pair to connect, removed from the queue and the ready lists."""
        best: _Group | None = None
        for group in self._groups.values():
            if group.calls and group.ready and (best is None or group.calls[0] < best.calls[0]):
                best = group
        if best is None:
            return None
        _, call_id = best.calls[0]
        _, agent_code = best.ready[0]
        call = self.dequeue(call_id)
        assert call is not None
        self.agent_unavailable(agent_code)
        return Match(call, agent_code)

    def take_ready_agent(self, skill_group: str, exclude: frozenset[str] = frozenset()) -> str | None:
        """Reserve the group's best ready agent (not one of `exclude`) for a call that is not in
        this ACD's queues (one offered by another site, a callback shown to an agent)."""
        code = next((c for _, c in self._groups[skill_group].ready if c not in exclude), None)
        if code is None:
            return None
        self.agent_unavailable(code)
        return code

    def head(self, skill_group: str) -> str | None:
        """The call that would be served next in the group."""
        calls = self._groups[skill_group].calls
        return calls[0][1] if calls else None

    def matches(self) -> Iterator[Match]:
        while (m := self.next_match()) is not None:
            yield m

    # Live figures ---------------------------------------------------------------------------

    def waiting(self, skill_group: str) -> int:
        return len(self._groups[skill_group].calls)

    def oldest_arrival(self, skill_group: str) -> float | None:
        calls = self._groups[skill_group].calls
        return min((self._queued[cid].arrived_at for _, cid in calls), default=None)

    def ready_count(self, skill_group: str) -> int:
        return len(self._groups[skill_group].ready)

    def longest_idle_since(self, skill_group: str) -> float | None:
        return min(
            (self._ready_keys[code][skill_group][-1] for _, code in self._groups[skill_group].ready),
            default=None,
        )

    def members(self, skill_group: str) -> list[str]:
        return [code for code, skills in self._skills.items() if skill_group in skills]

    @property
    def total_waiting(self) -> int:
        return len(self._queued)

    @property
    def skill_groups(self) -> list[str]:
        return list(self._groups)


def _strategy_key(strategy: Strategy, level: int, s: Standing) -> tuple[float, ...]:
    # The last element is always idle_since (read back by longest_idle_since).
    if strategy == "most_skilled":
        return (-level, s.idle_since)
    if strategy == "round_robin":
        return (s.last_offered_at, s.idle_since)
    if strategy == "least_occupied":
        return (s.occupancy, s.idle_since)
    return (s.idle_since,)
