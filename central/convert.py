"""Protobuf at the edge: vcc.v1 messages to and from central's dataclasses."""

from __future__ import annotations

from collections.abc import Sequence

from central.customers import Customer
from central.live_state import Health, SiteState
from central.records import CallEvent, CallRecord, Outcome
from central.store import RecordedDecision
from routing.global_router import SiteSnapshot, SkillState
from vcc.call_events import EventKind
from vcc.rpc import timestamp, unix_s
from vcc.v1 import central_pb2, common_pb2, site_admin_pb2

# Resource kinds of a SiteSummary that are boards (media channels), not trunks.
BOARD_KINDS = frozenset({"ivr", "fax", "recording", "conference"})
TIE_PREFIX = "tie:"

_KIND_PREFIX = "CALL_EVENT_KIND_"
_STATE_PREFIX = "CALL_STATE_"
_OUTCOME_PREFIX = "CALL_OUTCOME_"


# Proto enum numbers to ours, built once (Name() and the string work at each event were not free).
_KIND_OF = {
    n: EventKind(common_pb2.CallEventKind.Name(n).removeprefix(_KIND_PREFIX))
    for n in common_pb2.CallEventKind.values()
    if n != common_pb2.CALL_EVENT_KIND_UNSPECIFIED
}
_OUTCOME_OF = {
    n: Outcome(name)
    if (name := common_pb2.CallOutcome.Name(n).removeprefix(_OUTCOME_PREFIX)) != "UNSPECIFIED"
    else Outcome.UNSPECIFIED
    for n in common_pb2.CallOutcome.values()
}


def event_from_proto(msg: common_pb2.CallEvent) -> CallEvent:
    """A validated event (kind specified); see central.validation."""
    return CallEvent(
        call_id=msg.call_id,
        site_id=msg.site_id,
        seq=msg.seq,
        kind=_KIND_OF[msg.kind],
        at=unix_s(msg.at),
        agent_code=msg.agent_code,
        skill_group=msg.skill_group,
        ani=msg.ani,
        dnis=msg.dnis,
        outcome=_OUTCOME_OF[msg.outcome],
        data=dict(msg.data),
    )


def event_to_proto(e: CallEvent) -> common_pb2.CallEvent:
    return common_pb2.CallEvent(
        call_id=e.call_id,
        site_id=e.site_id,
        seq=e.seq,
        kind=common_pb2.CallEventKind.Value(_KIND_PREFIX + e.kind.value),
        at=timestamp(e.at),
        agent_code=e.agent_code,
        skill_group=e.skill_group,
        ani=e.ani,
        dnis=e.dnis,
        outcome=_outcome(e.outcome),
        data=dict(e.data),
    )


def record_to_proto(r: CallRecord, decisions: Sequence[RecordedDecision] = ()) -> central_pb2.CallRecord:
    msg = central_pb2.CallRecord(
        call_id=r.call_id,
        entry_site_id=r.entry_site_id,
        ani=r.ani,
        dnis=r.dnis,
        skill_group=r.skill_group,
        state=common_pb2.CallState.Value(_STATE_PREFIX + (r.state.value or "UNSPECIFIED")),
        outcome=_outcome(r.outcome),
        served_site_id=r.served_site_id,
        agent_code=r.agent_code,
        wait_s=r.wait_s,
        talk_s=r.talk_s,
        event_count=r.event_count,
        events=[event_to_proto(e) for e in r.events],
        decisions=[decision_to_proto(d) for d in decisions],
    )
    if r.arrived_at is not None:
        msg.arrived_at.CopyFrom(timestamp(r.arrived_at))
    if r.answered_at is not None:
        msg.answered_at.CopyFrom(timestamp(r.answered_at))
    if r.ended_at is not None:
        msg.ended_at.CopyFrom(timestamp(r.ended_at))
    return msg


def customer_to_proto(c: Customer) -> common_pb2.Customer:
    msg = common_pb2.Customer(
        customer_id=c.customer_id,
        name=c.name,
        phone=c.phone,
        level=c.level,
        city=c.city,
        notes=c.notes,
        account=c.account,
        address=c.address,
        email=c.email,
        phones=list(c.numbers),
        version=c.version,
    )
    if c.updated_at:
        msg.updated_at.CopyFrom(timestamp(c.updated_at))
    return msg


def _outcome(o: Outcome) -> common_pb2.CallOutcome.ValueType:
    return common_pb2.CallOutcome.Value(_OUTCOME_PREFIX + (o.value or "UNSPECIFIED"))


def decision_to_proto(r: RecordedDecision) -> central_pb2.RoutingDecision:
    d = r.decision
    return central_pb2.RoutingDecision(
        decision_id=r.decision_id,
        call_id=r.call_id,
        origin_site_id=d.origin,
        target_site_id=d.target,
        mode=d.mode,
        reason=d.reason,
        skill_group=d.skill_group,
        at=timestamp(r.at),
        candidates=[
            central_pb2.SiteCandidate(
                site_id=c.site_id,
                up=c.up,
                state_age_s=c.state_age_s,
                ready_agents=c.ready_agents,
                calls_waiting=c.calls_waiting,
                expected_wait_s=c.expected_wait_s,
                free_tie_channels=c.free_tie_channels,
                free_board_channels=c.free_board_channels,
                eligible=c.eligible,
                note=c.note,
            )
            for c in d.candidates
        ],
    )


def site_snapshot(state: SiteState) -> SiteSnapshot:
    """What the routing policy sees of a site; a site with no summary has nothing to offer."""
    age = state.age_s if state.age_s is not None else float("inf")
    # Stale (silent, or its stream just broke) is not routed to: only a site known to be up is.
    up = state.health is Health.UP
    if state.summary is None:
        return SiteSnapshot(site_id=state.site_id, up=up, state_age_s=age)
    return summary_snapshot(state.summary, state.site_id, up, age)


def summary_snapshot(
    summary: site_admin_pb2.SiteSummary, site_id: str, up: bool, age_s: float
) -> SiteSnapshot:
    skills = {
        g.skill_group: SkillState(
            ready_agents=g.agents_ready,
            logged_in=g.agents_logged_in,
            calls_waiting=g.calls_waiting,
            oldest_wait_s=g.oldest_wait_s,
            longest_idle_s=g.longest_idle_s,
            expected_wait_s=max(0.0, g.expected_wait_s),
        )
        for g in summary.skill_groups
    }
    free_tie: dict[str, int] = {}
    free_trunk = free_board = 0
    for r in summary.resources:
        free = max(0, r.total - r.busy)
        if r.kind == "tie" or r.id.startswith(TIE_PREFIX):
            peer = r.id.removeprefix(TIE_PREFIX)
            free_tie[peer] = free_tie.get(peer, 0) + free
        elif r.kind == "trunk":
            free_trunk += free
        elif r.kind in BOARD_KINDS:
            free_board += free
    return SiteSnapshot(
        site_id=site_id,
        up=up,
        state_age_s=age_s,
        skills=skills,
        free_tie=free_tie,
        free_trunk=free_trunk,
        free_board=free_board,
    )
