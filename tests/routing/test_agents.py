"""The agent state machine (SPEC §4, F17): every legal transition, and every illegal one refused."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing.agents import (
    LOGGED_IN_IDLE,
    ON_CALL,
    REASON_LOGIN,
    REASON_NO_ANSWER,
    Agent,
    AgentEvent,
    AgentState,
    Answer,
    CallEnded,
    EndWrapUp,
    Hold,
    IllegalTransition,
    LogIn,
    LogOut,
    Offer,
    OfferWithdrawn,
    Retrieve,
    RingTimeout,
    SetNotReady,
    SetReady,
    transition,
)

S = AgentState


def agent_in(state: AgentState, **changes: object) -> Agent:
    """An agent as the machine would have left it in `state` (a call id while it owns a call)."""
    call_id = "c1" if state in ON_CALL or state == S.WRAP_UP else ""
    base = Agent("0101", state=state, call_id=call_id, since=1.0, idle_since=1.0)
    if state == S.WRAP_UP:
        base = replace(base, wrap_up_until=20.0)
    return replace(base, **changes)  # type: ignore[arg-type]


ALL_EVENTS: list[AgentEvent] = [
    LogIn(),
    LogOut(),
    SetReady(),
    SetNotReady("lunch"),
    Offer("c9"),
    RingTimeout(),
    OfferWithdrawn(),
    Answer(),
    Hold(),
    Retrieve(),
    CallEnded(5.0),
    EndWrapUp(),
    EndWrapUp(ready=True),
    EndWrapUp(ready=False, reason="paperwork"),
]

# (event type, state) pairs that the machine accepts; everything else raises.
LEGAL: set[tuple[str, AgentState]] = {
    ("LogIn", S.LOGGED_OUT),
    ("LogOut", S.READY),
    ("LogOut", S.NOT_READY),
    *(("SetReady", s) for s in (S.READY, S.NOT_READY, S.RINGING, S.TALKING, S.HELD, S.WRAP_UP)),
    *(("SetNotReady", s) for s in (S.READY, S.NOT_READY, S.RINGING, S.TALKING, S.HELD, S.WRAP_UP)),
    ("Offer", S.READY),
    ("RingTimeout", S.RINGING),
    ("OfferWithdrawn", S.RINGING),
    ("Answer", S.RINGING),
    ("Hold", S.TALKING),
    ("Retrieve", S.HELD),
    ("CallEnded", S.TALKING),
    ("CallEnded", S.HELD),
    ("EndWrapUp", S.WRAP_UP),
}


@pytest.mark.parametrize("state", list(S))
@pytest.mark.parametrize("event", ALL_EVENTS, ids=repr)
def test_transition_table(state: AgentState, event: AgentEvent) -> None:
    agent = agent_in(state)
    legal = (type(event).__name__, state) in LEGAL
    if legal:
        after = transition(agent, event, 50.0)
        assert after.code == agent.code
        # A state change always restarts the clock of the state.
        if after.state != agent.state:
            assert after.since == 50.0
    else:
        with pytest.raises(IllegalTransition) as info:
            transition(agent, event, 50.0)
        assert info.value.agent is agent
        assert info.value.event is event
        assert agent.code in str(info.value)


def test_login_goes_not_ready_with_login_reason() -> None:
    after = transition(Agent("0101"), LogIn(), 3.0)
    assert (after.state, after.reason, after.since) == (S.NOT_READY, REASON_LOGIN, 3.0)


def test_login_forgets_a_stale_pending_not_ready() -> None:
    after = transition(Agent("0101", pending_not_ready="lunch"), LogIn(), 3.0)
    assert after.pending_not_ready is None


@pytest.mark.parametrize("state", sorted(LOGGED_IN_IDLE))
def test_logout_from_idle(state: AgentState) -> None:
    after = transition(agent_in(state, reason="x"), LogOut(), 9.0)
    assert (after.state, after.reason, after.call_id, after.since) == (S.LOGGED_OUT, "", "", 9.0)


@pytest.mark.parametrize("state", [S.RINGING, S.TALKING, S.HELD, S.WRAP_UP, S.LOGGED_OUT])
def test_logout_refused_unless_idle(state: AgentState) -> None:
    with pytest.raises(IllegalTransition):
        transition(agent_in(state), LogOut(), 9.0)


def test_ready_from_not_ready_starts_idle_time() -> None:
    after = transition(agent_in(S.NOT_READY, reason="lunch"), SetReady(), 7.0)
    assert (after.state, after.reason, after.idle_since, after.since) == (S.READY, "", 7.0, 7.0)


def test_ready_again_keeps_idle_order() -> None:
    before = agent_in(S.READY, idle_since=2.0)
    after = transition(before, SetReady(), 7.0)
    assert after.state == S.READY
    assert after.idle_since == 2.0


def test_not_ready_from_idle_carries_the_reason() -> None:
    after = transition(agent_in(S.READY), SetNotReady("training"), 7.0)
    assert (after.state, after.reason) == (S.NOT_READY, "training")
    again = transition(after, SetNotReady("lunch"), 8.0)
    assert (again.state, again.reason) == (S.NOT_READY, "lunch")


def test_offer_rings_and_remembers_the_offer_time() -> None:
    after = transition(agent_in(S.READY), Offer("c7"), 11.0)
    assert (after.state, after.call_id, after.last_offered_at, after.since) == (S.RINGING, "c7", 11.0, 11.0)


def test_ring_timeout_goes_not_ready_no_answer() -> None:
    ringing = transition(agent_in(S.READY), Offer("c7"), 11.0)
    after = transition(ringing, RingTimeout(), 21.0)
    assert (after.state, after.reason, after.call_id) == (S.NOT_READY, REASON_NO_ANSWER, "")


def test_ring_timeout_replaces_a_pending_not_ready() -> None:
    ringing = agent_in(S.RINGING, pending_not_ready="lunch")
    after = transition(ringing, RingTimeout(), 21.0)
    assert (after.state, after.reason, after.pending_not_ready) == (S.NOT_READY, REASON_NO_ANSWER, None)


def test_offer_withdrawn_keeps_idle_order() -> None:
    ready = agent_in(S.READY, idle_since=2.0)
    ringing = transition(ready, Offer("c7"), 11.0)
    after = transition(ringing, OfferWithdrawn(), 12.0)
    assert (after.state, after.call_id, after.since) == (S.READY, "", 12.0)
    # Not the agent's fault: it keeps its place among the longest idle.
    assert after.idle_since == 2.0


def test_offer_withdrawn_applies_pending_not_ready() -> None:
    ringing = transition(agent_in(S.READY), Offer("c7"), 11.0)
    ringing = transition(ringing, SetNotReady("lunch"), 11.5)
    assert ringing.state == S.RINGING
    after = transition(ringing, OfferWithdrawn(), 12.0)
    assert (after.state, after.reason, after.pending_not_ready, after.call_id) == (
        S.NOT_READY,
        "lunch",
        None,
        "",
    )


def test_answer_hold_retrieve() -> None:
    ringing = transition(agent_in(S.READY), Offer("c7"), 11.0)
    talking = transition(ringing, Answer(), 12.0)
    assert (talking.state, talking.call_id) == (S.TALKING, "c7")
    held = transition(talking, Hold(), 13.0)
    assert (held.state, held.call_id) == (S.HELD, "c7")
    back = transition(held, Retrieve(), 14.0)
    assert (back.state, back.call_id, back.since) == (S.TALKING, "c7", 14.0)


@pytest.mark.parametrize("state", [S.TALKING, S.HELD])
def test_call_end_starts_wrap_up_timer(state: AgentState) -> None:
    after = transition(agent_in(state), CallEnded(5.0), 30.0)
    assert (after.state, after.wrap_up_until, after.calls_handled) == (S.WRAP_UP, 35.0, 1)


@pytest.mark.parametrize("wrap_up_s", [0.0, -1.0])
def test_wrap_up_zero_goes_straight_to_ready(wrap_up_s: float) -> None:
    after = transition(agent_in(S.TALKING), CallEnded(wrap_up_s), 30.0)
    assert (after.state, after.call_id, after.wrap_up_until, after.idle_since) == (S.READY, "", None, 30.0)
    assert after.calls_handled == 1


def test_wrap_up_zero_with_pending_not_ready_goes_not_ready() -> None:
    talking = transition(agent_in(S.TALKING), SetNotReady("lunch"), 20.0)
    after = transition(talking, CallEnded(0.0), 30.0)
    assert (after.state, after.reason, after.pending_not_ready) == (S.NOT_READY, "lunch", None)


def test_wrap_up_timer_expiry_goes_ready() -> None:
    wrap = transition(agent_in(S.TALKING), CallEnded(5.0), 30.0)
    after = transition(wrap, EndWrapUp(), 35.0)
    assert (after.state, after.call_id, after.wrap_up_until, after.idle_since) == (S.READY, "", None, 35.0)


@pytest.mark.parametrize("when", [S.RINGING, S.TALKING, S.HELD, S.WRAP_UP])
def test_pending_not_ready_applied_after_wrap_up(when: AgentState) -> None:
    agent = transition(agent_in(S.READY), Offer("c7"), 10.0)
    steps: list[tuple[AgentState, AgentEvent]] = [
        (S.RINGING, Answer()),
        (S.TALKING, Hold()),
        (S.HELD, CallEnded(5.0)),
        (S.WRAP_UP, EndWrapUp()),
    ]
    t = 10.0
    for state, event in steps:
        if state == when:
            agent = transition(agent, SetNotReady("lunch"), t)
            assert agent.state == state  # asked while busy: only remembered
            assert agent.pending_not_ready == "lunch"
        t += 1
        agent = transition(agent, event, t)
    assert (agent.state, agent.reason, agent.pending_not_ready) == (S.NOT_READY, "lunch", None)


def test_set_ready_while_busy_cancels_pending_not_ready() -> None:
    talking = transition(agent_in(S.TALKING), SetNotReady("lunch"), 20.0)
    talking = transition(talking, SetReady(), 21.0)
    assert (talking.state, talking.pending_not_ready) == (S.TALKING, None)
    wrap = transition(talking, CallEnded(5.0), 30.0)
    assert transition(wrap, EndWrapUp(), 35.0).state == S.READY


def test_set_ready_during_wrap_up_ends_it() -> None:
    wrap = transition(agent_in(S.TALKING, pending_not_ready="lunch"), CallEnded(5.0), 30.0)
    after = transition(wrap, SetReady(), 31.0)
    assert (after.state, after.wrap_up_until, after.pending_not_ready, after.idle_since) == (
        S.READY,
        None,
        None,
        31.0,
    )


def test_agent_ends_wrap_up_not_ready_with_its_reason() -> None:
    wrap = transition(agent_in(S.TALKING, pending_not_ready="lunch"), CallEnded(5.0), 30.0)
    after = transition(wrap, EndWrapUp(ready=False, reason="paperwork"), 31.0)
    assert (after.state, after.reason, after.pending_not_ready, after.call_id) == (
        S.NOT_READY,
        "paperwork",
        None,
        "",
    )


def test_agent_ends_wrap_up_ready_overrides_pending() -> None:
    wrap = transition(agent_in(S.TALKING, pending_not_ready="lunch"), CallEnded(5.0), 30.0)
    after = transition(wrap, EndWrapUp(ready=True), 31.0)
    assert (after.state, after.pending_not_ready) == (S.READY, None)


def test_transition_does_not_mutate_its_input() -> None:
    before = agent_in(S.READY)
    copy = replace(before)
    transition(before, Offer("c1"), 5.0)
    assert before == copy


@given(st.lists(st.sampled_from(ALL_EVENTS), max_size=40), st.floats(0.1, 10))
def test_random_walks_keep_the_agent_consistent(events: list[AgentEvent], step: float) -> None:
    agent = Agent("0101")
    now = 0.0
    for event in events:
        now += step
        try:
            after = transition(agent, event, now)
        except IllegalTransition:
            assert (type(event).__name__, agent.state) not in LEGAL
            continue
        assert (type(event).__name__, agent.state) in LEGAL
        agent = after
        # Owns a call exactly while ringing, talking, held (wrap-up remembers the last one).
        if agent.state in ON_CALL:
            assert agent.call_id
        elif agent.state != S.WRAP_UP:
            assert agent.call_id == ""
        assert (agent.wrap_up_until is not None) == (agent.state == S.WRAP_UP)
        if agent.state in (S.LOGGED_OUT, S.READY, S.NOT_READY):
            assert agent.pending_not_ready is None
        assert agent.idle_since <= now
