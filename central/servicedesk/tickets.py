"""Tickets (投诉单/工单): the pure state machine, categories and their due times.

`transition(facts, event, now) -> (new_facts, effects)`: no clock, no I/O. The store runs it
inside the ticket's transaction and carries out the effects (entries, notifications).

    new ─dispatch→ assigned ─start→ in_progress ─reply→ replied ─close→ closed
     └──────reply──────┴──────────────────────────┘        │              │
    reopened ←──────────────reopen─────────────────────────┴──────────────┘
    (reopened goes on like new: dispatch, start or reply)

`escalate` raises the escalation level of an overdue open ticket once per overdue episode
(a reopen starts a new episode with a new due time).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, replace
from enum import StrEnum

from vcc.errors import FailedPrecondition, InvalidArgument, NotFound


class TicketState(StrEnum):
    NEW = "new"
    ASSIGNED = "assigned"
    IN_PROGRESS = "in_progress"
    REPLIED = "replied"
    CLOSED = "closed"
    REOPENED = "reopened"


class Category(StrEnum):
    COMPLAINT = "complaint"
    SUGGESTION = "suggestion"
    INQUIRY = "inquiry"
    WORK_ORDER = "work_order"


HOUR_S = 3600.0
# Defaults of the province's service commitments; central's settings may change each one.
DEFAULT_DUE_S: dict[Category, float] = {
    Category.COMPLAINT: 48 * HOUR_S,
    Category.SUGGESTION: 7 * 24 * HOUR_S,
    Category.INQUIRY: 24 * HOUR_S,
    Category.WORK_ORDER: 72 * HOUR_S,
}
# Still waiting for the unit: these count as open, and can fall overdue.
OPEN_STATES = frozenset(
    {TicketState.NEW, TicketState.ASSIGNED, TicketState.IN_PROGRESS, TicketState.REOPENED}
)


@dataclass(frozen=True)
class TicketFacts:
    """What the transitions read and change (the rest of a ticket is inert data)."""

    state: TicketState
    unit: str
    due_at: float
    escalation: int = 0
    replied_at: float | None = None
    closed_at: float | None = None
    reopen_count: int = 0


# -- events -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dispatch:
    unit: str


@dataclass(frozen=True)
class Start:
    pass


@dataclass(frozen=True)
class Reply:
    pass


@dataclass(frozen=True)
class Close:
    pass


@dataclass(frozen=True)
class Reopen:
    # The new episode's due time (the caller adds the category's due time to now).
    due_at: float


@dataclass(frozen=True)
class Escalate:
    pass


Event = Dispatch | Start | Reply | Close | Reopen | Escalate

# -- effects ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transitioned:
    """Recorded in the ticket's entries and logged once: `from -[event]-> to`."""

    from_state: TicketState
    to_state: TicketState
    event: str


@dataclass(frozen=True)
class NotifyCustomer:
    """The reply goes to the customer (the store queues it in the notification outbox)."""


@dataclass(frozen=True)
class Escalated:
    level: int
    unit: str
    overdue_s: float


Effect = Transitioned | NotifyCustomer | Escalated


class BadTransition(FailedPrecondition):
    def __init__(self, state: TicketState, event: str) -> None:
        super().__init__("bad-transition", f"a ticket in state {state.value} cannot take {event}")


def event_name(event: Event) -> str:
    return type(event).__name__.lower()


_TARGET: dict[type[Event], tuple[frozenset[TicketState], TicketState]] = {
    Dispatch: (
        frozenset({TicketState.NEW, TicketState.ASSIGNED, TicketState.IN_PROGRESS, TicketState.REOPENED}),
        TicketState.ASSIGNED,
    ),
    Start: (frozenset({TicketState.ASSIGNED, TicketState.REOPENED}), TicketState.IN_PROGRESS),
    Reply: (OPEN_STATES, TicketState.REPLIED),
    Close: (frozenset({TicketState.REPLIED}), TicketState.CLOSED),
    Reopen: (frozenset({TicketState.REPLIED, TicketState.CLOSED}), TicketState.REOPENED),
}


def transition(facts: TicketFacts, event: Event, now: float) -> tuple[TicketFacts, list[Effect]]:
    """The ticket after `event` at `now`, and what must follow; BadTransition when not allowed."""
    if isinstance(event, Escalate):
        return _escalate(facts, now)
    allowed, target = _TARGET[type(event)]
    if facts.state not in allowed:
        raise BadTransition(facts.state, event_name(event))
    new = replace(facts, state=target)
    effects: list[Effect] = [Transitioned(facts.state, target, event_name(event))]
    if isinstance(event, Dispatch):
        if not event.unit:
            raise InvalidArgument("missing-unit", "unit: required to dispatch")
        new = replace(new, unit=event.unit)
    elif isinstance(event, Reply):
        new = replace(new, replied_at=now)
        effects.append(NotifyCustomer())
    elif isinstance(event, Close):
        new = replace(new, closed_at=now)
    elif isinstance(event, Reopen):
        if event.due_at <= now:
            raise InvalidArgument("bad-due-time", "a reopened ticket's due time is after now")
        # A new episode: its own due time and escalation; the reply and closing are history.
        new = replace(
            new,
            due_at=event.due_at,
            escalation=0,
            replied_at=None,
            closed_at=None,
            reopen_count=facts.reopen_count + 1,
        )
    return new, effects


def _escalate(facts: TicketFacts, now: float) -> tuple[TicketFacts, list[Effect]]:
    """Nothing to do (no effects) unless the ticket is open, overdue and not yet escalated."""
    if not is_overdue(facts, now) or facts.escalation > 0:
        return facts, []
    level = facts.escalation + 1
    return replace(facts, escalation=level), [Escalated(level, facts.unit, now - facts.due_at)]


def is_overdue(facts: TicketFacts, now: float) -> bool:
    return facts.state in OPEN_STATES and now > facts.due_at


def due_at(category: Category, created_at: float, due_s: dict[Category, float] | None = None) -> float:
    return created_at + (due_s or DEFAULT_DUE_S)[category]


UNIT = re.compile(r"(city|dept):[a-z0-9][a-z0-9_-]{0,31}")


def check_unit(unit: str, sites: Collection[str]) -> None:
    """A unit is a city (a site of the province) or a department of the back office."""
    if not UNIT.fullmatch(unit):
        raise InvalidArgument("bad-unit", "unit: city:<site id> or dept:<name> (a-z 0-9 _ -)")
    kind, name = unit.split(":", 1)
    if kind == "city" and name not in sites:
        raise NotFound("unknown-unit", f"unit: no site {name!r} in the province")
