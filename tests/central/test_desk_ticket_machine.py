"""The ticket state machine (pure): every transition against an independent table, and a
Hypothesis state machine that drives random event sequences with time moving forward."""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from central.servicedesk import tickets as tk
from central.servicedesk.tickets import TicketState as S
from vcc.errors import InvalidArgument, VccError

# Written out by hand from the issue (new → assigned → in progress → replied → closed, reopened),
# not derived from the module's own table.
ALLOWED = {
    ("dispatch", S.NEW): S.ASSIGNED,
    ("dispatch", S.ASSIGNED): S.ASSIGNED,
    ("dispatch", S.IN_PROGRESS): S.ASSIGNED,
    ("dispatch", S.REOPENED): S.ASSIGNED,
    ("start", S.ASSIGNED): S.IN_PROGRESS,
    ("start", S.REOPENED): S.IN_PROGRESS,
    ("reply", S.NEW): S.REPLIED,
    ("reply", S.ASSIGNED): S.REPLIED,
    ("reply", S.IN_PROGRESS): S.REPLIED,
    ("reply", S.REOPENED): S.REPLIED,
    ("close", S.REPLIED): S.CLOSED,
    ("reopen", S.REPLIED): S.REOPENED,
    ("reopen", S.CLOSED): S.REOPENED,
}
T0 = 1_000_000.0


def event(name: str, now: float) -> tk.Event:
    return {
        "dispatch": tk.Dispatch("city:sz"),
        "start": tk.Start(),
        "reply": tk.Reply(),
        "close": tk.Close(),
        "reopen": tk.Reopen(now + 3600),
    }[name]


@pytest.mark.parametrize("state", list(S))
@pytest.mark.parametrize("name", ["dispatch", "start", "reply", "close", "reopen"])
def test_every_transition_matches_the_table(state: S, name: str) -> None:
    facts = tk.TicketFacts(state, "city:gz", T0 + 100)
    if (name, state) not in ALLOWED:
        with pytest.raises(tk.BadTransition) as info:
            tk.transition(facts, event(name, T0), T0)
        assert info.value.error_id == "bad-transition"
        return
    new, effects = tk.transition(facts, event(name, T0), T0)
    assert new.state == ALLOWED[(name, state)]
    assert effects[0] == tk.Transitioned(state, new.state, name)
    assert (tk.NotifyCustomer() in effects) == (name == "reply")


def test_escalation_once_per_overdue_episode_with_time_given() -> None:
    facts = tk.TicketFacts(S.ASSIGNED, "city:sz", due_at=T0)
    assert tk.transition(facts, tk.Escalate(), T0) == (facts, [])  # due, not past due
    escalated, effects = tk.transition(facts, tk.Escalate(), T0 + 7200)
    assert escalated.escalation == 1
    assert effects == [tk.Escalated(1, "city:sz", 7200.0)]
    assert tk.transition(escalated, tk.Escalate(), T0 + 99999) == (escalated, [])
    replied, _ = tk.transition(escalated, tk.Reply(), T0 + 8000)
    assert tk.transition(replied, tk.Escalate(), T0 + 99999) == (replied, [])  # replied: not open
    reopened, _ = tk.transition(replied, tk.Reopen(T0 + 10000), T0 + 9000)
    assert (reopened.escalation, reopened.due_at, reopened.replied_at) == (0, T0 + 10000, None)
    assert tk.transition(reopened, tk.Escalate(), T0 + 10001)[0].escalation == 1


def test_bad_events_are_refused() -> None:
    facts = tk.TicketFacts(S.NEW, "", T0)
    with pytest.raises(InvalidArgument):
        tk.transition(facts, tk.Dispatch(""), T0)
    with pytest.raises(InvalidArgument):
        tk.transition(tk.TicketFacts(S.CLOSED, "", T0), tk.Reopen(T0 - 1), T0)


@pytest.mark.parametrize("unit", ["city:gz", "dept:billing", "dept:post-office_1"])
def test_units_accepted(unit: str) -> None:
    tk.check_unit(unit, {"gz", "sz"})


@pytest.mark.parametrize(
    ("unit", "error_id"),
    [("gz", "bad-unit"), ("city:GZ", "bad-unit"), ("city:xx", "unknown-unit"), ("dept:", "bad-unit")],
)
def test_units_refused(unit: str, error_id: str) -> None:
    with pytest.raises(VccError) as info:
        tk.check_unit(unit, {"gz", "sz"})
    assert info.value.error_id == error_id


class TicketLife(RuleBasedStateMachine):
    """Random events at increasing times; the machine agrees with ALLOWED and keeps its facts."""

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.facts = tk.TicketFacts(S.NEW, "", T0 + 3600)
        self.escalations_this_episode = 0

    @rule(name=st.sampled_from(["dispatch", "start", "reply", "close", "reopen"]), dt=st.floats(0, 7200))
    def act(self, name: str, dt: float) -> None:
        self.now += dt
        before = self.facts
        try:
            self.facts, effects = tk.transition(before, event(name, self.now), self.now)
        except tk.BadTransition:
            assert (name, before.state) not in ALLOWED
            return
        assert self.facts.state == ALLOWED[(name, before.state)]
        assert len([e for e in effects if isinstance(e, tk.Transitioned)]) == 1
        if name == "reopen":
            self.escalations_this_episode = 0
            assert self.facts.reopen_count == before.reopen_count + 1

    @rule(dt=st.floats(0, 20000))
    def escalate(self, dt: float) -> None:
        self.now += dt
        before = self.facts
        self.facts, effects = tk.transition(before, tk.Escalate(), self.now)
        assert self.facts.state == before.state
        if effects:
            self.escalations_this_episode += 1
            assert before.state in tk.OPEN_STATES and self.now > before.due_at

    @precondition(lambda self: self.facts.state == S.CLOSED)
    @rule()
    def closed_was_replied(self) -> None:
        assert self.facts.replied_at is not None and self.facts.closed_at is not None

    @invariant()
    def facts_hold(self) -> None:
        assert self.escalations_this_episode <= 1
        assert self.facts.escalation == self.escalations_this_episode
        if self.facts.state in tk.OPEN_STATES:
            assert self.facts.replied_at is None and self.facts.closed_at is None
        if self.facts.state == S.ASSIGNED:
            assert self.facts.unit == "city:sz"


TestTicketLife = TicketLife.TestCase
