"""One call's way through an IVR flow: a pure state machine, time given, actions returned.

The run holds the flow object it started on, so a newer version loaded meanwhile affects only
new calls (F8). It waits for one of three things: keys (a menu or a collection), a look-up's
answer, or its `deadline`; anything else that arrives (a stale timer, a late answer, keys after
the end) changes nothing and returns no action.
"""

from __future__ import annotations

from collections.abc import Mapping

from site_node.callcontrol.ivr_flow.actions import (
    Action,
    End,
    Ended,
    Hangup,
    Heard,
    LookedUp,
    Lookup,
    Play,
    Pressed,
    Silence,
    ToQueue,
    TraceEntry,
)
from site_node.callcontrol.ivr_flow.conditions import holds
from site_node.callcontrol.ivr_flow.endings import end_action
from site_node.callcontrol.ivr_flow.listening import Listening, Waiting
from site_node.callcontrol.ivr_flow.questions import Questions
from site_node.callcontrol.ivr_flow.voice import Voice
from vcc.ivr.flow import (
    BranchNode,
    CollectNode,
    EndNode,
    Flow,
    LookupNode,
    MenuNode,
    PlayNode,
    QueueNode,
    QueueTreatmentSpec,
    SetNode,
)

# The reason of a call ended because it went past the flow's max_steps.
STEP_LIMIT = "step-limit"


