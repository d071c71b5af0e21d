"""Domain <-> protobuf, at the edge of the site node."""

from __future__ import annotations

from routing.agents import Agent
from site_node.callcontrol.domain import CustomerInfo, Outcome, RecordedEvent, ToAgent, ToCaller
from vcc.call_events import EventKind
from vcc.rpc import timestamp
from vcc.v1 import common_pb2, cti_pb2, trunk_pb2

_OUTCOME = {
    None: common_pb2.CALL_OUTCOME_UNSPECIFIED,
    Outcome.ANSWERED: common_pb2.CALL_OUTCOME_ANSWERED,
    Outcome.ABANDONED: common_pb2.CALL_OUTCOME_ABANDONED,
    Outcome.BLOCKED: common_pb2.CALL_OUTCOME_BLOCKED,
    Outcome.FAILED: common_pb2.CALL_OUTCOME_FAILED,
    Outcome.SELF_SERVED: common_pb2.CALL_OUTCOME_SELF_SERVED,
}


def outcome_to_proto(outcome: Outcome | None) -> common_pb2.CallOutcome.ValueType:
    return _OUTCOME[outcome]


# Looked up once, not by name at every event.
_KIND = {k: common_pb2.CallEventKind.Value(f"CALL_EVENT_KIND_{k.value}") for k in EventKind}


def event_to_proto(e: RecordedEvent) -> common_pb2.CallEvent:
    # Fields set in place: no Timestamp or map built apart and copied in (half the CPU).
    msg = common_pb2.CallEvent(
        call_id=e.call_id,
        site_id=e.site_id,
        seq=e.seq,
        kind=_KIND[e.kind],
        agent_code=e.agent_code,
        skill_group=e.skill_group,
        ani=e.ani,
        dnis=e.dnis,
        outcome=_OUTCOME[e.outcome],
    )
    msg.at.FromNanoseconds(round(e.at * 1e9))
    if e.data:
        msg.data.update(e.data)
    return msg


def customer_to_proto(c: CustomerInfo | None) -> common_pb2.Customer:
    if c is None:
        return common_pb2.Customer()
    return common_pb2.Customer(
        customer_id=c.customer_id, name=c.name, phone=c.phone, level=c.level, city=c.city, notes=c.notes
    )


def customer_from_proto(c: common_pb2.Customer) -> CustomerInfo:
    return CustomerInfo(c.customer_id, c.name, c.phone, c.level, c.city, c.notes)


def caller_update_to_proto(u: ToCaller) -> trunk_pb2.PlaceCallResponse:
    msg = trunk_pb2.PlaceCallResponse(call_id=u.call_id, at=timestamp(u.at))
    match u.kind:
        case "accepted":
            msg.accepted.CopyFrom(trunk_pb2.CallAccepted(site_id=u.site_id, trunk_group=u.trunk_group))
        case "prompt":
            msg.prompt.CopyFrom(
                trunk_pb2.IvrPrompt(
                    prompt=u.prompt, choices=u.choices, timeout_s=u.timeout_s, text=u.text,
                    collect=u.collect, max_digits=u.max_digits, flow_id=u.flow_id,
                    flow_version=u.flow_version,
                )
            )  # fmt: skip
        case "queued":
            msg.queued.CopyFrom(
                trunk_pb2.CallQueued(
                    skill_group=u.skill_group, position=u.position, expected_wait_s=u.expected_wait_s
                )
            )
        case "ringing":
            msg.ringing.CopyFrom(trunk_pb2.CallRinging(site_id=u.site_id, agent_code=u.agent_code))
        case "connected":
            msg.connected.CopyFrom(trunk_pb2.CallConnected(site_id=u.site_id, agent_code=u.agent_code))
        case "held":
            msg.held.SetInParent()
        case "retrieved":
            msg.retrieved.SetInParent()
        case "transferred":
            msg.transferred.CopyFrom(
                trunk_pb2.CallTransferred(
                    to_site_id=u.site_id, to_agent_code=u.agent_code, to_skill_group=u.skill_group
                )
            )
        case "ended":
            msg.ended.CopyFrom(trunk_pb2.CallEnded(outcome=_OUTCOME[u.outcome], reason=u.reason))
        case "voicemail":
            msg.voicemail.CopyFrom(
                trunk_pb2.CallVoicemail(message_id=u.message_id, skill_group=u.skill_group, max_s=u.timeout_s)
            )
        case _:
            raise ValueError(f"unknown caller update {u.kind!r}")
    return msg


def snapshot_to_proto(agent: Agent, name: str, site_id: str, skills: dict[str, int]) -> cti_pb2.AgentSnapshot:
    return cti_pb2.AgentSnapshot(
        agent_code=agent.code,
        name=name,
        site_id=site_id,
        state=common_pb2.AgentState.Value(f"AGENT_STATE_{agent.state.value}"),
        reason_code=agent.reason,
        call_id=agent.call_id,
        skills=skills,
        state_since=timestamp(agent.since),
    )


def agent_update_to_proto(u: ToAgent, snapshot: cti_pb2.AgentSnapshot) -> cti_pb2.StreamEventsResponse:
    msg = cti_pb2.StreamEventsResponse(at=timestamp(u.at))
    match u.kind:
        case "state":
            msg.state_changed.CopyFrom(cti_pb2.AgentStateChanged(agent=snapshot))
        case "offered":
            msg.call_offered.CopyFrom(
                cti_pb2.CallOffered(
                    call_id=u.call_id,
                    ani=u.ani,
                    dnis=u.dnis,
                    skill_group=u.skill_group,
                    entry_site_id=u.entry_site_id,
                    attached_data=dict(u.attached),
                    customer=customer_to_proto(u.customer),
                    ring_timeout_s=u.ring_timeout_s,
                    waited_s=u.waited_s,
                    purpose=u.purpose,
                    from_agent_code=u.from_agent_code,
                )
            )
        case "withdrawn":
            msg.call_offer_withdrawn.CopyFrom(cti_pb2.CallOfferWithdrawn(call_id=u.call_id, reason=u.reason))
        case "connected":
            msg.call_connected.CopyFrom(cti_pb2.AgentCallConnected(call_id=u.call_id))
        case "held":
            msg.call_held.CopyFrom(cti_pb2.AgentCallHeld(call_id=u.call_id))
        case "retrieved":
            msg.call_retrieved.CopyFrom(
                cti_pb2.AgentCallRetrieved(call_id=u.call_id, ivr_results=dict(u.attached))
            )
        case "ended":
            msg.call_ended.CopyFrom(
                cti_pb2.AgentCallEnded(call_id=u.call_id, reason=u.reason, wrap_up_s=u.wrap_up_s)
            )
        case "transfer":
            msg.transfer.CopyFrom(
                cti_pb2.TransferProgress(
                    call_id=u.call_id,
                    stage=u.stage,
                    agent_code=u.other_agent_code,
                    site_id=u.site_id,
                    reason=u.reason,
                )
            )
        case "callback_preview":
            extra = dict(u.attached)
            msg.callback_preview.CopyFrom(
                cti_pb2.CallbackPreview(
                    callback_id=extra.get("callback_id", ""), stage=u.stage, number=u.ani,
                    skill_group=u.skill_group, reason=u.reason, call_id=u.call_id,
                    attempt=int(extra.get("attempt", "0")), timeout_s=float(extra.get("timeout_s", "0")),
                )
            )  # fmt: skip
        case _:
            raise ValueError(f"unknown agent update {u.kind!r}")
    return msg
