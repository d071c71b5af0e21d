"""Preview callbacks (F20), pure: a ready agent of the group is shown the callback and accepts it
before it is dialled (the callee then rings that agent), or declines it (the next agent is shown
it), or lets it pass (the preview's timeout); bad answers are refused and change nothing."""

from __future__ import annotations

import pytest

from site_node.callcontrol.dialler import PREVIEW_S
from site_node.callcontrol.domain import DialOut, Effect, Journal, ToAgent
from tests.ivr.flows import as_yaml, small
from tests.site_node.test_flow_calls import board, flow_of, offer
from tests.site_node.test_switchboard import SERVICE
from vcc.call_events import EventKind
from vcc.errors import FailedPrecondition, NotFound
from vcc.ivr.validate import FlowError, load_flow


def preview_flow() -> dict[str, object]:
    data = small()
    data["prompts"]["cb"] = {"zh": "我们会回电。", "en": "We will call you back."}
    data["nodes"]["a_queue"] = {
        "kind": "callback",
        "prompt": "cb",
        "skill_group": "billing",
        "mode": "preview",
    }
    return data


def shown(effects: list[Effect]) -> list[tuple[str, str]]:
    return [
        (e.agent_code, e.stage) for e in effects if isinstance(e, ToAgent) and e.kind == "callback_preview"
    ]


def stages(effects: list[Effect]) -> list[str]:
    return [
        dict(e.event.data)["stage"]
        for e in effects
        if isinstance(e, Journal) and e.event.kind == EventKind.CALLBACK
    ]


def test_the_agent_accepts_before_the_dial_and_the_callee_rings_that_agent() -> None:
    sb = board({"current": flow_of(preview_flow())})
    asked, _ = offer(sb)
    sb.caller_digits(1.0, asked, "1")
    (callback,) = sb.dialler.callbacks.open()
    sb.login(2.0, "0201")
    fx = sb.set_ready(2.0, "0201", True)
    assert shown(fx) == [("0201", "offered")] and not [e for e in fx if isinstance(e, DialOut)]
    (banner,) = [e for e in fx if isinstance(e, ToAgent) and e.kind == "callback_preview"]
    assert banner.ani == "13800000001" and dict(banner.attached)["callback_id"] == callback.callback_id
    with pytest.raises(NotFound):
        sb.answer_callback_preview(3.0, "0201", "nope", True)
    # Another billing agent becomes ready: shown nothing (the one callback is with 0201).
    sb.login(3.0, "0102")
    assert shown(sb.set_ready(3.0, "0102", True)) == []
    with pytest.raises(FailedPrecondition, match="another agent"):
        sb.answer_callback_preview(3.0, "0102", callback.callback_id, True)
    # 0201 declines: 0102 is shown it; 0102 accepts: dialled for 0102.
    fx = sb.answer_callback_preview(4.0, "0201", callback.callback_id, False)
    assert shown(fx) == [("0201", "declined"), ("0102", "offered")]
    fx = sb.answer_callback_preview(5.0, "0102", callback.callback_id, True)
    (dial,) = [e for e in fx if isinstance(e, DialOut)]
    assert stages(fx) == ["accepted", "dialling"]
    # The callee answers: it rings 0102, who accepted it, not the queue's choice.
    callee, fx = sb.offer(
        6.0, idempotency_key="callee", ani="13800000001", dnis=SERVICE, dial_id=dial.dial_id
    )
    (rung,) = [e for e in fx if isinstance(e, ToAgent) and e.kind == "offered"]
    assert rung.agent_code == "0102" and rung.call_id == callee
    assert sb.agents["0102"].call_id == callee
    record = [e for e in fx if isinstance(e, Journal) and e.event.call_id == asked]
    assert [dict(e.event.data)["stage"] for e in record] == ["answered"]


def test_a_preview_left_unanswered_passes_on_and_an_agent_gone_not_ready_is_withdrawn() -> None:
    sb = board({"current": flow_of(preview_flow())})
    asked, _ = offer(sb)
    sb.caller_digits(1.0, asked, "1")
    (callback,) = sb.dialler.callbacks.open()
    sb.login(2.0, "0201")
    sb.login(2.0, "0102")
    sb.set_ready(2.0, "0201", True)
    sb.set_ready(2.5, "0102", True)
    first = sb.dialler.previews[callback.callback_id]
    other = "0102" if first == "0201" else "0201"
    fx = sb.tick(2.0 + PREVIEW_S + 0.1)
    assert shown(fx) == [(first, "preview-timeout"), (other, "offered")]
    # The one shown it goes not ready: withdrawn, and their answer after it is refused.
    fx = sb.set_ready(40.0, other, False, "lunch")
    assert (other, "withdrawn") in shown(fx)
    with pytest.raises(NotFound):
        sb.answer_callback_preview(41.0, other, callback.callback_id, True)
    # Nothing was dialled; the callback is still open, its declined attempts not the caller's.
    assert sb.dialler.dialling == {}
    assert sb.dialler.callbacks.get(callback.callback_id).state == "pending"


