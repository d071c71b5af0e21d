"""The local ACD: order of service across skill groups, agent selection strategies, and a
Hypothesis state machine that checks every match against a plain model of the queues."""

from __future__ import annotations

import copy

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)

from routing.acd import Acd, Match, Standing, Strategy


def acd_with(groups: dict[str, tuple[Strategy, int]], skills: dict[str, dict[str, int]]) -> Acd:
    acd = Acd(groups)
    for code, levels in skills.items():
        acd.set_skills(code, levels)
    return acd


def pairs(acd: Acd) -> list[tuple[str, str]]:
    return [(m.call.call_id, m.agent_code) for m in acd.matches()]


# Order of calls -------------------------------------------------------------------------------


def test_priority_then_oldest_arrival_across_groups() -> None:
    acd = acd_with(
        {"general": ("longest_idle", 0), "billing": ("longest_idle", 0)}, {"a": {"general": 1, "billing": 1}}
    )
    acd.enqueue("g-old", "general", arrived_at=1.0)
    acd.enqueue("b-new", "billing", arrived_at=5.0)
    acd.enqueue("b-urgent", "billing", arrived_at=9.0, priority=2)
    acd.enqueue("g-new", "general", arrived_at=3.0)
    served = []
    for t in range(4):
        acd.agent_ready("a", Standing(idle_since=float(t)))
        m = acd.next_match()
        assert m is not None
        served.append(m.call.call_id)
    assert served == ["b-urgent", "g-old", "g-new", "b-new"]
    assert acd.next_match() is None


def test_group_priority_adds_to_call_priority() -> None:
    acd = acd_with(
        {"general": ("longest_idle", 0), "vip": ("longest_idle", 3)}, {"a": {"general": 1, "vip": 1}}
    )
    acd.enqueue("g", "general", arrived_at=1.0, priority=2)
    acd.enqueue("v", "vip", arrived_at=5.0)
    q = acd.queued("v")
    assert q is not None and q.priority == 3
    acd.agent_ready("a", Standing(0.0))
    assert pairs(acd) == [("v", "a")]


def test_same_arrival_keeps_enqueue_order() -> None:
    acd = acd_with({"g": ("longest_idle", 0)}, {"a": {"g": 1}, "b": {"g": 1}})
    for cid in ("c1", "c2", "c3"):
        acd.enqueue(cid, "g", arrived_at=1.0)
    acd.agent_ready("a", Standing(0.0))
    acd.agent_ready("b", Standing(1.0))
    assert [c for c, _ in pairs(acd)] == ["c1", "c2"]
    assert acd.position("c3") == 1


def test_calls_wait_only_for_groups_with_ready_agents() -> None:
    acd = acd_with({"general": ("longest_idle", 0), "billing": ("longest_idle", 0)}, {"a": {"billing": 1}})
    acd.enqueue("g", "general", arrived_at=1.0, priority=5)
    acd.enqueue("b", "billing", arrived_at=2.0)
    acd.agent_ready("a", Standing(0.0))
    # The better call waits for a general agent; it does not block billing.
    assert pairs(acd) == [("b", "a")]
    assert acd.waiting("general") == 1


def test_position_numbers_and_dequeue() -> None:
    acd = acd_with({"g": ("longest_idle", 0), "h": ("longest_idle", 0)}, {})
    acd.enqueue("c1", "g", arrived_at=1.0)
    acd.enqueue("c2", "g", arrived_at=2.0)
    acd.enqueue("c3", "g", arrived_at=3.0)
    acd.enqueue("c4", "g", arrived_at=4.0, priority=1)
    acd.enqueue("h1", "h", arrived_at=0.5)
    assert [acd.position(c) for c in ("c4", "c1", "c2", "c3", "h1")] == [1, 2, 3, 4, 1]
    assert acd.position("nobody") == 0
    gone = acd.dequeue("c2")
    assert gone is not None and gone.call_id == "c2" and gone.skill_group == "g"
    assert [acd.position(c) for c in ("c4", "c1", "c2", "c3")] == [1, 2, 0, 3]
    assert acd.dequeue("c2") is None
    assert acd.dequeue("never") is None
    assert acd.waiting("g") == 3
    assert acd.total_waiting == 4
    assert acd.oldest_arrival("g") == 1.0
    assert acd.oldest_arrival("h") == 0.5


