"""The flow validator: each fault it knows, fed a flow that has it, named with its node and reason."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ivr.flows import FLOWS, as_yaml, example, small
from vcc.ivr.validate import FlowError, load_flow, menu_depths


def faults(data: dict[str, Any], skill_groups: set[str] | None = None) -> list[str]:
    with pytest.raises(FlowError) as info:
        load_flow(as_yaml(data), skill_groups)
    return [str(f) for f in info.value.faults]


def menu(n: int, nxt: str = "agent") -> dict[str, Any]:
    return {"kind": "menu", "options": [{"prompt": "a", "next": nxt}] * n}


def test_the_small_flow_and_the_examples_are_valid() -> None:
    load_flow(as_yaml(small()))
    for path in sorted(FLOWS.glob("*.yaml")):
        if path.name != "catalog.yaml":
            load_flow(path.read_text(encoding="utf-8"))


def test_the_postal_flow_is_five_wide_and_five_deep() -> None:
    flow = example("postal-185")
    depths = menu_depths(flow)
    assert max(depths[n] for n, node in flow.nodes.items() if node.kind == "menu") == 5
    main = flow.nodes["main"]
    assert main.kind == "menu" and len(main.options) == 5


def test_too_wide() -> None:
    data = small()
    data["nodes"]["main"] = menu(6)
    del data["nodes"]["a_queue"], data["nodes"]["b_queue"]
    assert faults(data) == ["node main: too wide: 6 options, at most 5"]


def test_too_deep_names_the_sixth_level() -> None:
    data = small()
    chain = ["main", "m2", "m3", "m4", "m5", "m6"]
    for here, nxt in zip(chain, [*chain[1:], "agent"], strict=True):
        data["nodes"][here] = menu(1, nxt)
    del data["nodes"]["a_queue"], data["nodes"]["b_queue"]
    assert faults(data) == ["node m6: too deep: menu level 6, at most 5"]


def test_a_menu_reached_by_a_short_way_is_as_deep_as_that_way() -> None:
    data = small()
    chain = ["main", "m2", "m3", "m4", "m5", "m6"]
    for here, nxt in zip(chain, [*chain[1:], "agent"], strict=True):
        data["nodes"][here] = menu(1, nxt)
    data["nodes"]["main"]["options"].append({"prompt": "b", "next": "m6"})
    del data["nodes"]["a_queue"], data["nodes"]["b_queue"]
    load_flow(as_yaml(data))


def test_dangling_targets_and_missing_prompts_are_all_named() -> None:
    data = small()
    data["nodes"]["main"]["options"][1]["next"] = "nowhere"
    data["nodes"]["a_queue"]["prompt"] = "no_such_prompt"
    data["on_fail"] = "gone"
    assert faults(data) == [
        "node main: options.1.next: 'nowhere' is not a node of this flow",
        "node a_queue: prompt: no prompt 'no_such_prompt' in the prompt table",
        "(flow): on_fail: 'gone' is not a node of this flow",
    ]


def test_a_prompt_without_a_language_and_a_key_prompt_without_key() -> None:
    data = small()
    data["prompts"]["a"] = {"zh": "查询"}
    data["prompts"]["key"]["en"] = ", press it."
    assert faults(data) == [
        "(flow): prompts.a: no 'en' text",
        "(flow): key_prompt: its 'en' text does not say {key}",
    ]


def test_an_option_that_names_its_key_before_the_description() -> None:
    data = small()
    data["prompts"]["b"] = {"zh": "请按2投诉", "en": "Press 2 for complaints"}
    # Said once per prompt, in the first language that does it.
    assert faults(data) == [
        "node main: options.1: prompt 'b' (zh) names a key itself; "
        "describe the option, the flow's key prompt says the key after it"
    ]


def test_every_fault_at_once_even_with_dangling_targets() -> None:
    data = small()
    data["prompts"]["p"] = {"zh": "嗨", "en": "Hi"}
    data["nodes"]["main"]["options"][1]["next"] = "nowhere"
    data["nodes"]["a_queue"] = {"kind": "play", "prompt": "p", "next": "again"}
    data["nodes"]["again"] = {"kind": "play", "prompt": "p", "next": "a_queue"}
    assert faults(data) == [
        "node main: options.1.next: 'nowhere' is not a node of this flow",
        "node b_queue: unreachable: no path from the start leads here",
        "node a_queue: a loop with no exit through a_queue, again: "
        "a caller who presses nothing would go round it for ever",
    ]


def test_unreachable_nodes() -> None:
    data = small()
    data["nodes"]["orphan"] = {"kind": "hangup"}
    assert faults(data) == ["node orphan: unreachable: no path from the start leads here"]


def test_a_loop_with_no_exit_is_refused() -> None:
    data = small()
    data["prompts"]["p"] = {"zh": "嗨", "en": "Hi"}
    data["start"] = "one"
    data["nodes"]["one"] = {"kind": "play", "prompt": "p", "next": "two"}
    data["nodes"]["two"] = {"kind": "play", "prompt": "p", "next": "one"}
    data["nodes"]["agent"] = {"kind": "play", "prompt": "p", "next": "main"}
    got = faults(data)
    assert "node one: a loop with no exit through one, two: a caller who presses nothing would go round" in (
        f.removesuffix(" it for ever") for f in got
    )
    # main's failures lead to agent, which leads back to main: a silent caller would go round too.
    assert any(f.startswith("node main: a loop with no exit through main, agent") for f in got)
    assert len(got) == 2


def test_a_menu_that_leads_back_to_itself_by_a_key_is_fine() -> None:
    data = small()
    data["prompts"]["p"] = {"zh": "嗨", "en": "Hi"}
    data["nodes"]["main"]["options"].append({"prompt": "b", "next": "info"})
    data["nodes"]["info"] = {"kind": "play", "prompt": "p", "next": "main"}
    load_flow(as_yaml(data))


def test_a_look_up_that_retries_itself_for_ever_is_refused() -> None:
    data = small()
    data["nodes"]["main"]["options"][0]["next"] = "look"
    data["nodes"]["look"] = {
        "kind": "lookup",
        "name": "customer",
        "args": {"phone": "{ani}"},
        "next": "a_queue",
        "on_timeout": "look",
    }
    assert faults(data) == [
        "node look: a loop with no exit through look: a caller who presses nothing would go round it for ever"
    ]


def test_shape_errors_name_the_node_and_key() -> None:
    data = small()
    data["nodes"]["main"]["on_fial"] = "agent"
    data["nodes"]["a_queue"]["priority"] = 12
    data["nodes"]["b_queue"] = {"kind": "teleport"}
    got = faults(data)
    assert "node main: on_fial: unknown key" in got
    assert "node a_queue: priority: Input should be less than or equal to 9" in got
    assert any(f.startswith("node b_queue: ") and "tag" in f for f in got)


def test_bad_look_ups_conditions_and_skill_groups() -> None:
    data = small()
    data["nodes"]["main"]["options"][0]["next"] = "look"
    data["nodes"]["look"] = {
        "kind": "lookup",
        "name": "horoscope",
        "next": "check",
        "on_timeout": "agent",
    }
    data["nodes"]["check"] = {
        "kind": "branch",
        "cases": [{"when": {"open": "weekends"}, "next": "a_queue"}],
        "else": "agent",
    }
    got = faults(data, skill_groups={"parcel", "general"})
    assert sorted(got) == [
        "node b_queue: skill_group: no skill group 'complaints' in the province",
        "node check: cases.0.when: no opening hours 'weekends' in the calendar",
        "node look: no look-up named 'horoscope' "
        "(known: balance, customer, open_tickets, parcel_state, verify_pin)",
    ]


def test_a_condition_with_two_forms_is_refused() -> None:
    data = small()
    data["nodes"]["main"]["options"][0]["when"] = {"var": "customer.level", "eq": "vip", "holiday": True}
    got = faults(data)
    assert got == [
        "node main: options.0.when: a condition has exactly one of var, all, any, not, open, holiday"
    ]


def test_not_yaml_at_all() -> None:
    with pytest.raises(FlowError, match=r"^\(flow\): not valid YAML"):
        load_flow("nodes: [")


def test_a_return_to_the_agent_may_not_report_a_masked_entry() -> None:
    data = small()
    data["prompts"]["p"] = {"zh": "请输入密码", "en": "Your PIN"}
    data["start"] = "pin"
    data["nodes"]["pin"] = {
        "kind": "collect",
        "prompt": "p",
        "into": "pin",
        "max_length": 6,
        "mask": True,
        "next": "back",
    }
    data["nodes"]["back"] = {"kind": "return", "report": ["pin"]}
    data["nodes"]["main"]["options"].append({"prompt": "a", "next": "pin"})
    data["start"] = "main"
    assert faults(data) == [
        "node back: report: 'pin' is a masked entry; report what was checked, not the digits"
    ]
