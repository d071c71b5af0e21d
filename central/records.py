"""Call records: fold a call's events, from every site it visited, into one record (pure, no I/O).

Events reach central in batches, late, out of order and more than once; folding always starts
again from every stored event of the call, so the record depends on the set of events only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

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
    but end nothing again.
    """
    journey = order(events)
    if not journey:
        raise ValueError("a call record needs at least one event")
    call_ids = {e.call_id for e in journey}
    if len(call_ids) != 1:
        raise ValueError(f"events of several calls folded together: {sorted(call_ids)}")

    entry = _first(journey, *_ENTRY_KINDS)
    answered = _first(journey, EventKind.ANSWERED)
    closure = next((e for e in journey if is_closure(e)), None)
    ended = closure if closure is not None else _last(journey, EventKind.ENDED)
    blocked = _first(journey, EventKind.BLOCKED)

    state = CallState.UNSPECIFIED
    for e in journey:
        state = _STATE_AFTER.get(e.kind, state)
    if ended is not None or blocked is not None:
        state = CallState.ENDED

    outcome = Outcome.SITE_LOST if closure is not None else _outcome(journey, ended, blocked, answered)
    arrived_at = entry.at if entry is not None else None
    answered_at = answered.at if answered is not None else None
    ended_at = ended.at if ended is not None else (blocked.at if blocked is not None else None)

    wait_s = 0.0
    if arrived_at is not None:
        until = answered_at if answered_at is not None else ended_at
        # Clocks of different sites disagree a little: a wait is never negative.
        wait_s = max(0.0, until - arrived_at) if until is not None else 0.0
    talk_s = max(0.0, ended_at - answered_at) if answered_at is not None and ended_at is not None else 0.0

    first = journey[0]
    return CallRecord(
        call_id=first.call_id,
        entry_site_id=entry.site_id if entry is not None else _origin(journey),
        ani=_first_value(journey, "ani", entry),
        dnis=_first_value(journey, "dnis", entry),
        skill_group=(answered.skill_group if answered is not None and answered.skill_group else "")
        or _last_value(journey, "skill_group"),
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
        legs=legs(journey),
        events=tuple(journey),
    )


def legs(journey: list[CallEvent]) -> tuple[CallLeg, ...]:
    """One leg per site the call visited, in the order the call reached them."""
    by_site: dict[str, list[CallEvent]] = {}
    for e in journey:
        if e.site_id == CENTRAL_SITE:
            continue  # central's closure: no leg of the journey
        by_site.setdefault(e.site_id, []).append(e)
    result = []
    for site_id, site_events in by_site.items():
        answered = _first(site_events, EventKind.ANSWERED)
        result.append(
            CallLeg(
                site_id=site_id,
                first_at=site_events[0].at,
                last_at=site_events[-1].at,
                event_count=len(site_events),
                agent_code=answered.agent_code if answered is not None else "",
            )
        )
    return tuple(result)


def _origin(journey: list[CallEvent]) -> str:
    """The caller's city while its own ARRIVED has not reached central: the one a far city's
    event names as the call's origin (a guest leg's RINGING does), else the first event's site.
    (A city killed before its outbox shipped anything then still holds its open calls.)"""
    return next((e.data["origin"] for e in journey if e.data.get("origin")), journey[0].site_id)


def is_closure(e: CallEvent) -> bool:
    """Central's end of a call whose city was lost for good (only central writes SITE_LOST)."""
    return e.kind is EventKind.ENDED and e.outcome is Outcome.SITE_LOST and e.site_id == CENTRAL_SITE


def _outcome(
    journey: list[CallEvent], ended: CallEvent | None, blocked: CallEvent | None, answered: CallEvent | None
) -> Outcome:
    if ended is not None:
        if ended.outcome:
            return ended.outcome
        # The last ENDED said nothing; an earlier leg's ENDED may have.
        for e in reversed(journey):
            if e.kind is EventKind.ENDED and e.outcome:
                return e.outcome
        if blocked is not None:
            return Outcome.BLOCKED
        return Outcome.ANSWERED if answered is not None else Outcome.UNSPECIFIED
    if blocked is not None:
        return Outcome.BLOCKED
    return Outcome.UNSPECIFIED


def _first(events: list[CallEvent], *kinds: EventKind) -> CallEvent | None:
    return next((e for e in events if e.kind in kinds), None)


def _last(events: list[CallEvent], *kinds: EventKind) -> CallEvent | None:
    return next((e for e in reversed(events) if e.kind in kinds), None)


def _first_value(journey: list[CallEvent], attr: str, preferred: CallEvent | None) -> str:
    if preferred is not None and getattr(preferred, attr):
        return str(getattr(preferred, attr))
    return next((str(getattr(e, attr)) for e in journey if getattr(e, attr)), "")


def _last_value(journey: list[CallEvent], attr: str) -> str:
    return next((str(getattr(e, attr)) for e in reversed(journey) if getattr(e, attr)), "")