def test_enqueue_twice_is_refused() -> None:
    acd = acd_with({"g": ("longest_idle", 0)}, {})
    acd.enqueue("c1", "g", arrived_at=1.0)
    with pytest.raises(ValueError):
        acd.enqueue("c1", "g", arrived_at=2.0)
    assert acd.waiting("g") == 1


def test_enqueue_to_unknown_group_changes_nothing() -> None:
    acd = acd_with({"g": ("longest_idle", 0)}, {})
    with pytest.raises(KeyError):
        acd.enqueue("c1", "nope", arrived_at=1.0)
    assert acd.total_waiting == 0
    assert acd.queued("c1") is None


def test_requeue_with_original_arrival_goes_ahead_of_later_calls() -> None:
    acd = acd_with({"g": ("longest_idle", 0)}, {"a": {"g": 1}, "b": {"g": 1}})
    acd.enqueue("first", "g", arrived_at=1.0)
    acd.agent_ready("a", Standing(0.0))
    m = acd.next_match()
    assert m is not None and m.call.call_id == "first"
    acd.enqueue("second", "g", arrived_at=2.0)
    acd.enqueue("third", "g", arrived_at=3.0)
    # Ring-no-answer: the first call comes back with its own arrival time.
    acd.enqueue("first", "g", arrived_at=m.call.arrived_at)
    assert acd.position("first") == 1
    acd.agent_ready("b", Standing(5.0))
    assert pairs(acd) == [("first", "b")]


# Choice of agent ------------------------------------------------------------------------------


def test_longest_idle_agent_first() -> None:
    acd = acd_with({"g": ("longest_idle", 0)}, {"a": {"g": 9}, "b": {"g": 1}, "c": {"g": 5}})
    acd.agent_ready("a", Standing(idle_since=30.0))
    acd.agent_ready("b", Standing(idle_since=10.0))
    acd.agent_ready("c", Standing(idle_since=20.0))
    assert acd.longest_idle_since("g") == 10.0
    for cid in ("c1", "c2", "c3"):
        acd.enqueue(cid, "g", arrived_at=40.0)
    assert [a for _, a in pairs(acd)] == ["b", "c", "a"]
    assert acd.longest_idle_since("g") is None


def test_ready_again_does_not_duplicate_the_agent() -> None:
    acd = acd_with({"g": ("longest_idle", 0)}, {"a": {"g": 1}})
    acd.agent_ready("a", Standing(1.0))
    acd.agent_ready("a", Standing(2.0))
    assert acd.ready_count("g") == 1
    assert acd.longest_idle_since("g") == 2.0
    acd.agent_unavailable("a")
    acd.agent_unavailable("a")
    assert acd.ready_count("g") == 0
    assert not acd.is_ready("a")


def test_most_skilled_first_then_longest_idle() -> None:
    acd = acd_with({"g": ("most_skilled", 0)}, {"low": {"g": 2}, "high": {"g": 9}, "high2": {"g": 9}})
    acd.agent_ready("low", Standing(idle_since=1.0))
    acd.agent_ready("high", Standing(idle_since=8.0))
    acd.agent_ready("high2", Standing(idle_since=5.0))
    for cid in ("c1", "c2", "c3"):
        acd.enqueue(cid, "g", arrived_at=10.0)
    assert [a for _, a in pairs(acd)] == ["high2", "high", "low"]


def test_round_robin_serves_the_least_recently_offered() -> None:
    acd = acd_with({"g": ("round_robin", 0)}, {"a": {"g": 1}, "b": {"g": 1}})
    acd.agent_ready("a", Standing(idle_since=1.0, last_offered_at=7.0))
    acd.agent_ready("b", Standing(idle_since=5.0, last_offered_at=3.0))
    acd.enqueue("c1", "g", arrived_at=10.0)
    assert pairs(acd) == [("c1", "b")]


