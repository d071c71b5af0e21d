"""The call control running IVR flows (pure, time given): prompts as caller progress, keys, a
look-up answered, timed out and late, a queue with priority and its announcements, the maximum
wait leading to a callback, voicemail, the closed message, and a version pushed mid-call."""

from __future__ import annotations

from typing import Any

import pytest

from site_node.callcontrol import Switchboard
from site_node.callcontrol.domain import Effect, IvrLookup, Journal, Outcome, ToCaller
from tests.ivr.flows import as_yaml, small
from tests.site_node.test_switchboard import SERVICE, sequential_ids, site_config
from vcc.call_events import EventKind
from vcc.ivr.flow import Flow
from vcc.ivr.validate import load_flow

NUMBER = "95566"


def flow_of(data: dict[str, Any]) -> Flow:
    return load_flow(as_yaml(data))


class Book:
    def __init__(self, flows: dict[str, Flow]) -> None:
        self.flows = flows

    def for_number(self, number: str) -> tuple[str, Flow] | None:
        flow = self.flows.get("current")
        return ("svc", flow) if number == NUMBER and flow is not None else None

    def named(self, flow_id: str) -> Flow | None:
        return self.flows.get(flow_id)


def board(flows: dict[str, Flow]) -> Switchboard:
    source = Book(flows)

    groups = [{"id": g} for g in ("general", "billing", "parcel", "complaints")]
    return Switchboard(site_config(skill_groups=groups), SERVICE, new_call_id=sequential_ids(), flows=source)


def heard(effects: list[Effect]) -> list[str]:
    return [e.prompt for e in effects if isinstance(e, ToCaller) and e.kind == "prompt" and e.prompt]


def kinds(effects: list[Effect]) -> list[EventKind]:
    return [e.event.kind for e in effects if isinstance(e, Journal)]


def ended(effects: list[Effect]) -> ToCaller | None:
    return next((e for e in effects if isinstance(e, ToCaller) and e.kind == "ended"), None)


def offer(sb: Switchboard, now: float = 0.0, dnis: str = NUMBER) -> tuple[str, list[Effect]]:
    return sb.offer(now, idempotency_key=f"k{now}", ani="13800000001", dnis=dnis)


def test_a_menu_key_queues_with_the_flows_priority_and_other_numbers_keep_the_one_menu() -> None:
    data = small()
    data["nodes"]["a_queue"]["priority"] = 3
    sb = board({"current": flow_of(data)})
    call_id, fx = offer(sb)
    assert heard(fx) == ["main", "a", "b"]
    assert any(isinstance(e, ToCaller) and e.collect for e in fx)
    started = next(e.event for e in fx if isinstance(e, Journal) and e.event.kind == EventKind.IVR_STARTED)
    assert dict(started.data) == {"flow": "small", "version": "1", "service": "svc"}
    fx = sb.caller_digits(1.0, call_id, "1")
    assert heard(fx) == ["hold"]
    assert kinds(fx) == [EventKind.DIGITS, EventKind.IVR_ENDED, EventKind.QUEUED]
    call = sb.calls[call_id]
    assert (call.skill_group, call.priority) == ("parcel", 3)
    _, fx = offer(sb, 2.0, dnis=SERVICE)
    assert [e.prompt for e in fx if isinstance(e, ToCaller) and e.kind == "prompt"] == [sb.site.ivr.prompt]


def test_a_lookup_answered_timed_out_and_late() -> None:
    data = small()
    data["start"] = "who"
    data["nodes"]["who"] = {
        "kind": "lookup", "name": "customer", "args": {"phone": "{ani}"}, "into": "customer",
        "timeout_s": 2, "next": "vip", "on_timeout": "main",
    }  # fmt: skip
    data["nodes"]["vip"] = {
        "kind": "branch", "cases": [{"when": {"var": "customer.level", "eq": "vip"}, "next": "b_queue"}],
        "else": "main",
    }  # fmt: skip
    sb = board({"current": flow_of(data)})
    vip, fx = offer(sb)
    ask = next(e for e in fx if isinstance(e, IvrLookup))
    assert (ask.name, dict(ask.args), ask.timeout_s) == ("customer", {"phone": "13800000001"}, 2)
    fx = sb.ivr_looked_up(1.0, vip, ask.request, {"level": "vip"})
    assert sb.calls[vip].skill_group == "complaints"
    slow, fx = offer(sb, 10.0)
    ask = next(e for e in fx if isinstance(e, IvrLookup))
    fx = sb.tick(12.0)
    assert heard(fx) == ["main", "a", "b"]
    # The answer after the timeout changes nothing.
    assert sb.ivr_looked_up(12.5, slow, ask.request, {"level": "vip"}) == []
    late, fx = offer(sb, 20.0)
    ask = next(e for e in fx if isinstance(e, IvrLookup))
    # Comes after its deadline, before the timer ran: the timeout's path too.
    fx = sb.ivr_looked_up(22.5, late, ask.request, {"level": "vip"})
    assert heard(fx)[0] == "main"