class FlowRun:
    """start() once, then on_digits / on_timeout / on_lookup / on_played until `ended` is set."""

    def __init__(self) -> None:
        self._flow: Flow | None = None
        self.context: dict[str, str] = {}
        self.trace: list[TraceEntry] = []
        self.ended: End | None = None
        self.node_id = ""
        self.steps = 0
        self._ear = Listening()
        # Its menus and digit entries (they go on through go, count_step and play).
        self._questions = Questions(self, self._ear)
        self._request = 0
        self._voice_of: Voice | None = None

    @property
    def flow(self) -> Flow:
        if self._flow is None:
            raise RuntimeError("the flow run has not started")
        return self._flow

    @property
    def _voice(self) -> Voice:
        if self._voice_of is None:
            raise RuntimeError("the flow run has not started")
        return self._voice_of

    @property
    def waiting(self) -> Waiting:
        return self._ear.what

    @property
    def deadline(self) -> float | None:
        """When on_timeout is due (a silence, or a look-up not answered); None when not waiting."""
        return self._ear.deadline

    @property
    def retries(self) -> int:
        """Wrong entries and silences at the current menu or collection so far."""
        return self._ear.retries

    @property
    def language(self) -> str:
        return self._voice.language

    def attached_data(self) -> dict[str, str]:
        """The caller's variables fit to travel with the call (screen pop, transfers): everything
        but masked entries (a PIN stays in the IVR, F9)."""
        secret = {n.into for n in self.flow.nodes.values() if isinstance(n, CollectNode) and n.mask}
        return {k: v for k, v in self.context.items() if k not in secret}

    # -- events ---------------------------------------------------------------------------------

    def start(self, flow: Flow, caller_context: Mapping[str, str], now: float) -> list[Action]:
        if self._flow is not None:
            raise RuntimeError("a flow run starts once")
        self._flow = flow
        self.context = dict(caller_context)
        self._voice_of = Voice(flow, self.context)
        out: list[Action] = []
        self.go(flow.start, now, out)
        return out

    def on_digits(self, digits: str, now: float) -> list[Action]:
        if self.waiting in ("idle", "ended"):
            return []
        self._ear.typed += digits
        out: list[Action] = []
        self._take_typed(now, out)
        return out

    def on_timeout(self, now: float) -> list[Action]:
        if not self._ear.due(now):
            return []
        out: list[Action] = []
        node = self.flow.nodes[self.node_id]
        if self.waiting == "lookup":
            assert isinstance(node, LookupNode)
            self.trace.append(LookedUp(now, self.node_id, node.name, "timed-out"))
            self.go(node.on_timeout, now, out)
        elif isinstance(node, MenuNode | CollectNode):
            self._questions.silence(node, now, out)
        self._take_typed(now, out)
        return out

    def on_lookup(
        self, result: Mapping[str, str] | None, now: float, *, request: int | None = None
    ) -> list[Action]:
        """The answer of the pending look-up; None: central failed (or could not be reached)."""
        if self.waiting != "lookup" or (request is not None and request != self._request):
            return []
        node = self.flow.nodes[self.node_id]
        assert isinstance(node, LookupNode)
        out: list[Action] = []
        if self._ear.deadline is not None and now > self._ear.deadline:
            self.trace.append(LookedUp(now, self.node_id, node.name, "late"))
            self.go(node.on_timeout, now, out)
        elif result is None:
            self.trace.append(LookedUp(now, self.node_id, node.name, "failed"))
            self.go(node.on_timeout, now, out)
        else:
            fields = {str(k): str(v) for k, v in result.items()}
            prefix = node.into or node.name
            for key, value in fields.items():
                self.context[f"{prefix}.{key}"] = value
            self.trace.append(LookedUp(now, self.node_id, node.name, "answered", fields))
            self.go(node.next, now, out)
        self._take_typed(now, out)
        return out

    def on_played(self, now: float) -> list[Action]:
        """The prompts before an input ended: the caller's time to answer counts from now."""
        self._ear.played(now)
        return []

    # -- moving through nodes -------------------------------------------------------------------

    def go(self, node_id: str, now: float, out: list[Action]) -> None:
        """Enter nodes until one waits (keys, a look-up) or the call leaves the flow."""
        flow = self.flow
        while True:
            self.node_id = node_id
            if not self.count_step(now, out):
                return
            node = flow.nodes[node_id]
            if isinstance(node, PlayNode):
                self.play(node.prompt, node.barge_in, now, out)
                node_id = node.next
            elif isinstance(node, SetNode):
                self.context[node.var] = node.value
                node_id = node.next
            elif isinstance(node, BranchNode):
                node_id = next(
                    (c.next for c in node.cases if holds(c.when, self.context, now, flow.calendar)),
                    node.else_,
                )
            elif isinstance(node, LookupNode):
                if node.prompt is not None:
                    self.play(node.prompt, False, now, out)
                self._request += 1
                args = {k: self._voice.fill(v) for k, v in node.args.items()}
                out.append(Lookup(node.name, args, node.timeout_s, self._request))
                self._ear.wait("lookup", node.timeout_s, now)
                return
            elif isinstance(node, MenuNode):
                self._questions.menu(node_id, node, now, out)
                return
            elif isinstance(node, CollectNode):
                self._questions.entry(node, now, out)
                return
            else:
                self._finish(node, now, out)
                return

    def count_step(self, now: float, out: list[Action]) -> bool:
        """Count a node entered (or a menu said again); past the flow's bound the call ends."""
        self.steps += 1
        if self.steps <= self.flow.max_steps:
            return True
        self._end(Hangup(STEP_LIMIT), now, out)
        return False

    def _finish(self, node: EndNode, now: float, out: list[Action]) -> None:
        if node.prompt is not None:
            self.play(node.prompt, False, now, out)
        self._end(end_action(node, self.context, self._voice), now, out)

    def on_max_wait(self, now: float, key: str = "") -> list[Action]:
        """The call leaves its queue: it waited max_wait_s (the flow goes on at on_max_wait), or
        the caller pressed `key`, the virtual hold key (on at on_callback; another key: nothing)."""
        node = self.flow.nodes[self.node_id]
        t = node.treatment if isinstance(self.ended, ToQueue) and isinstance(node, QueueNode) else None
        target = _queue_exit(t, key)
        if target is None:
            return []
        self.ended = None
        held = Pressed(now, self.node_id, key, f"virtual hold -> {target}")
        self.trace.append(held if key else Silence(now, self.node_id, "max wait reached"))
        out: list[Action] = []
        self.go(target, now, out)
        return out

    def _end(self, action: End, now: float, out: list[Action]) -> None:
        out.append(action)
        self.ended = action
        self._ear.stop()
        self.trace.append(Ended(now, self.node_id, action))

    # -- helpers --------------------------------------------------------------------------------

    def _take_typed(self, now: float, out: list[Action]) -> None:
        while (key := self._ear.next_key()) is not None:
            node = self.flow.nodes[self.node_id]
            if isinstance(node, MenuNode | CollectNode):
                self._questions.key(node, key, now, out)

    def play(self, prompt_id: str, barge_in: bool, now: float, out: list[Action], key: str = "") -> None:
        text = self._voice.text(prompt_id, key)
        out.append(Play(prompt_id, text, barge_in))
        self.trace.append(Heard(now, self.node_id, prompt_id, text))


def _queue_exit(treatment: QueueTreatmentSpec | None, key: str) -> str | None:
    """Where a waiting call goes on: on_max_wait (no key), on_callback (the virtual hold key)."""
    if treatment is None:
        return None
    if not key:
        return treatment.on_max_wait
    return treatment.on_callback if key == treatment.callback_key else None