def test_least_occupied_first() -> None:
    acd = acd_with({"g": ("least_occupied", 0)}, {"a": {"g": 1}, "b": {"g": 1}})
    acd.agent_ready("a", Standing(idle_since=1.0, occupancy=0.9))
    acd.agent_ready("b", Standing(idle_since=5.0, occupancy=0.2))
    acd.enqueue("c1", "g", arrived_at=10.0)
    assert pairs(acd) == [("c1", "b")]


def test_agent_in_several_groups_is_offered_once() -> None:
    acd = acd_with({"g": ("longest_idle", 0), "h": ("most_skilled", 0)}, {"a": {"g": 1, "h": 5}})
    acd.agent_ready("a", Standing(0.0))
    assert acd.ready_count("g") == acd.ready_count("h") == 1
    acd.enqueue("cg", "g", arrived_at=1.0)
    acd.enqueue("ch", "h", arrived_at=2.0)
    assert pairs(acd) == [("cg", "a")]
    assert acd.ready_count("g") == acd.ready_count("h") == 0
    assert not acd.is_ready("a")
    assert acd.waiting("h") == 1


def test_agent_without_skills_is_never_offered() -> None:
    acd = acd_with({"g": ("longest_idle", 0)}, {})
    acd.agent_ready("stranger", Standing(0.0))
    acd.enqueue("c1", "g", arrived_at=1.0)
    assert acd.next_match() is None


def test_set_skills_rejects_unknown_groups_and_resets_readiness() -> None:
    acd = acd_with({"g": ("longest_idle", 0), "h": ("longest_idle", 0)}, {"a": {"g": 1}})
    with pytest.raises(KeyError):
        acd.set_skills("a", {"nope": 1})
    acd.agent_ready("a", Standing(0.0))
    acd.set_skills("a", {"h": 3})
    assert not acd.is_ready("a")
    assert acd.members("h") == ["a"]
    assert acd.members("g") == []


# A Hypothesis state machine against a plain model ----------------------------------------------

GROUPS: dict[str, tuple[Strategy, int]] = {
    "general": ("longest_idle", 0),
    "billing": ("most_skilled", 1),
    "vip": ("round_robin", 2),
    "tech": ("least_occupied", 0),
}
SKILLS: dict[str, dict[str, int]] = {
    "0101": {"general": 3},
    "0102": {"general": 7, "billing": 2},
    "0201": {"billing": 9, "vip": 4},
    "0202": {"vip": 4, "tech": 1, "general": 1},
    "0301": {"tech": 6},
}
AGENTS = sorted(SKILLS)


def expected_agent_key(group: str, level: int, s: Standing) -> tuple[float, ...]:
    strategy = GROUPS[group][0]
    if strategy == "most_skilled":
        return (-level, s.idle_since)
    if strategy == "round_robin":
        return (s.last_offered_at, s.idle_since)
    if strategy == "least_occupied":
        return (s.occupancy, s.idle_since)
    return (s.idle_since,)