def test_max_wait_offers_a_callback_and_the_call_ends_self_served() -> None:
    data = small()
    data["prompts"]["pos"] = {"zh": "您前面还有{position}位。", "en": "You are number {position}."}
    data["prompts"]["cb"] = {"zh": "我们会回电。", "en": "We will call you back."}
    data["nodes"]["a_queue"]["treatment"] = {
        "position_prompt": "pos", "announce_every_s": 10, "max_wait_s": 25, "on_max_wait": "offer_cb"
    }  # fmt: skip
    data["nodes"]["offer_cb"] = {"kind": "callback", "prompt": "cb", "skill_group": "parcel"}
    sb = board({"current": flow_of(data)})
    call_id, _ = offer(sb)
    fx = sb.caller_digits(1.0, call_id, "1")
    assert "pos" in heard(fx)
    assert heard(sb.tick(11.0)) == ["pos"]
    fx = sb.tick(26.0)
    assert heard(fx)[-1] == "cb"
    end = ended(fx)
    assert end is not None and end.outcome == Outcome.SELF_SERVED and end.reason == "callback-asked"
    assert EventKind.CALLBACK in kinds(fx)
    (callback,) = sb.dialler.callbacks.open()
    assert (callback.number, callback.skill_group) == ("13800000001", "parcel")


def test_voicemail_is_recorded_until_the_caller_hangs_up_and_the_closed_message_hangs_up() -> None:
    data = small()
    data["prompts"]["tone"] = {"zh": "请留言。", "en": "Leave a message."}
    data["nodes"]["b_queue"] = {"kind": "voicemail", "prompt": "tone", "box": "complaints"}
    sb = board({"current": flow_of(data)})
    call_id, _ = offer(sb)
    fx = sb.caller_digits(1.0, call_id, "2")
    assert heard(fx) == ["tone"] and EventKind.VOICEMAIL in kinds(fx)
    fx = sb.caller_hang_up(20.0, call_id)
    end = ended(fx)
    assert end is not None and end.outcome == Outcome.SELF_SERVED
    (message,) = sb.flows.voicemail.box.listed("complaints")
    assert message.duration_s == 19.0 and message.state == "new"
    data = small()
    data["prompts"]["closed"] = {"zh": "下班了。", "en": "We are closed."}
    data["calendar"] = {"utc_offset_h": 8, "holidays": ["1970-01-01"]}
    data["start"] = "hours"
    data["nodes"]["hours"] = {
        "kind": "branch",
        "cases": [{"when": {"holiday": True}, "next": "closed"}],
        "else": "main",
    }
    data["nodes"]["closed"] = {"kind": "hangup", "prompt": "closed", "reason": "closed"}
    sb = board({"current": flow_of(data)})
    _, fx = offer(sb, 3600.0)
    end = ended(fx)
    assert heard(fx) == ["closed"] and end is not None and end.reason == "ivr-closed"


def test_a_call_finishes_the_version_it_started_on() -> None:
    flows = {"current": flow_of(small())}
    sb = board(flows)
    old, _ = offer(sb)
    newer = small()
    newer["version"] = 2
    newer["nodes"]["main"]["options"].reverse()
    flows["current"] = flow_of(newer)
    new, fx = offer(sb, 1.0)
    assert {e.flow_version for e in fx if isinstance(e, ToCaller) and e.kind == "prompt"} == {2}
    sb.caller_digits(2.0, old, "1")
    sb.caller_digits(2.0, new, "1")
    assert sb.calls[old].skill_group == "parcel" and sb.calls[new].skill_group == "complaints"


def pin_flow() -> Flow:
    data = small()
    data.update(id="pin", start="ask", on_fail="unverified")
    data["prompts"]["pin"] = {"zh": "请输入密码。", "en": "Your PIN, please."}
    data["nodes"] = {
        "ask": {"kind": "collect", "prompt": "pin", "into": "pin", "min_length": 4, "max_length": 4,
                "terminator": None, "mask": True, "next": "check"},
        "check": {"kind": "lookup", "name": "verify_pin", "args": {"card": "1", "pin": "{pin}"},
                  "into": "pin_check", "timeout_s": 2, "next": "back", "on_timeout": "unverified"},
        "unverified": {"kind": "set", "var": "pin_check.verified", "value": "false", "next": "back"},
        "back": {"kind": "return", "report": ["pin_check.verified"]},
    }  # fmt: skip
    return flow_of(data)


