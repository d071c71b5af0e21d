"""Protobuf at the edge: vcc.v1 messages to and from central's dataclasses."""

from __future__ import annotations

from central.customers import Customer
from central.records import CallEvent, CallRecord, EventKind, Outcome
from vcc.rpc import timestamp, unix_s
from vcc.v1 import central_pb2, common_pb2

_KIND_PREFIX = "CALL_EVENT_KIND_"
_STATE_PREFIX = "CALL_STATE_"
_OUTCOME_PREFIX = "CALL_OUTCOME_"


def event_from_proto(msg: common_pb2.CallEvent) -> CallEvent:
    """A validated event (kind specified); see central.validation."""
    outcome_name = common_pb2.CallOutcome.Name(msg.outcome).removeprefix(_OUTCOME_PREFIX)
    return CallEvent(
        call_id=msg.call_id,
        site_id=msg.site_id,
        seq=msg.seq,
        kind=EventKind(common_pb2.CallEventKind.Name(msg.kind).removeprefix(_KIND_PREFIX)),
        at=unix_s(msg.at),
        agent_code=msg.agent_code,
        skill_group=msg.skill_group,
        ani=msg.ani,
        dnis=msg.dnis,
        outcome=Outcome.UNSPECIFIED if outcome_name == "UNSPECIFIED" else Outcome(outcome_name),
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


def record_to_proto(r: CallRecord) -> central_pb2.CallRecord:
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
    )
    if r.arrived_at is not None:
        msg.arrived_at.CopyFrom(timestamp(r.arrived_at))
    if r.answered_at is not None:
        msg.answered_at.CopyFrom(timestamp(r.answered_at))
    if r.ended_at is not None:
        msg.ended_at.CopyFrom(timestamp(r.ended_at))
    return msg


def customer_to_proto(c: Customer) -> common_pb2.Customer:
    return common_pb2.Customer(
        customer_id=c.customer_id, name=c.name, phone=c.phone, level=c.level, city=c.city, notes=c.notes
    )


def _outcome(o: Outcome) -> common_pb2.CallOutcome.ValueType:
    return common_pb2.CallOutcome.Value(_OUTCOME_PREFIX + (o.value or "UNSPECIFIED"))