def test_a_flow_with_an_unknown_callback_mode_is_refused() -> None:
    data = preview_flow()
    data["nodes"]["a_queue"]["mode"] = "predictive"  # type: ignore[index]
    with pytest.raises(FlowError, match="a_queue"):
        load_flow(as_yaml(data))


def virtual_hold_flow() -> dict[str, object]:
    data = small()
    data["prompts"]["cb"] = {"zh": "我们会回电。", "en": "We will call you back."}
    data["nodes"]["a_queue"] = {
        "kind": "queue", "skill_group": "billing",
        "treatment": {"position_prompt": "hold", "announce_every_s": 60, "callback_key": "1",
                      "on_callback": "vh"},
    }  # fmt: skip
    data["nodes"]["vh"] = {"kind": "callback", "prompt": "cb", "skill_group": "billing"}
    return data


def test_virtual_hold_keeps_the_callers_place_and_dials_them_before_those_who_came_after() -> None:
    sb = board({"current": flow_of(virtual_hold_flow())})
    sb.login(0.0, "0201")
    sb.set_ready(0.0, "0201", True)
    busy, _ = offer(sb, 1.0)
    sb.customer_found(1.0, busy, None)  # no record: the screen pop does not hold the call
    sb.caller_digits(1.5, busy, "1")
    sb.answer(2.0, "0201", busy)  # the only billing agent is talking
    held, _ = sb.offer(3.0, idempotency_key="b", ani="13800000002", dnis="95566")
    sb.customer_found(3.0, held, None)
    sb.caller_digits(3.5, held, "1")
    later, _ = sb.offer(4.0, idempotency_key="c", ani="13800000003", dnis="95566")
    sb.customer_found(4.0, later, None)
    sb.caller_digits(4.5, later, "1")
    assert sb.calls[held].state.name == "QUEUED" and sb.calls[later].state.name == "QUEUED"
    ignored = sb.caller_digits(5.0, held, "2")  # not the virtual hold key: nothing changes
    assert sb.calls[held].state.name == "QUEUED" and not stages(ignored)
    fx = sb.caller_digits(6.0, held, "1")  # leaves the queue, keeping its place
    assert stages(fx) == ["asked"]
    asked = next(
        dict(e.event.data) for e in fx if isinstance(e, Journal) and e.event.kind == EventKind.CALLBACK
    )
    assert asked["reason"] == "virtual-hold" and held not in sb.calls  # the call ended, self-served
    # The agent is free: the caller on virtual hold came before the one waiting, and is dialled.
    sb.agent_hang_up(10.0, "0201", busy)
    fx = sb.end_wrap_up(11.0, "0201", True)
    (dial,) = [e for e in fx if isinstance(e, DialOut)]
    assert dial.number == "13800000002"
    assert not [e for e in fx if isinstance(e, ToAgent) and e.kind == "offered"]  # kept for the callee
    callee, fx = sb.offer(
        12.0, idempotency_key="callee", ani="13800000002", dnis=SERVICE, dial_id=dial.dial_id
    )
    (rung,) = [e for e in fx if isinstance(e, ToAgent) and e.kind == "offered"]
    assert (rung.agent_code, rung.call_id) == ("0201", callee)
    assert sb.calls[later].state.name == "QUEUED"  # the one who came after still waits


def test_a_virtual_hold_that_does_not_lead_to_a_callback_is_refused() -> None:
    data = virtual_hold_flow()
    data["nodes"]["a_queue"]["treatment"]["on_callback"] = "b_queue"  # type: ignore[index]
    with pytest.raises(FlowError, match="not a callback node"):
        load_flow(as_yaml(data))
    del data["nodes"]["a_queue"]["treatment"]["on_callback"]  # type: ignore[attr-defined]
    with pytest.raises(FlowError, match="go together"):
        load_flow(as_yaml(data))