def test_an_agent_sends_the_caller_for_a_pin_and_gets_them_back_with_verified_only() -> None:
    from routing.agents import AgentState
    from site_node.callcontrol.directory import TransferTarget
    from site_node.callcontrol.domain import ToAgent
    from vcc.errors import NotFound

    sb = board({"current": flow_of(small()), "pin": pin_flow()})
    sb.login(0.0, "0102")
    sb.set_ready(0.0, "0102", True)
    call_id, _ = offer(sb, 1.0, dnis=SERVICE)
    sb.customer_found(1.0, call_id, None)
    sb.caller_digits(1.5, call_id, "1")
    sb.answer(2.0, "0102", call_id)
    attached = dict(sb.calls[call_id].attached)
    with pytest.raises(NotFound):
        sb.transfer(2.5, "0102", call_id, TransferTarget(ivr=True, flow_id="nope"), blind=True)
    assert sb.calls[call_id].attached == attached and sb.agent("0102").state == AgentState.TALKING
    fx = sb.transfer(3.0, "0102", call_id, TransferTarget(ivr=True, flow_id="pin"), blind=True)
    assert heard(fx) == ["pin"] and sb.agent("0102").state == AgentState.HELD
    fx = sb.caller_digits(4.0, call_id, "1234")
    digits = [dict(e.event.data) for e in fx if isinstance(e, Journal) and e.event.kind == EventKind.DIGITS]
    assert {d["digits"] for d in digits} == {"*"}  # the PIN is never recorded
    ask = next(e for e in fx if isinstance(e, IvrLookup))
    fx = sb.ivr_looked_up(4.5, call_id, ask.request, {"verified": "true"})
    back = next(e for e in fx if isinstance(e, ToAgent) and e.kind == "retrieved")
    assert back.agent_code == "0102" and dict(back.attached) == {"pin_check.verified": "true"}
    assert sb.agent("0102").state == AgentState.TALKING and sb.calls[call_id].agent_code == "0102"
    assert "1234" not in repr(fx)
    # Hung up while in the flow: the waiting agent's leg ends too (wrap-up), the call answered.
    sb.transfer(5.0, "0102", call_id, TransferTarget(ivr=True, flow_id="pin"), blind=True)
    fx = sb.caller_hang_up(6.0, call_id)
    end = ended(fx)
    assert end is not None and end.outcome == Outcome.ANSWERED
    assert sb.agent("0102").state != AgentState.HELD


def test_a_callback_is_dialled_when_an_agent_of_its_group_is_ready_and_retried_when_unanswered() -> None:
    from site_node.callcontrol.domain import DialOut, ToAgent
    from vcc.errors import NotFound

    data = small()
    data["prompts"]["cb"] = {"zh": "我们会回电。", "en": "We will call you back."}
    data["nodes"]["a_queue"] = {"kind": "callback", "prompt": "cb", "skill_group": "billing"}
    sb = board({"current": flow_of(data)})
    asked, _ = offer(sb)
    sb.caller_digits(1.0, asked, "1")
    assert not any(isinstance(e, DialOut) for e in sb.tick(2.0))  # nobody of billing is ready
    sb.login(3.0, "0201")
    fx = sb.set_ready(3.0, "0201", True)
    (dial,) = [e for e in fx if isinstance(e, DialOut)]
    assert (dial.number, dial.skill_group, dial.attempt) == ("13800000001", "billing", 1)
    fx = sb.dial_failed(4.0, dial.dial_id, "busy")
    assert [dict(e.event.data)["stage"] for e in fx if isinstance(e, Journal)] == ["busy"]
    with pytest.raises(NotFound):
        sb.dial_failed(4.0, dial.dial_id, "busy")  # not being dialled any more
    fx = sb.tick(4.0 + 300.0)  # the list's retry_after_s
    (again,) = [e for e in fx if isinstance(e, DialOut)]
    assert again.attempt == 2
    callee, fx = sb.offer(
        310.0, idempotency_key="callee", ani="13800000001", dnis=SERVICE, dial_id=again.dial_id
    )
    assert not heard(fx)  # no IVR for the callee
    stages = [
        (e.event.call_id, dict(e.event.data)["stage"])
        for e in fx
        if isinstance(e, Journal) and e.event.kind == EventKind.CALLBACK
    ]
    assert stages == [(asked, "answered"), (callee, "callee-answered")]
    fx = sb.customer_found(310.0, callee, None)
    assert sb.calls[callee].skill_group == "billing" and sb.calls[callee].priority == 9
    (rung,) = [e for e in fx if isinstance(e, ToAgent) and e.kind == "offered"]
    assert rung.agent_code == "0201"
    with pytest.raises(NotFound):
        sb.offer(311.0, idempotency_key="x", ani="1", dnis=SERVICE, dial_id="nope")
