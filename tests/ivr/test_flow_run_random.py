"""Random valid flows, random callers: the interpreter never crashes and every call ends.

Flows are drawn so that the validator accepts them (the silent edges - plays, branches, look-ups,
failures - go forward; keys may lead anywhere, back to earlier menus too), then validated for
real. A caller presses random keys, stays silent, and central answers, fails or is late; once
the caller's inputs run out, silence alone must end the call, by the flow's own structure.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from site_node.callcontrol.ivr_flow import (
    STEP_LIMIT,
    Action,
    CollectDigits,
    End,
    FlowRun,
    Hangup,
    Lookup,
    Play,
)
from tests.ivr.flows import OFFICE_HOURS, as_yaml
from vcc.ivr.flow import Flow
from vcc.ivr.validate import edges, load_flow, validate

PROMPTS = {
    "key": {"zh": "，请按{key}。", "en": ", press {key}."},
    "p": {"zh": "您好{customer.level}", "en": "Hello {customer.level}"},
    "q": {"zh": "请选择", "en": "Choose"},
}
CONDITIONS: list[dict[str, Any]] = [
    {"var": "customer.level", "eq": "vip"},
    {"var": "customer.open_tickets", "gt": 0},
    {"open": "office"},
    {"holiday": True},
    {"not": {"var": "language", "in": ["en"]}},
]
ENDS: list[dict[str, Any]] = [
    {"kind": "queue", "skill_group": "general", "priority_by": {"var": "customer.level", "map": {"vip": 9}}},
    {"kind": "voicemail", "box": "general"},
    {"kind": "callback", "skill_group": "general"},
    {"kind": "fax", "document": "tariffs"},
    {"kind": "hangup", "prompt": "p"},
    {"kind": "return", "report": ["entry", "customer.level"]},
]


@st.composite
def flows(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(min_value=2, max_value=14))
    names = [f"n{i}" for i in range(n)]
    menus = 0

    def forward(i: int) -> str:
        return names[draw(st.integers(min_value=i + 1, max_value=n - 1))]

    def anywhere() -> str:
        return draw(st.sampled_from(names))

    nodes: dict[str, Any] = {}
    for i, name in enumerate(names):
        kinds = ["end"] if i == n - 1 else ["play", "set", "branch", "lookup", "collect", "end"]
        if i < n - 1 and menus < 5:
            kinds += ["menu", "menu"]
        kind = draw(st.sampled_from(kinds))
        if kind == "end":
            nodes[name] = draw(st.sampled_from(ENDS))
        elif kind == "play":
            nodes[name] = {"kind": "play", "prompt": "p", "next": forward(i)}
        elif kind == "set":
            nodes[name] = {
                "kind": "set",
                "var": "language",
                "value": draw(st.sampled_from(["en", "zh"])),
                "next": forward(i),
            }
        elif kind == "branch":
            cases = [
                {"when": draw(st.sampled_from(CONDITIONS)), "next": forward(i)}
                for _ in range(draw(st.integers(1, 3)))
            ]
            nodes[name] = {"kind": "branch", "cases": cases, "else": forward(i)}
        elif kind == "lookup":
            nodes[name] = {
                "kind": "lookup",
                "name": "customer",
                "args": {"phone": "{ani}"},
                "timeout_s": draw(st.sampled_from([0.5, 2.0])),
                "next": forward(i),
                "on_timeout": forward(i),
            }
        elif kind == "collect":
            low = draw(st.integers(1, 4))
            nodes[name] = {
                "kind": "collect",
                "prompt": "p",
                "into": "entry",
                "min_length": low,
                "max_length": low + draw(st.integers(0, 3)),
                "terminator": draw(st.sampled_from(["#", None])),
                "retries": draw(st.integers(0, 3)),
                "mask": draw(st.booleans()),
                "next": forward(i),
                **({"on_fail": forward(i)} if draw(st.booleans()) else {}),
            }
        else:
            menus += 1
            options = []
            for _ in range(draw(st.integers(1, 5))):
                option: dict[str, Any] = {"prompt": "q", "next": anywhere()}
                if draw(st.booleans()):
                    option["when"] = draw(st.sampled_from(CONDITIONS))
                options.append(option)
            node: dict[str, Any] = {
                "kind": "menu",
                "options": options,
                "retries": draw(st.integers(0, 3)),
                **({"on_fail": forward(i)} if draw(st.booleans()) else {}),
            }
            if draw(st.booleans()):
                node |= {"agent": anywhere(), "agent_prompt": "p"}
            nodes[name] = node
    return {
        "id": "random",
        "version": 1,
        "languages": ["zh", "en"],
        "start": "n0",
        "on_fail": names[-1],
        "key_prompt": "key",
        "invalid_prompt": "q",
        "no_input_prompt": "q",
        "max_steps": 60,
        "calendar": {"hours": {"office": [{"from": "08:00", "to": "20:00"}]}},
        "prompts": PROMPTS,
        "nodes": nodes,
    }


def _reachable_only(data: dict[str, Any]) -> dict[str, Any]:
    """Drop the nodes no path reaches (drawing them is harmless; the validator would refuse them)."""
    flow = Flow.model_validate(data)
    seen, todo = {flow.start, flow.on_fail}, [flow.start, flow.on_fail]
    while todo:
        for nxt in edges(flow, todo.pop()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    data["nodes"] = {k: v for k, v in data["nodes"].items() if k in seen}
    return data


Event = tuple[str, str]
events = st.lists(
    st.one_of(
        st.tuples(st.just("keys"), st.text(alphabet="0123456789*# ", min_size=1, max_size=4)),
        st.tuples(st.just("timeout"), st.just("")),
        st.tuples(st.just("lookup"), st.sampled_from(["vip", "normal", "none", "late", "stale"])),
        st.tuples(st.just("early"), st.just("")),
    ),
    max_size=40,
)
contexts = st.fixed_dictionaries(
    {
        "ani": st.just("13800000001"),
        "customer.level": st.sampled_from(["vip", "normal", ""]),
        "customer.open_tickets": st.sampled_from(["0", "3", "x"]),
    }
)


def _check(actions: list[Action], run: FlowRun) -> None:
    ends = [a for a in actions if isinstance(a, End)]
    assert len(ends) <= 1
    if ends:
        # The end is the last action, and the run stops waiting.
        assert actions[-1] is ends[0] and run.ended == ends[0] and run.deadline is None
    else:
        assert run.ended is None or actions == []
    if run.ended is None:
        assert run.deadline is not None
        assert run.waiting in ("digits", "lookup")
        last = actions[-1] if actions else None
        assert last is None or isinstance(last, CollectDigits | Lookup | Play)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flows(), contexts, events, st.integers(min_value=0, max_value=7 * 86_400))
def test_random_flows_always_end(
    data: dict[str, Any], context: dict[str, str], inputs: list[Event], shift: int
) -> None:
    data = _reachable_only(data)
    # Menus reached only through deeper menus can still be too deep: those draws are skipped.
    assume(not validate(Flow.model_validate(data)))
    flow = load_flow(as_yaml(data))
    now = OFFICE_HOURS + shift
    run = FlowRun()
    _check(run.start(flow, context, now), run)
    for kind, arg in inputs:
        now += 0.25
        if kind == "keys":
            _check(run.on_digits(arg, now), run)
        elif kind == "timeout" and run.deadline is not None:
            now = max(now, run.deadline)
            _check(run.on_timeout(now), run)
        elif kind == "early":
            # A stale timer: nothing happens before the deadline.
            assert run.deadline is None or run.on_timeout(run.deadline - 0.01) == []
        elif kind == "lookup":
            if arg == "stale":
                assert run.on_lookup({"level": "vip"}, now, request=-1) == []
            elif arg == "late" and run.deadline is not None:
                now = run.deadline + 1
                _check(run.on_lookup({"level": "vip"}, now), run)
            else:
                answer = None if arg == "none" else {"level": arg}
                _check(run.on_lookup(answer, now), run)
    # The caller's keys are over: silence (and a central that never answers) must end the call,
    # and within a bound set by the flow's structure, not by its step limit.
    steps_before = run.steps
    silences = 0
    while run.ended is None:
        assert run.deadline is not None
        now = run.deadline
        _check(run.on_timeout(now), run)
        silences += 1
        assert silences <= len(flow.nodes) * 4
    assert run.ended is not None
    if steps_before + len(flow.nodes) * 4 < flow.max_steps:
        assert run.ended != Hangup(STEP_LIMIT)
    assert run.steps <= flow.max_steps + 1
    # After the end, nothing moves.
    assert run.on_digits("1", now + 1) == [] and run.on_timeout(now + 100) == []
    assert run.on_lookup({}, now + 1) == []
