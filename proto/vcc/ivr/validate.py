"""What makes a flow document usable, beyond its shape: every fault named with its node and reason.

`load_flow(text)` parses and validates, and raises FlowError with every fault found (not just the
first), so a designer fixes a flow in one round.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

import yaml
from pydantic import ValidationError

from vcc.ivr.flow import (
    MAX_MENU_DEPTH,
    MAX_MENU_WIDTH,
    BranchNode,
    CallbackNode,
    CollectNode,
    Condition,
    Flow,
    LookupNode,
    MenuNode,
    Node,
    PlayNode,
    QueueNode,
    ReturnNode,
    SetNode,
)
from vcc.ivr.lookups import LOOKUPS

FLOW = "(flow)"
# Biggest document accepted (a 5x5 flow with two languages is about 20 KiB).
MAX_DOCUMENT_BYTES = 512 * 1024
# An option's own text naming a key ("按1", "press 1"): the key is said after the description.
_NAMES_A_KEY = re.compile(r"(按\s*[0-9*#])|(\bpress\s*[0-9*#])|(\bdial\s*[0-9*#])", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_VAR = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")


@dataclass(frozen=True)
class Fault:
    node: str
    reason: str

    def __str__(self) -> str:
        return f"{self.node}: {self.reason}" if self.node == FLOW else f"node {self.node}: {self.reason}"


class FlowError(ValueError):
    """A flow that cannot be used; `faults` names every problem."""

    def __init__(self, faults: list[Fault]) -> None:
        super().__init__("; ".join(str(f) for f in faults))
        self.faults = faults


def load_flow(text: str, skill_groups: Collection[str] | None = None) -> Flow:
    """Parse a YAML flow and validate it; raise FlowError naming every fault."""
    flow = parse_flow(text)
    faults = validate(flow, skill_groups)
    if faults:
        raise FlowError(faults)
    return flow


def parse_flow(text: str) -> Flow:
    if len(text.encode()) > MAX_DOCUMENT_BYTES:
        raise FlowError([Fault(FLOW, f"the document is over {MAX_DOCUMENT_BYTES // 1024} KiB")])
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FlowError([Fault(FLOW, f"not valid YAML: {exc}")]) from None
    try:
        return Flow.model_validate(data)
    except ValidationError as exc:
        raise FlowError(_shape_faults(exc)) from None


def _shape_faults(exc: ValidationError) -> list[Fault]:
    faults = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        if len(loc) >= 2 and loc[0] == "nodes":
            node, rest = loc[1], loc[2:]
            # Pydantic puts the node's kind (the union's tag) in the path: not the designer's words.
            if rest and rest[0] in _KINDS:
                rest = rest[1:]
            faults.append(Fault(node, f"{'.'.join(rest)}: {msg}" if rest else msg))
        else:
            faults.append(Fault(FLOW, f"{'.'.join(loc) or '(top level)'}: {msg}"))
    return faults


_KINDS = {
    "play",
    "menu",
    "collect",
    "lookup",
    "branch",
    "set",
    "queue",
    "voicemail",
    "callback",
    "fax",
    "return",
    "hangup",
}


# -- the checks -----------------------------------------------------------------------------------


def validate(flow: Flow, skill_groups: Collection[str] | None = None) -> list[Fault]:
    """Every fault of a parsed flow; `skill_groups` (the province's) also checks the queues."""
    faults: list[Fault] = []
    faults += _prompt_table(flow)
    for node_id, node in flow.nodes.items():
        faults += _node_faults(flow, node_id, node, skill_groups)
    for key, target in (("start", flow.start), ("on_fail", flow.on_fail)):
        if target not in flow.nodes:
            faults.append(Fault(FLOW, f"{key}: {target!r} is not a node of this flow"))
    if flow.start not in flow.nodes or flow.on_fail not in flow.nodes:
        # Without its roots the graph says nothing worth reading.
        return faults
    # The graph checks step over dangling targets (already named), so every fault shows at once.
    faults += _unreachable(flow)
    faults += _too_deep(flow)
    faults += _endless_loops(flow)
    return faults


def _prompt_table(flow: Flow) -> Iterator[Fault]:
    for prompt_id, texts in flow.prompts.items():
        for lang in flow.languages:
            if not texts.get(lang, "").strip():
                yield Fault(FLOW, f"prompts.{prompt_id}: no {lang!r} text")
        for lang in texts:
            if lang not in flow.languages:
                yield Fault(FLOW, f"prompts.{prompt_id}: {lang!r} is not one of the flow's languages")
    named: list[tuple[str, str | None]] = [
        ("key_prompt", flow.key_prompt),
        ("invalid_prompt", flow.invalid_prompt),
        ("no_input_prompt", flow.no_input_prompt),
    ]
    for key, named_id in named:
        if named_id is not None and named_id not in flow.prompts:
            yield Fault(FLOW, f"{key}: no prompt {named_id!r} in the prompt table")
    for lang, text in flow.prompts.get(flow.key_prompt, {}).items():
        if "{key}" not in text:
            yield Fault(FLOW, f"key_prompt: its {lang!r} text does not say {{key}}")
    for hours_name in flow.calendar.hours:
        if not hours_name:
            yield Fault(FLOW, "calendar.hours: a schedule needs a name")


def _node_faults(
    flow: Flow, node_id: str, node: Node, skill_groups: Collection[str] | None
) -> Iterator[Fault]:
    def fault(reason: str) -> Fault:
        return Fault(node_id, reason)

    for key, prompt_id in _prompts_of(node):
        if prompt_id not in flow.prompts:
            yield fault(f"{key}: no prompt {prompt_id!r} in the prompt table")
    for key, target in targets(node):
        if target not in flow.nodes:
            yield fault(f"{key}: {target!r} is not a node of this flow")
        elif key == "treatment.on_callback" and not isinstance(flow.nodes[target], CallbackNode):
            yield fault(f"{key}: {target!r} is not a callback node (virtual hold asks for a callback)")
    for key, cond in _conditions_of(node):
        for name in _schedules(cond):
            if name not in flow.calendar.hours:
                yield fault(f"{key}: no opening hours {name!r} in the calendar")
    if isinstance(node, MenuNode):
        if len(node.options) > MAX_MENU_WIDTH:
            yield fault(f"too wide: {len(node.options)} options, at most {MAX_MENU_WIDTH}")
        told: set[str] = set()
        for i, option in enumerate(node.options):
            for lang, text in flow.prompts.get(option.prompt, {}).items():
                if _NAMES_A_KEY.search(text) and option.prompt not in told:
                    told.add(option.prompt)
                    yield fault(
                        f"options.{i}: prompt {option.prompt!r} ({lang}) names a key itself; "
                        "describe the option, the flow's key prompt says the key after it"
                    )
        if node.agent_prompt is not None and node.agent is None:
            yield fault("agent_prompt without agent: key 0 leads nowhere")
        if node.agent is not None and node.agent_prompt is None:
            yield fault("agent without agent_prompt: callers would not hear that 0 is an agent")
    elif isinstance(node, LookupNode):
        spec = LOOKUPS.get(node.name)
        if spec is None:
            yield fault(f"no look-up named {node.name!r} (known: {', '.join(sorted(LOOKUPS))})")
        else:
            missing = [a for a in spec.args if a not in node.args]
            unknown = [a for a in node.args if a not in spec.args]
            if missing:
                yield fault(f"args: {node.name} needs {', '.join(missing)}")
            if unknown:
                yield fault(f"args: {node.name} takes no {', '.join(unknown)}")
        for arg, template in node.args.items():
            for name in _PLACEHOLDER.findall(template):
                if not _VAR.match(name):
                    yield fault(f"args.{arg}: {{{name}}} is not a variable name")
    elif isinstance(node, ReturnNode):
        secret = {n.into for n in flow.nodes.values() if isinstance(n, CollectNode) and n.mask}
        for var in node.report:
            if var in secret:
                yield fault(f"report: {var!r} is a masked entry; report what was checked, not the digits")
    elif (
        isinstance(node, QueueNode | CallbackNode)
        and skill_groups is not None
        and node.skill_group not in skill_groups
    ):
        yield fault(f"skill_group: no skill group {node.skill_group!r} in the province")


def targets(node: Node) -> list[tuple[str, str]]:
    """(key, node id) of every node this one can lead to; the flow's on_fail is added by callers."""
    out: list[tuple[str, str]] = []
    if isinstance(node, PlayNode | SetNode):
        out.append(("next", node.next))
    elif isinstance(node, MenuNode):
        out += [(f"options.{i}.next", o.next) for i, o in enumerate(node.options)]
        if node.agent is not None:
            out.append(("agent", node.agent))
        if node.on_fail is not None:
            out.append(("on_fail", node.on_fail))
    elif isinstance(node, CollectNode):
        out.append(("next", node.next))
        if node.on_fail is not None:
            out.append(("on_fail", node.on_fail))
    elif isinstance(node, LookupNode):
        out += [("next", node.next), ("on_timeout", node.on_timeout)]
    elif isinstance(node, BranchNode):
        out += [(f"cases.{i}.next", c.next) for i, c in enumerate(node.cases)]
        out.append(("else", node.else_))
    elif isinstance(node, QueueNode) and node.treatment is not None:
        if node.treatment.on_max_wait:
            out.append(("treatment.on_max_wait", node.treatment.on_max_wait))
        if node.treatment.on_callback:
            out.append(("treatment.on_callback", node.treatment.on_callback))
    return out


def _prompts_of(node: Node) -> Iterator[tuple[str, str]]:
    if node.prompt is not None:
        yield "prompt", node.prompt
    if isinstance(node, MenuNode):
        for i, option in enumerate(node.options):
            yield f"options.{i}.prompt", option.prompt
        if node.agent_prompt is not None:
            yield "agent_prompt", node.agent_prompt
    if isinstance(node, QueueNode) and node.treatment is not None:
        for key in ("position_prompt", "wait_prompt"):
            prompt_id = getattr(node.treatment, key)
            if prompt_id is not None:
                yield f"treatment.{key}", prompt_id


def _conditions_of(node: Node) -> Iterator[tuple[str, Condition]]:
    if isinstance(node, MenuNode):
        for i, option in enumerate(node.options):
            if option.when is not None:
                yield f"options.{i}.when", option.when
    elif isinstance(node, BranchNode):
        for i, case in enumerate(node.cases):
            yield f"cases.{i}.when", case.when


def _schedules(cond: Condition) -> Iterator[str]:
    if cond.open is not None:
        yield cond.open
    for sub in (*(cond.all_ or ()), *(cond.any_ or ()), *((cond.not_,) if cond.not_ else ())):
        yield from _schedules(sub)


# -- the graph ------------------------------------------------------------------------------------


def edges(flow: Flow, node_id: str) -> list[str]:
    """Every node a call can go to from `node_id`, with the flow's on_fail where it applies."""
    node = flow.nodes[node_id]
    out = [t for _, t in targets(node)]
    if isinstance(node, MenuNode | CollectNode) and node.on_fail is None:
        out.append(flow.on_fail)
    return [t for t in out if t in flow.nodes]


def _silent_edges(flow: Flow, node_id: str) -> list[str]:
    """Where a call goes with no key pressed: through plays, branches, look-ups, then failures."""
    node = flow.nodes[node_id]
    if isinstance(node, MenuNode | CollectNode):
        return [t for t in (node.on_fail or flow.on_fail,) if t in flow.nodes]
    if isinstance(node, QueueNode):
        # The virtual hold's key is the caller's choice, not a silent path.
        return [t for k, t in targets(node) if k != "treatment.on_callback" and t in flow.nodes]
    return edges(flow, node_id)


def _unreachable(flow: Flow) -> Iterator[Fault]:
    seen = {flow.start, flow.on_fail}
    todo = deque(seen)
    while todo:
        for nxt in edges(flow, todo.popleft()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    for node_id in flow.nodes:
        if node_id not in seen:
            yield Fault(node_id, "unreachable: no path from the start leads here")


def menu_depths(flow: Flow) -> dict[str, int]:
    """For each node, the fewest menus a caller passes through to get there (the menu itself counted)."""
    # 0-1 breadth-first search: entering a menu costs one level, any other node nothing.
    best: dict[str, int] = {}
    todo: deque[tuple[str, int]] = deque()

    def cost(node_id: str, above: int) -> int:
        return above + (1 if isinstance(flow.nodes[node_id], MenuNode) else 0)

    for root in (flow.start, flow.on_fail):
        todo.append((root, cost(root, 0)))
    while todo:
        node_id, depth = todo.popleft()
        if node_id in best and best[node_id] <= depth:
            continue
        best[node_id] = depth
        for nxt in edges(flow, node_id):
            d = cost(nxt, depth)
            if nxt not in best or best[nxt] > d:
                if d == depth:
                    todo.appendleft((nxt, d))
                else:
                    todo.append((nxt, d))
    return best


def _too_deep(flow: Flow) -> Iterator[Fault]:
    for node_id, depth in menu_depths(flow).items():
        if isinstance(flow.nodes[node_id], MenuNode) and depth > MAX_MENU_DEPTH:
            yield Fault(node_id, f"too deep: menu level {depth}, at most {MAX_MENU_DEPTH}")


def _endless_loops(flow: Flow) -> Iterator[Fault]:
    """A cycle a silent caller (or no caller at all) goes round for ever is refused."""
    for component in _cycles(flow, _silent_edges):
        yield Fault(
            component[0],
            f"a loop with no exit through {', '.join(component)}: "
            "a caller who presses nothing would go round it for ever",
        )


def _cycles(flow: Flow, step: Callable[[Flow, str], list[str]]) -> list[list[str]]:
    """Strongly connected components with a cycle (Tarjan's algorithm, iterative), in flow order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in flow.nodes:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(step(flow, root)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node_id, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(step(flow, child))))
                elif child in on_stack:
                    low[node_id] = min(low[node_id], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node_id])
            if low[node_id] == index[node_id]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node_id:
                        break
                if len(component) > 1 or node_id in step(flow, node_id):
                    order = list(flow.nodes)
                    found.append(sorted(component, key=order.index))
    return found
