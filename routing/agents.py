"""The agent state machine of SPEC §4, as a pure transition function.

`transition(agent, event, now)` returns the agent's next state or raises IllegalTransition;
the site node turns state changes into desktop events. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any


class AgentState(StrEnum):
    LOGGED_OUT = "LOGGED_OUT"
    READY = "READY"
    NOT_READY = "NOT_READY"
    RINGING = "RINGING"
    TALKING = "TALKING"
    HELD = "HELD"
    WRAP_UP = "WRAP_UP"


# States in which the agent owns a call.
ON_CALL = frozenset({AgentState.RINGING, AgentState.TALKING, AgentState.HELD})
LOGGED_IN_IDLE = frozenset({AgentState.READY, AgentState.NOT_READY})

# Reason codes the platform itself sets (desktops add their own, e.g. "lunch", "training").
REASON_LOGIN = "login"
REASON_NO_ANSWER = "no-answer"
REASON_DESKTOP_LOST = "desktop-lost"


@dataclass(frozen=True, slots=True)
class Agent:
    code: str
    state: AgentState = AgentState.LOGGED_OUT
    reason: str = ""
    call_id: str = ""
    # When the current state began.
    since: float = 0.0
    # When the agent last became ready: longest-idle routing serves the smallest first.
    idle_since: float = 0.0
    # Not ready asked for while busy: applied when the call and wrap-up are over.
    pending_not_ready: str | None = None
    # Wrap-up ends by itself at this time (None: no timer).
    wrap_up_until: float | None = None
    calls_handled: int = 0
    last_offered_at: float = 0.0


# Events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogIn:
    pass


@dataclass(frozen=True, slots=True)
class LogOut:
    pass


@dataclass(frozen=True, slots=True)
class SetReady:
    pass


@dataclass(frozen=True, slots=True)
class SetNotReady:
    reason: str


@dataclass(frozen=True, slots=True)
class Offer:
    call_id: str


@dataclass(frozen=True, slots=True)
class RingTimeout:
    pass


@dataclass(frozen=True, slots=True)
class OfferWithdrawn:
    """The ringing call went away (the caller hung up): not the agent's fault."""


@dataclass(frozen=True, slots=True)
class Answer:
    pass


@dataclass(frozen=True, slots=True)
class Hold:
    pass


@dataclass(frozen=True, slots=True)
class Retrieve:
    pass


@dataclass(frozen=True, slots=True)
class TakeOver:
    """A group leader, idle, takes over a connected call (intercept, SPEC F24): talking at once."""

    call_id: str


@dataclass(frozen=True, slots=True)
class CallEnded:
    wrap_up_s: float


@dataclass(frozen=True, slots=True)
class EndWrapUp:
    """The wrap-up timer expired (ready=None: go where pending asks) or the agent ended it."""

    ready: bool | None = None
    reason: str = ""


AgentEvent = (
    LogIn
    | LogOut
    | SetReady
    | SetNotReady
    | Offer
    | RingTimeout
    | OfferWithdrawn
    | Answer
    | Hold
    | Retrieve
    | TakeOver
    | CallEnded
    | EndWrapUp
)


class IllegalTransition(Exception):
    def __init__(self, agent: Agent, event: AgentEvent) -> None:
        super().__init__(f"agent {agent.code}: {type(event).__name__} is not allowed in state {agent.state}")
        self.agent = agent
        self.event = event


_MISSING: Any = object()


def _to(
    agent: Agent,
    state: AgentState,
    now: float,
    *,
    reason: str = _MISSING,
    call_id: str = _MISSING,
    pending_not_ready: str | None = _MISSING,
    wrap_up_until: float | None = _MISSING,
    last_offered_at: float = _MISSING,
    handled: int = _MISSING,
) -> Agent:
    """The agent in `state` from `now`; fields not given are kept. Written out rather than
    dataclasses.replace: this runs for every agent event and replace's generality is costly."""
    a = agent
    return Agent(
        a.code,
        state,
        a.reason if reason is _MISSING else reason,
        a.call_id if call_id is _MISSING else call_id,
        now,
        now if state == AgentState.READY and a.state != AgentState.READY else a.idle_since,
        a.pending_not_ready if pending_not_ready is _MISSING else pending_not_ready,
        a.wrap_up_until if wrap_up_until is _MISSING else wrap_up_until,
        a.calls_handled if handled is _MISSING else handled,
        a.last_offered_at if last_offered_at is _MISSING else last_offered_at,
    )


def _after_call(agent: Agent, now: float) -> Agent:
    """Where an agent goes when a call and its wrap-up are over."""
    if agent.pending_not_ready is not None:
        return _to(
            agent,
            AgentState.NOT_READY,
            now,
            reason=agent.pending_not_ready,
            pending_not_ready=None,
            call_id="",
            wrap_up_until=None,
        )
    return _to(agent, AgentState.READY, now, reason="", call_id="", wrap_up_until=None)


