"""The agent state machine of SPEC §4, as a pure transition function.

`transition(agent, event, now)` returns the agent's next state or raises IllegalTransition;
the site node turns state changes into desktop events. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

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
        a.calls_handled,
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
    s = agent.state
    match event:
        case LogIn() if s == AgentState.LOGGED_OUT:
            return _to(agent, AgentState.NOT_READY, now, reason=REASON_LOGIN, pending_not_ready=None)
        case LogOut() if s in LOGGED_IN_IDLE:
            return _to(agent, AgentState.LOGGED_OUT, now, reason="", call_id="")
        case SetReady() if s in LOGGED_IN_IDLE:
            return _to(agent, AgentState.READY, now, reason="")
        case SetReady() if s in ON_CALL:
            return replace(agent, pending_not_ready=None)
        case SetReady() if s == AgentState.WRAP_UP:
            return _to(
                agent,
                AgentState.READY,
                now,
                reason="",
                call_id="",
                wrap_up_until=None,
                pending_not_ready=None,
            )
        case SetNotReady(reason) if s in LOGGED_IN_IDLE:
            return _to(agent, AgentState.NOT_READY, now, reason=reason)
        case SetNotReady(reason) if s in ON_CALL or s == AgentState.WRAP_UP:
            return replace(agent, pending_not_ready=reason)
        case Offer(call_id) if s == AgentState.READY:
            return _to(agent, AgentState.RINGING, now, call_id=call_id, last_offered_at=now)
        case RingTimeout() if s == AgentState.RINGING:
            return _to(
                agent, AgentState.NOT_READY, now, reason=REASON_NO_ANSWER, call_id="", pending_not_ready=None
            )
        case OfferWithdrawn() if s == AgentState.RINGING:
            # Back to ready without losing its place in the idle order.
            if agent.pending_not_ready is not None:
                return _after_call(agent, now)
            return replace(agent, state=AgentState.READY, since=now, call_id="")
        case Answer() if s == AgentState.RINGING:
            return _to(agent, AgentState.TALKING, now)
        case Hold() if s == AgentState.TALKING:
            return _to(agent, AgentState.HELD, now)
        case Retrieve() if s == AgentState.HELD:
            return _to(agent, AgentState.TALKING, now)
        case CallEnded(wrap_up_s) if s in (AgentState.TALKING, AgentState.HELD):
            handled = replace(agent, calls_handled=agent.calls_handled + 1)
            if wrap_up_s <= 0:
                return _after_call(handled, now)
            return _to(handled, AgentState.WRAP_UP, now, wrap_up_until=now + wrap_up_s)
        case EndWrapUp(ready, reason) if s == AgentState.WRAP_UP:
            if ready is True:
                return _to(
                    agent,
                    AgentState.READY,
                    now,
                    reason="",
                    call_id="",
                    wrap_up_until=None,
                    pending_not_ready=None,
                )
            if ready is False:
                return _to(
                    agent,
                    AgentState.NOT_READY,
                    now,
                    reason=reason,
                    call_id="",
                    wrap_up_until=None,
                    pending_not_ready=None,
                )
            return _after_call(agent, now)
    raise IllegalTransition(agent, event)
