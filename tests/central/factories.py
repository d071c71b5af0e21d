"""Builders of call events for central's tests."""

from __future__ import annotations

from central.records import CallEvent, EventKind, Outcome

T0 = 1_700_000_000.0


def ev(
    kind: EventKind,
    at: float,
    seq: int,
    *,
    call_id: str = "c1",
    site: str = "gz",
    agent: str = "",
    skill: str = "",
    ani: str = "",
    dnis: str = "",
    outcome: Outcome = Outcome.UNSPECIFIED,
    data: dict[str, str] | None = None,
) -> CallEvent:
    return CallEvent(
        call_id=call_id,
        site_id=site,
        seq=seq,
        kind=kind,
        at=T0 + at,
        agent_code=agent,
        skill_group=skill,
        ani=ani,
        dnis=dnis,
        outcome=outcome,
        data=data or {},
    )


def answered_call(call_id: str = "c1", site: str = "gz", start: float = 0.0) -> list[CallEvent]:
    """A whole call at one site: IVR, queue, ring, answer by agent 0101, hang-up."""
    K = EventKind
    return [
        ev(K.ARRIVED, start + 0.0, 1, call_id=call_id, site=site, ani="13800000001", dnis="10000"),
        ev(K.IVR_STARTED, start + 0.1, 2, call_id=call_id, site=site),
        ev(K.DIGITS, start + 1.0, 3, call_id=call_id, site=site, data={"digits": "1"}),
        ev(K.QUEUED, start + 1.1, 4, call_id=call_id, site=site, skill="general"),
        ev(K.RINGING, start + 2.0, 5, call_id=call_id, site=site, agent="0101", skill="general"),
        ev(K.ANSWERED, start + 3.0, 6, call_id=call_id, site=site, agent="0101", skill="general"),
        ev(K.AGENT_HUNG_UP, start + 30.0, 7, call_id=call_id, site=site, agent="0101"),
        ev(K.ENDED, start + 30.0, 8, call_id=call_id, site=site, outcome=Outcome.ANSWERED),
    ]


def overflowed_call(call_id: str = "c2") -> list[CallEvent]:
    """Enters at gz, waits, is carried to sz and answered there; the trunk leg at gz ends it."""
    K = EventKind
    return [
        ev(K.ARRIVED, 0.0, 1, call_id=call_id, site="gz", ani="13800000002", dnis="10000"),
        ev(K.QUEUED, 0.5, 2, call_id=call_id, site="gz", skill="general"),
        ev(K.TRANSFERRED, 4.0, 3, call_id=call_id, site="gz", data={"to": "sz"}),
        ev(K.QUEUED, 4.1, 1, call_id=call_id, site="sz", skill="billing"),
        ev(K.RINGING, 4.2, 2, call_id=call_id, site="sz", agent="0201", skill="billing"),
        ev(K.ANSWERED, 5.0, 3, call_id=call_id, site="sz", agent="0201", skill="billing"),
        ev(K.CALLER_HUNG_UP, 65.0, 4, call_id=call_id, site="sz", agent="0201"),
        ev(K.ENDED, 65.0, 4, call_id=call_id, site="gz", outcome=Outcome.ANSWERED),
    ]