def transition(agent: Agent, event: AgentEvent, now: float) -> Agent:
    """The agent after `event`, or IllegalTransition. Dispatched on the event's type (a dict
    look-up rather than a chain of class patterns: this runs for every agent event)."""
    step = _STEPS.get(type(event))
    after = step(agent, event, now) if step is not None else None
    if after is None:
        raise IllegalTransition(agent, event)
    return after


def _log_in(agent: Agent, event: LogIn, now: float) -> Agent | None:
    if agent.state == AgentState.LOGGED_OUT:
        return _to(agent, AgentState.NOT_READY, now, reason=REASON_LOGIN, pending_not_ready=None)
    return None


def _log_out(agent: Agent, event: LogOut, now: float) -> Agent | None:
    if agent.state in LOGGED_IN_IDLE:
        return _to(agent, AgentState.LOGGED_OUT, now, reason="", call_id="")
    return None


def _set_ready(agent: Agent, event: SetReady, now: float) -> Agent | None:
    s = agent.state
    if s in LOGGED_IN_IDLE:
        return _to(agent, AgentState.READY, now, reason="")
    if s in ON_CALL:
        return replace(agent, pending_not_ready=None)
    if s == AgentState.WRAP_UP:
        return _to(
            agent, AgentState.READY, now, reason="", call_id="", wrap_up_until=None, pending_not_ready=None
        )
    return None


def _set_not_ready(agent: Agent, event: SetNotReady, now: float) -> Agent | None:
    s = agent.state
    if s in LOGGED_IN_IDLE:
        return _to(agent, AgentState.NOT_READY, now, reason=event.reason)
    if s in ON_CALL or s == AgentState.WRAP_UP:
        return replace(agent, pending_not_ready=event.reason)
    return None


def _offer(agent: Agent, event: Offer, now: float) -> Agent | None:
    if agent.state == AgentState.READY:
        return _to(agent, AgentState.RINGING, now, call_id=event.call_id, last_offered_at=now)
    return None


def _ring_timeout(agent: Agent, event: RingTimeout, now: float) -> Agent | None:
    if agent.state == AgentState.RINGING:
        return _to(
            agent, AgentState.NOT_READY, now, reason=REASON_NO_ANSWER, call_id="", pending_not_ready=None
        )
    return None


def _offer_withdrawn(agent: Agent, event: OfferWithdrawn, now: float) -> Agent | None:
    if agent.state != AgentState.RINGING:
        return None
    # Back to ready without losing its place in the idle order.
    if agent.pending_not_ready is not None:
        return _after_call(agent, now)
    return replace(agent, state=AgentState.READY, since=now, call_id="")


def _answer(agent: Agent, event: Answer, now: float) -> Agent | None:
    if agent.state == AgentState.RINGING:
        return _to(agent, AgentState.TALKING, now)
    return None


def _hold(agent: Agent, event: Hold, now: float) -> Agent | None:
    if agent.state == AgentState.TALKING:
        return _to(agent, AgentState.HELD, now)
    return None


def _retrieve(agent: Agent, event: Retrieve, now: float) -> Agent | None:
    if agent.state == AgentState.HELD:
        return _to(agent, AgentState.TALKING, now)
    return None


def _take_over(agent: Agent, event: TakeOver, now: float) -> Agent | None:
    if agent.state in LOGGED_IN_IDLE:
        return _to(agent, AgentState.TALKING, now, call_id=event.call_id, pending_not_ready=None)
    return None


def _call_ended(agent: Agent, event: CallEnded, now: float) -> Agent | None:
    if agent.state not in (AgentState.TALKING, AgentState.HELD):
        return None
    handled = _to(agent, agent.state, agent.since, handled=agent.calls_handled + 1)
    if event.wrap_up_s <= 0:
        return _after_call(handled, now)
    return _to(handled, AgentState.WRAP_UP, now, wrap_up_until=now + event.wrap_up_s)


def _end_wrap_up(agent: Agent, event: EndWrapUp, now: float) -> Agent | None:
    if agent.state != AgentState.WRAP_UP:
        return None
    if event.ready is True:
        return _to(
            agent, AgentState.READY, now, reason="", call_id="", wrap_up_until=None, pending_not_ready=None
        )
    if event.ready is False:
        return _to(
            agent,
            AgentState.NOT_READY,
            now,
            reason=event.reason,
            call_id="",
            wrap_up_until=None,
            pending_not_ready=None,
        )
    return _after_call(agent, now)


_STEPS: dict[type, Callable[[Agent, Any, float], Agent | None]] = {
    LogIn: _log_in,
    LogOut: _log_out,
    SetReady: _set_ready,
    SetNotReady: _set_not_ready,
    Offer: _offer,
    RingTimeout: _ring_timeout,
    OfferWithdrawn: _offer_withdrawn,
    Answer: _answer,
    Hold: _hold,
    Retrieve: _retrieve,
    TakeOver: _take_over,
    CallEnded: _call_ended,
    EndWrapUp: _end_wrap_up,
}