class AcdMachine(RuleBasedStateMachine):
    calls = Bundle("calls")
    matched_calls = Bundle("matched_calls")

    @initialize()
    def start(self) -> None:
        self.acd = acd_with(GROUPS, SKILLS)
        self.next_id = 0
        # Model: call id -> (sort key, group); agent -> standing while ready.
        self.queued: dict[str, tuple[tuple[int, float, int], str]] = {}
        self.ready: dict[str, Standing] = {}
        self.arrival: dict[str, tuple[float, int]] = {}
        self.seq = 0
        self.matched: set[str] = set()
        self.matched_group: dict[str, str] = {}

    def _model_enqueue(self, call_id: str, group: str, arrived: float, priority: int) -> None:
        self.seq += 1
        total = priority + GROUPS[group][1]
        self.queued[call_id] = ((-total, arrived, self.seq), group)
        self.arrival[call_id] = (arrived, priority)

    @rule(
        target=calls,
        group=st.sampled_from(sorted(GROUPS)),
        arrived=st.integers(0, 20),
        priority=st.integers(0, 3),
    )
    def enqueue(self, group: str, arrived: int, priority: int) -> str:
        self.next_id += 1
        call_id = f"c{self.next_id}"
        q = self.acd.enqueue(call_id, group, float(arrived), priority)
        self._model_enqueue(call_id, group, float(arrived), priority)
        assert q.order == self.queued[call_id][0]
        return call_id

    @rule(call_id=calls)
    def dequeue(self, call_id: str) -> None:
        got = self.acd.dequeue(call_id)
        if call_id in self.queued:
            assert got is not None and got.call_id == call_id
            del self.queued[call_id]
        else:
            assert got is None

    @rule(call_id=consumes(matched_calls))
    def requeue_after_no_answer(self, call_id: str) -> None:
        """Ring-no-answer: the call comes back with its original arrival time."""
        if call_id in self.queued:
            return
        arrived, priority = self.arrival[call_id]
        group = self.matched_group[call_id]
        self.acd.enqueue(call_id, group, arrived, priority)
        self._model_enqueue(call_id, group, arrived, priority)
        self.matched.discard(call_id)

    @rule(
        agent=st.sampled_from(AGENTS),
        idle_since=st.integers(0, 20),
        last_offered=st.integers(0, 20),
        occupancy=st.sampled_from([0.0, 0.25, 0.5, 1.0]),
    )
    def agent_ready(self, agent: str, idle_since: int, last_offered: int, occupancy: float) -> None:
        standing = Standing(float(idle_since), float(last_offered), occupancy)
        self.acd.agent_ready(agent, standing)
        self.ready[agent] = standing

    @rule(agent=st.sampled_from(AGENTS))
    def agent_unavailable(self, agent: str) -> None:
        self.acd.agent_unavailable(agent)
        self.ready.pop(agent, None)

    def _expected(self) -> tuple[str, set[str]] | None:
        """The call the model says goes next, and the agents allowed to take it (ties)."""
        staffed = {g for g in GROUPS if any(g in SKILLS[a] for a in self.ready)}
        candidates = [(key, cid, g) for cid, (key, g) in self.queued.items() if g in staffed]
        if not candidates:
            return None
        _, call_id, group = min(candidates)
        keys = {
            a: expected_agent_key(group, SKILLS[a][group], s)
            for a, s in self.ready.items()
            if group in SKILLS[a]
        }
        best = min(keys.values())
        return call_id, {a for a, k in keys.items() if k == best}

    @rule(target=matched_calls)
    def match(self) -> MultipleResults[str]:
        expected = self._expected()
        m = self.acd.next_match()
        if expected is None:
            assert m is None
            return multiple()
        assert isinstance(m, Match)
        call_id, agents = expected
        assert m.call.call_id == call_id
        assert m.agent_code in agents
        # Never a call matched twice, never an agent who was not ready, always a skilled one.
        assert call_id not in self.matched
        assert m.agent_code in self.ready
        assert m.call.skill_group in SKILLS[m.agent_code]
        self.matched.add(call_id)
        self.matched_group[call_id] = m.call.skill_group
        del self.queued[call_id]
        del self.ready[m.agent_code]
        return multiple(call_id)

    @invariant()
    def mirrors_the_model(self) -> None:
        assert self.acd.total_waiting == len(self.queued)
        for g in GROUPS:
            in_group = sorted((key, cid) for cid, (key, grp) in self.queued.items() if grp == g)
            assert self.acd.waiting(g) == len(in_group)
            for i, (_, cid) in enumerate(in_group, start=1):
                assert self.acd.position(cid) == i
            ready_here = [a for a in self.ready if g in SKILLS[a]]
            assert self.acd.ready_count(g) == len(ready_here)
            want = min((self.ready[a].idle_since for a in ready_here), default=None)
            assert self.acd.longest_idle_since(g) == want
        for a in AGENTS:
            assert self.acd.is_ready(a) == (a in self.ready)

    @invariant()
    def a_match_exists_whenever_a_group_has_calls_and_agents(self) -> None:
        both = any(self.acd.waiting(g) and self.acd.ready_count(g) for g in GROUPS)
        # Ask a copy, so that looking does not change the machine under test.
        assert (copy.deepcopy(self.acd).next_match() is not None) == both


AcdMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestAcdMachine = AcdMachine.TestCase
