"""Call records: fold a call's events, from every site it visited, into one record (pure, no I/O).

Events reach central in batches, late, out of order and more than once; folding always starts
again from every stored event of the call, so the record depends on the set of events only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vcc.call_events import CENTRAL_SITE, CallState, EventKind, Outcome

# The contract's enums and central's own site id (its closures: central.lost_sites), for central.
__all__ = ["CENTRAL_SITE", "CallState", "Outcome"]


@dataclass(frozen=True)
class CallEvent:
    """One entry of a call's history as a site wrote it; (call_id, site_id, seq) is its identity."""

    call_id: str
    site_id: str
    seq: int
    kind: EventKind
    at: float
    agent_code: str = ""
    skill_group: str = ""
    ani: str = ""
    dnis: str = ""
    outcome: Outcome = Outcome.UNSPECIFIED
    data: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.call_id, self.site_id, self.seq)


@dataclass(frozen=True)
class CallLeg:
    """The part of a call's journey spent at one site."""

    site_id: str
    first_at: float
    last_at: float
    event_count: int
    # The agent who answered the call at this site, if one did.
    agent_code: str = ""


@dataclass(frozen=True)
class CallRecord:
    call_id: str
    entry_site_id: str
    ani: str
    dnis: str
    skill_group: str
    state: CallState
    outcome: Outcome
    served_site_id: str
    agent_code: str
    arrived_at: float | None
    answered_at: float | None
    ended_at: float | None
    wait_s: float
    talk_s: float
    event_count: int
    # Earliest event time: the listing order while ARRIVED has not reached central yet.
    first_event_at: float
    legs: tuple[CallLeg, ...] = ()
    events: tuple[CallEvent, ...] = ()


# The state a call is in after an event of this kind; kinds not listed leave the state alone.
_STATE_AFTER: dict[EventKind, CallState] = {
    EventKind.ARRIVED: CallState.ARRIVING,
    EventKind.IVR_STARTED: CallState.IVR,
    EventKind.DIGITS: CallState.IVR,
    EventKind.QUEUED: CallState.QUEUED,
    EventKind.RING_NO_ANSWER: CallState.QUEUED,
    EventKind.RINGING: CallState.RINGING,
    EventKind.ANSWERED: CallState.TALKING,
    EventKind.RETRIEVED: CallState.TALKING,
    EventKind.HELD: CallState.HELD,
}
_ENTRY_KINDS = (EventKind.ARRIVED, EventKind.BLOCKED)


def order(events: Iterable[CallEvent]) -> list[CallEvent]:
    """Events in journey order, each once: by time, then site, then the site's sequence number."""
    unique = {e.key: e for e in events}
    return sorted(unique.values(), key=lambda e: (e.at, e.site_id, e.seq))


def fold(events: Iterable[CallEvent]) -> CallRecord:
    """The record of one call from all its events known so far (at least one).

    A BLOCKED call never gets further events, so it counts as ended with outcome BLOCKED even
    when no ENDED event follows it. Several ANSWERED events (a transfer answered elsewhere):
    the first one served the call. Several ENDED events (legs ending at several sites): the
    call ended with the last one. A closure (central's SITE_LOST end of a call its lost city
    left open) is final: the lost city's own events that arrive after it stay in the journey
    but end nothing again. One pass over the journey (central folds every call of every batch
    again).
    """
    journey = order(events)
    if not journey:
        raise ValueError("a call record needs at least one event")
    first = journey[0]
    call_id = first.call_id
    entry: CallEvent | None = None
    answered: CallEvent | None = None
    ended: CallEvent | None = None
    blocked: CallEvent | None = None
    closure: CallEvent | None = None
    origin = ""
    state = CallState.UNSPECIFIED
    # The last ENDED event's outcome that says something, the first ani and dnis, the last skill.
    said = Outcome.UNSPECIFIED
    ani = dnis = skill_group = ""
    # Per site, in the order the call reached them: [first_at, last_at, events, answering agent].
    sites: dict[str, list[Any]] = {}
    for e in journey:
        if e.call_id != call_id:
            several = sorted({x.call_id for x in journey})
            raise ValueError(f"events of several calls folded together: {several}")
        kind = e.kind
        state = _STATE_AFTER.get(kind, state)
        if e.site_id == CENTRAL_SITE:
            leg = None  # central's closure: no leg of the journey
        elif (leg := sites.get(e.site_id)) is None:
            leg = sites[e.site_id] = [e.at, e.at, 0, None]
        if leg is not None:
            leg[1] = e.at
            leg[2] += 1
        if kind is EventKind.ANSWERED:
            if answered is None:
                answered = e
            if leg is not None and leg[3] is None:
                leg[3] = e.agent_code
        elif kind is EventKind.ENDED:
            if closure is None:
                ended = e
                if is_closure(e):
                    closure = e
                elif e.outcome:
                    said = e.outcome
        elif kind is EventKind.BLOCKED and blocked is None:
            blocked = e
        if entry is None and kind in _ENTRY_KINDS:
            entry = e
        if not ani and e.ani:
            ani = e.ani
        if not dnis and e.dnis:
            dnis = e.dnis
        if e.skill_group:
            skill_group = e.skill_group
        if not origin and e.data:
            origin = e.data.get("origin", "")
    if ended is not None or blocked is not None:
        state = CallState.ENDED

    if closure is not None:
        outcome = Outcome.SITE_LOST
    elif ended is not None:
        outcome = said or (
            Outcome.BLOCKED
            if blocked is not None
            else (Outcome.ANSWERED if answered is not None else Outcome.UNSPECIFIED)
        )
    else:
        outcome = Outcome.BLOCKED if blocked is not None else Outcome.UNSPECIFIED
    arrived_at = entry.at if entry is not None else None
    answered_at = answered.at if answered is not None else None
    ended_at = ended.at if ended is not None else (blocked.at if blocked is not None else None)

    wait_s = 0.0
    if arrived_at is not None:
        until = answered_at if answered_at is not None else ended_at
        # Clocks of different sites disagree a little: a wait is never negative.
        wait_s = max(0.0, until - arrived_at) if until is not None else 0.0
    talk_s = max(0.0, ended_at - answered_at) if answered_at is not None and ended_at is not None else 0.0

    return CallRecord(
        call_id=call_id,
        # The caller's city while its own ARRIVED has not reached central: the one a far city's
        # event names as the call's origin (a guest leg's RINGING does), else the first event's.
        entry_site_id=entry.site_id if entry is not None else (origin or first.site_id),
        ani=(entry.ani if entry is not None and entry.ani else ani),
        dnis=(entry.dnis if entry is not None and entry.dnis else dnis),
        skill_group=(answered.skill_group if answered is not None and answered.skill_group else "")
        or skill_group,
        state=state,
        outcome=outcome,
        served_site_id=answered.site_id if answered is not None else "",
        agent_code=answered.agent_code if answered is not None else "",
        arrived_at=arrived_at,
        answered_at=answered_at,
        ended_at=ended_at,
        wait_s=wait_s,
        talk_s=talk_s,
        event_count=len(journey),
        first_event_at=first.at,
        legs=tuple(
            CallLeg(site_id=site, first_at=f, last_at=last, event_count=n, agent_code=agent or "")
            for site, (f, last, n, agent) in sites.items()
        ),
        events=tuple(journey),
    )


def is_closure(e: CallEvent) -> bool:
    """Central's end of a call whose city was lost for good (only central writes SITE_LOST)."""
    return e.kind is EventKind.ENDED and e.outcome is Outcome.SITE_LOST and e.site_id == CENTRAL_SITE
