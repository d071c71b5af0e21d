"""The flow interpreter on the example flows: every leaf of the 5x5 postal flow, closed hours,
late look-ups, dynamic menus, back/repeat, masked PINs, and a call keeping its flow version."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from site_node.callcontrol.ivr_flow import (
    STEP_LIMIT,
    Action,
    Announcements,
    CollectDigits,
    FaxOnDemand,
    FlowRun,
    Hangup,
    Heard,
    Lookup,
    OfferCallback,
    Play,
    Pressed,
    ReturnToAgent,
    ToQueue,
    ToVoicemail,
)
from tests.ivr.flows import NATIONAL_DAY, NIGHT, OFFICE_HOURS, as_yaml, example, small
from vcc.ivr.flow import END_KINDS, CollectNode, Flow, MenuNode
from vcc.ivr.validate import load_flow

T0 = OFFICE_HOURS
NORMAL = {"ani": "13800000001", "customer.level": "normal", "customer.open_tickets": "0"}
VIP = {"ani": "13800000002", "customer.level": "vip", "customer.open_tickets": "2"}
PARCEL = {"state": "已妥投 delivered", "city": "广州"}

# ("keys", "1") | ("timeout", "") | ("lookup", "ok" | "late" | "none") | ("max_wait", "")
Step = tuple[str, str]


def replay(flow: Flow, context: Mapping[str, str], steps: list[Step], now: float = T0) -> FlowRun:
    run = FlowRun()
    run.start(flow, context, now)
    for kind, arg in steps:
        now += 1
        if kind == "keys":
            run.on_digits(arg, now)
        elif kind == "max_wait":
            run.on_max_wait(now)
        elif kind == "timeout":
            assert run.deadline is not None
            now = run.deadline
            run.on_timeout(now)
        elif arg == "late":
            assert run.deadline is not None
            now = run.deadline + 0.5
            run.on_lookup(PARCEL, now)
        else:
            run.on_lookup(PARCEL if arg == "ok" else None, now)
    return run


def choices(run: FlowRun) -> list[Step]:
    """What a caller (or central) can do next, one of each kind of input."""
    node = run.flow.nodes[run.node_id]
    if run.waiting == "lookup":
        return [("lookup", "ok"), ("lookup", "none"), ("lookup", "late"), ("timeout", "")]
    if isinstance(node, MenuNode):
        keys = [str(k) for k in range(1, len(node.options) + 1)] + ["0", "*", "#", "9"]
        return [("keys", k) for k in keys] + [("timeout", "")]
    assert isinstance(node, CollectNode)
    return [("keys", "1" * node.min_length + (node.terminator or "")), ("keys", "12#"), ("timeout", "")]


def leaves(flow: Flow, context: Mapping[str, str], now: float = T0) -> dict[str, list[Step]]:
    """Every end node a caller can reach, with one way to get there (breadth-first over inputs)."""
    found: dict[str, list[Step]] = {}
    seen: set[tuple[str, str, int, tuple[tuple[str, str], ...]]] = set()
    todo: deque[list[Step]] = deque([[]])
    while todo:
        path = todo.popleft()
        run = replay(flow, context, path, now)
        if run.ended is not None:
            found.setdefault(run.node_id, path)
            queued = run.ended
            if isinstance(queued, ToQueue) and queued.announcements and queued.announcements.max_wait_s:
                # A queue with a maximum wait is a leaf, and the flow goes on from it too.
                state = (run.node_id, "queued", run.retries, tuple(sorted(run.context.items())))
                if state not in seen:
                    seen.add(state)
                    todo.append([*path, ("max_wait", "")])
            continue
        state = (run.node_id, run.waiting, run.retries, tuple(sorted(run.context.items())))
        if state in seen:
            continue
        seen.add(state)
        todo.extend([*path, step] for step in choices(run))
    return found


def heard(actions: list[Action]) -> list[str]:
    return [a.prompt_id for a in actions if isinstance(a, Play)]


def test_the_postal_flow_walked_to_every_leaf() -> None:
    flow = example("postal-185")
    reached = {**leaves(flow, NORMAL), **leaves(flow, VIP)}
    ends = {n for n, node in flow.nodes.items() if node.kind in END_KINDS}
    # The closed message needs the night (next test); everything else is reached by keys and silences.
    assert set(reached) == ends - {"closed"}
    # The deepest leaves: parcels -> international -> customs -> duty -> an option.
    assert reached["duty_voicemail"] == [("keys", k) for k in "12215"]
    run = replay(flow, NORMAL, reached["duty_voicemail"])
    assert run.ended == ToVoicemail("customs-duty")


def test_each_kind_of_end() -> None:
    flow = example("postal-185")
    assert replay(flow, VIP, [("keys", "13")]).ended == FaxOnDemand("postage-tariffs")
    assert replay(flow, NORMAL, [("keys", "35")]).ended == OfferCallback("savings", "13800000001")
    assert replay(flow, NORMAL, [("keys", "32")]).ended == ToQueue("savings", 8)


def test_a_queue_with_a_maximum_wait_then_the_flow_goes_on() -> None:
    flow = example("postal-185")
    run = replay(flow, {**NORMAL, "customer.language": "en"}, [("keys", "21")])
    queued = run.ended
    assert isinstance(queued, ToQueue) and queued.announcements is not None
    assert (queued.skill_group, queued.priority) == ("complaints", 4)
    assert queued.announcements == Announcements(
        "queue_position",
        "There are {position} callers before you.",
        "queue_wait",
        "The expected wait is about {wait_min} minutes.",
        30.0,
        120.0,
    )
    actions = run.on_max_wait(T0 + 122)
    assert heard(actions) == ["wait_over", "opt_call_me_back", "opt_leave_message", "opt_keep_waiting"]
    # Keep waiting: back in the same queue; then a callback keeping the place.
    run.on_digits("3", T0 + 125)
    assert run.ended == queued
    run.on_max_wait(T0 + 250)
    run.on_digits("1", T0 + 251)
    assert run.ended == OfferCallback("complaints", "13800000001")
    # A queue without a maximum wait does not go on.
    plain = replay(flow, NORMAL, [("keys", "32")])
    assert plain.on_max_wait(T0 + 500) == [] and plain.ended == ToQueue("savings", 8)


def test_the_closed_message_outside_hours_and_on_holidays() -> None:
    flow = example("postal-185")
    for now in (NIGHT, NATIONAL_DAY):
        run = FlowRun()
        actions = run.start(flow, NORMAL, now)
        assert heard(actions) == ["welcome", "closed"]
        assert actions[-1] == Hangup("closed")
        assert run.deadline is None
    # The same call at ten in the morning reaches the menu.
    assert FlowRun().start(flow, NORMAL, OFFICE_HOURS)[-1] == CollectDigits(1, None, 5.0)


def test_vip_and_normal_callers_hear_different_menus() -> None:
    flow = example("postal-185")
    normal = heard(FlowRun().start(flow, NORMAL, T0))
    vip = heard(FlowRun().start(flow, VIP, T0))
    assert normal == [
        "welcome",
        "main",
        "opt_parcel",
        "opt_complaints",
        "opt_savings",
        "opt_philately",
        "agent",
    ]
    assert vip == ["welcome", "vip_welcome", *normal[1:6], "opt_ticket", "agent"]
    # Key 5 is the open complaint for the VIP; for the other caller there is no option 5.
    assert replay(flow, VIP, [("keys", "5")]).ended == ToQueue("complaints", 6)
    assert replay(flow, NORMAL, [("keys", "5")]).trace[-1] == Heard(
        T0 + 1, "main", "agent", "人工服务，请按0。"
    )
    # Priority from the customer's level.
    assert replay(flow, VIP, [("keys", "0")]).ended == ToQueue("general", 9)
    assert replay(flow, NORMAL, [("keys", "0")]).ended == ToQueue("general", 0)


def test_english_prompts_for_an_english_speaking_customer() -> None:
    flow = example("postal-185")
    actions = FlowRun().start(flow, {**NORMAL, "customer.language": "en"}, T0)
    texts = [a.text for a in actions if isinstance(a, Play)]
    assert texts[2] == "For parcel and letter tracking, press 1."


def test_a_late_look_up_takes_the_timeout_path() -> None:
    flow = example("postal-185")
    run = FlowRun()
    run.start(flow, NORMAL, T0)
    actions = run.on_digits("11" + "1234567890123" + "#", T0 + 1)
    lookup = actions[-1]
    assert isinstance(lookup, Lookup)
    assert (lookup.name, lookup.args, lookup.timeout_s) == (
        "parcel_state",
        {"tracking_number": "1234567890123"},
        2.0,
    )
    assert run.deadline == T0 + 3
    # A timer that fires early (stale) changes nothing.
    assert run.on_timeout(T0 + 2) == []
    # The answer comes half a second after the look-up's own timeout.
    actions = run.on_lookup(PARCEL, T0 + 3.5, request=lookup.request)
    assert heard(actions) == ["lookup_late", "hold"]
    assert run.ended == ToQueue("parcel", 2)
    assert run.trace[-4].outcome == "late"  # type: ignore[union-attr]


def test_a_look_up_that_times_out_then_answers_is_ignored() -> None:
    flow = example("postal-185")
    run = replay(flow, NORMAL, [("keys", "11"), ("keys", "1234567890123#")])
    assert run.waiting == "lookup"
    assert heard(run.on_timeout(T0 + 10)) == ["lookup_late", "hold"]
    assert run.on_lookup(PARCEL, T0 + 11) == []
    assert run.ended == ToQueue("parcel", 2)


def test_an_answered_look_up_is_heard_with_its_data() -> None:
    flow = example("postal-185")
    run = replay(flow, NORMAL, [("keys", "11"), ("keys", "1234567890123#"), ("lookup", "ok")])
    said = {h.prompt_id: h.text for h in run.trace if isinstance(h, Heard)}
    assert said["parcel_state"] == "您查询的邮件已妥投 delivered，目前在广州。"
    assert run.node_id == "after_parcel"


def test_back_repeat_and_wrong_keys() -> None:
    flow = example("postal-185")
    run = replay(flow, NORMAL, [("keys", "12")])
    assert run.node_id == "intl"
    actions = run.on_digits("*", T0 + 5)
    assert run.node_id == "parcel" and heard(actions)[0] == "parcel"
    actions = run.on_digits("#", T0 + 6)
    assert run.node_id == "parcel" and heard(actions)[0] == "parcel"
    run.on_digits("*", T0 + 7)
    assert run.node_id == "main"
    # At the top, * says the menu again.
    run.on_digits("*", T0 + 8)
    assert run.node_id == "main"
    # Three wrong keys (two retries), then the flow's on_fail: the general queue.
    assert heard(run.on_digits("9", T0 + 9))[0] == "invalid"
    run.on_digits("9", T0 + 10)
    assert run.ended is None
    run.on_digits("9", T0 + 11)
    assert run.ended == ToQueue("general", 0)
    effects = [p.effect for p in run.trace if isinstance(p, Pressed)]
    assert effects == [
        "option 1 -> parcel",
        "option 2 -> intl",
        "back -> parcel",
        "repeat",
        "back -> main",
        "repeat (top menu)",
        "invalid",
        "invalid",
        "invalid",
    ]


def test_silence_retries_then_on_fail() -> None:
    flow = example("postal-185")
    run = FlowRun()
    run.start(flow, NORMAL, T0)
    assert heard(run.on_timeout(T0 + 5))[0] == "no_input"
    assert run.deadline == T0 + 10
    # The prompts took 4 s to say: the caller's 5 s count from their end.
    run.on_played(T0 + 9)
    assert run.deadline == T0 + 14
    run.on_timeout(T0 + 14)
    run.on_timeout(T0 + 19)
    assert run.ended == ToQueue("general", 0)


def test_the_pin_is_never_in_the_trace() -> None:
    flow = example("bank")
    run = FlowRun()
    run.start(flow, VIP, T0)
    actions = run.on_digits("1" + "6222000011112222#" + "907312", T0 + 1)
    assert isinstance(actions[-1], Lookup) and actions[-1].args["pin"] == "907312"
    pressed = [p.key for p in run.trace if isinstance(p, Pressed) and p.node == "ask_pin"]
    assert pressed == ["*"] * 6
    assert "907312" not in repr(run.trace)
    assert "pin" not in run.attached_data() and run.attached_data()["card"] == "6222000011112222"
    run.on_lookup({"verified": "true"}, T0 + 2)
    assert run.node_id == "main"
    run.on_digits("0", T0 + 3)
    # Agents work 9 to 5 on weekdays: 10:00 on a Tuesday is open.
    assert run.ended == ToQueue("general", 8)


def test_a_wrong_pin_goes_to_an_agent_and_agents_closed_offer_a_callback() -> None:
    flow = example("bank")
    run = replay(flow, NORMAL, [("keys", "2"), ("keys", "6222000011112222#"), ("keys", "111111")])
    run.on_lookup({"verified": "false"}, T0 + 5)
    assert run.ended == ToQueue("general", 0)
    evening = T0 + 9 * 3600
    run = replay(
        flow, NORMAL, [("keys", "1"), ("keys", "6222000011112222#"), ("keys", "111111")], now=evening
    )
    run.on_lookup({"verified": "true"}, evening + 5)
    run.on_digits("0", evening + 6)
    assert run.ended == OfferCallback("general", "13800000001")


def test_a_call_keeps_the_version_it_started_on() -> None:
    data = small()
    v1 = load_flow(as_yaml(data))
    data["version"] = 2
    data["prompts"]["a"] = {"zh": "邮件查询", "en": "For parcels"}
    v2 = load_flow(as_yaml(data))
    old, new = FlowRun(), FlowRun()
    old.start(v1, {}, T0)
    new.start(v2, {}, T0 + 1)
    old.on_digits("#", T0 + 2)
    assert old.flow.version == 1
    assert [h.text for h in old.trace if isinstance(h, Heard)][-2] == "查询，请按1。"
    assert [h.text for h in new.trace if isinstance(h, Heard)][-2] == "邮件查询，请按1。"


def test_a_caller_who_goes_round_for_ever_is_ended_at_the_step_limit() -> None:
    flow = load_flow(as_yaml({**small(), "max_steps": 10}))
    run = FlowRun()
    run.start(flow, {}, T0)
    for i in range(20):
        run.on_digits("#", T0 + i)
    assert run.ended == Hangup(STEP_LIMIT)
    assert run.steps == 11
    assert run.on_digits("1", T0 + 30) == []


def test_a_pin_check_for_an_agent_returns_the_verdict_never_the_digits() -> None:
    flow = example("pin-check")
    # The caller's number names the customer whose PIN central checks.
    agent_context = {"ani": "13800000001"}
    run = FlowRun()
    run.start(flow, agent_context, T0)
    lookup = run.on_digits("907312", T0 + 2)[-1]
    assert isinstance(lookup, Lookup) and lookup.args == {"card": "13800000001", "pin": "907312"}
    run.on_lookup({"verified": "true"}, T0 + 3)
    assert run.ended == ReturnToAgent({"pin_check.verified": "true"})
    assert "907312" not in repr(run.trace) and "907312" not in repr(run.ended)
    # Central too slow, or the caller silent: back to the agent, not verified.
    late = FlowRun()
    late.start(flow, agent_context, T0)
    late.on_digits("907312", T0 + 2)
    late.on_timeout(T0 + 5)
    assert late.ended == ReturnToAgent({"pin_check.verified": "false"})
    silent = FlowRun()
    silent.start(flow, agent_context, T0)
    for i in range(1, 4):
        silent.on_timeout(T0 + 8 * i)
    assert silent.ended == ReturnToAgent({"pin_check.verified": "false"})


def test_a_terminator_after_a_full_entry_belongs_to_the_entry() -> None:
    flow = example("postal-185")
    run = replay(flow, NORMAL, [("keys", "11"), ("keys", "1234567890123#"), ("lookup", "ok")])
    assert run.node_id == "after_parcel" and run.retries == 0
    effects = [p.effect for p in run.trace if isinstance(p, Pressed)]
    assert "repeat" not in effects
    # The next "#" is the caller's own: the menu is said again.
    run.on_digits("#", T0 + 10)
    assert [p.effect for p in run.trace if isinstance(p, Pressed)][-1] == "repeat"
