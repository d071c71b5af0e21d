"""One call's way through an IVR flow: a pure state machine, time given, actions returned.

The run holds the flow object it started on, so a newer version loaded meanwhile affects only
new calls (F8). It waits for one of three things: keys (a menu or a collection), a look-up's
answer, or its `deadline`; anything else that arrives (a stale timer, a late answer, keys after
the end) changes nothing and returns no action.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from site_node.callcontrol.ivr_flow.actions import (
    Action,
    Announcements,
    CollectDigits,
    End,
    Ended,
    FaxOnDemand,
    Hangup,
    Heard,
    LookedUp,
    Lookup,
    OfferCallback,
    Play,
    Pressed,
    Silence,
    ToQueue,
    ToVoicemail,
    TraceEntry,
)
from site_node.callcontrol.ivr_flow.conditions import holds
from vcc.ivr.flow import (
    LANGUAGE_VAR,
    BranchNode,
    CallbackNode,
    CollectNode,
    EndNode,
    FaxNode,
    Flow,
    LookupNode,
    MenuNode,
    MenuOption,
    PlayNode,
    QueueNode,
    SetNode,
    VoicemailNode,
)

Waiting = Literal["idle", "digits", "lookup", "ended"]
# The reason of a call ended because it went past the flow's max_steps.
STEP_LIMIT = "step-limit"
_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*(?:\.[a-z0-9_]+)*)\}")
_DIGITS = set("0123456789")


class FlowRun:
    """start() once, then on_digits / on_timeout / on_lookup / on_played until `ended` is set."""

    def __init__(self) -> None:
        self._flow: Flow | None = None
        self.context: dict[str, str] = {}
        self.trace: list[TraceEntry] = []
        self.ended: End | None = None
        self.waiting: Waiting = "idle"
        self.node_id = ""
        self.steps = 0
        self._deadline: float | None = None
        self._timeout_s = 0.0
        # Keys typed ahead of the prompt that asks for them (barge-in), taken in order.
        self._typed = ""
        self._retries = 0
        self._collected = ""
        self._offered: list[MenuOption] = []
        self._menus: list[str] = []
        self._request = 0

    @property
    def flow(self) -> Flow:
        if self._flow is None:
            raise RuntimeError("the flow run has not started")
        return self._flow

    @property
    def deadline(self) -> float | None:
        """When on_timeout is due (a silence, or a look-up not answered); None when not waiting."""
        return self._deadline

    @property
    def retries(self) -> int:
        """Wrong entries and silences at the current menu or collection so far."""
        return self._retries

    @property
    def language(self) -> str:
        flow = self.flow
        for var in (LANGUAGE_VAR, "customer.language"):
            lang = self.context.get(var, "")
            if lang in flow.languages:
                return lang
        return flow.languages[0]

    # -- events ---------------------------------------------------------------------------------

    def start(self, flow: Flow, caller_context: Mapping[str, str], now: float) -> list[Action]:
        if self._flow is not None:
            raise RuntimeError("a flow run starts once")
        self._flow = flow
        self.context = dict(caller_context)
        out: list[Action] = []
        self._go(flow.start, now, out)
        return out

    def on_digits(self, digits: str, now: float) -> list[Action]:
        if self.waiting in ("idle", "ended"):
            return []
        self._typed += digits
        out: list[Action] = []
        self._take_typed(now, out)
        return out

    def on_timeout(self, now: float) -> list[Action]:
        if self._deadline is None or now < self._deadline:
            return []
        out: list[Action] = []
        node = self.flow.nodes[self.node_id]
        if self.waiting == "lookup":
            assert isinstance(node, LookupNode)
            self.trace.append(LookedUp(now, self.node_id, node.name, "timed-out"))
            self._go(node.on_timeout, now, out)
        elif isinstance(node, MenuNode):
            self.trace.append(Silence(now, self.node_id, "no key"))
            self._menu_retry(node, self.flow.no_input_prompt, now, out)
        elif isinstance(node, CollectNode):
            if node.terminator is None and len(self._collected) >= node.min_length:
                # No terminator to wait for: a pause ends the entry.
                self.trace.append(Silence(now, self.node_id, "entry ended"))
                self._collected_done(node, now, out)
            else:
                self.trace.append(Silence(now, self.node_id, "no entry"))
                self._collect_retry(node, self.flow.no_input_prompt, now, out)
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
        if self._deadline is not None and now > self._deadline:
            self.trace.append(LookedUp(now, self.node_id, node.name, "late"))
            self._go(node.on_timeout, now, out)
        elif result is None:
            self.trace.append(LookedUp(now, self.node_id, node.name, "failed"))
            self._go(node.on_timeout, now, out)
        else:
            fields = {str(k): str(v) for k, v in result.items()}
            prefix = node.into or node.name
            for key, value in fields.items():
                self.context[f"{prefix}.{key}"] = value
            self.trace.append(LookedUp(now, self.node_id, node.name, "answered", fields))
            self._go(node.next, now, out)
        self._take_typed(now, out)
        return out

    def on_played(self, now: float) -> list[Action]:
        """The prompts before an input ended: the caller's time to answer counts from now."""
        if self.waiting == "digits":
            self._deadline = now + self._timeout_s
        return []

    # -- moving through nodes -------------------------------------------------------------------

    def _go(self, node_id: str, now: float, out: list[Action]) -> None:
        """Enter nodes until one waits (keys, a look-up) or the call leaves the flow."""
        flow = self.flow
        while True:
            self.node_id = node_id
            if not self._step(now, out):
                return
            node = flow.nodes[node_id]
            if isinstance(node, PlayNode):
                self._play(node.prompt, node.barge_in, now, out)
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
                    self._play(node.prompt, False, now, out)
                self._request += 1
                args = {k: self._fill(v) for k, v in node.args.items()}
                out.append(Lookup(node.name, args, node.timeout_s, self._request))
                self._wait("lookup", node.timeout_s, now)
                return
            elif isinstance(node, MenuNode):
                if node_id in self._menus:
                    del self._menus[self._menus.index(node_id) + 1 :]
                else:
                    self._menus.append(node_id)
                self._retries = 0
                self._offered = [
                    o
                    for o in node.options
                    if o.when is None or holds(o.when, self.context, now, flow.calendar)
                ]
                self._present(node, now, out)
                return
            elif isinstance(node, CollectNode):
                self._retries = 0
                self._ask(node, now, out)
                return
            else:
                self._finish(node, now, out)
                return

    def _step(self, now: float, out: list[Action]) -> bool:
        """Count a node entered (or a menu said again); past the flow's bound the call ends."""
        self.steps += 1
        if self.steps <= self.flow.max_steps:
            return True
        self._end(Hangup(STEP_LIMIT), now, out)
        return False

    def _finish(self, node: EndNode, now: float, out: list[Action]) -> None:
        if node.prompt is not None:
            self._play(node.prompt, False, now, out)
        action: End
        if isinstance(node, QueueNode):
            priority = node.priority
            if node.priority_by is not None:
                by = node.priority_by
                priority = by.map.get(self.context.get(by.var, ""), by.default)
            action = ToQueue(node.skill_group, priority, self._announcements(node))
        elif isinstance(node, VoicemailNode):
            action = ToVoicemail(node.box)
        elif isinstance(node, CallbackNode):
            action = OfferCallback(node.skill_group, self.context.get(node.number, ""))
        elif isinstance(node, FaxNode):
            action = FaxOnDemand(node.document)
        else:
            action = Hangup(node.reason)
        self._end(action, now, out)

    def _announcements(self, node: QueueNode) -> Announcements | None:
        spec = node.treatment
        if spec is None:
            return None
        flow, lang = self.flow, self.language
        # The queue fills these two in as the wait goes on; the caller's own variables now.
        keep = {"position": "{position}", "wait_min": "{wait_min}"}

        def text(prompt_id: str | None) -> str:
            return "" if prompt_id is None else self._fill(flow.prompt_text(prompt_id, lang), keep)

        return Announcements(
            spec.position_prompt or "",
            text(spec.position_prompt),
            spec.wait_prompt or "",
            text(spec.wait_prompt),
            spec.announce_every_s,
            spec.max_wait_s,
        )

    def on_max_wait(self, now: float) -> list[Action]:
        """The call waited its queue's max_wait_s: the flow goes on at the queue's on_max_wait."""
        if not isinstance(self.ended, ToQueue):
            return []
        node = self.flow.nodes[self.node_id]
        if not isinstance(node, QueueNode) or node.treatment is None or node.treatment.on_max_wait is None:
            return []
        self.ended = None
        self.trace.append(Silence(now, self.node_id, "max wait reached"))
        out: list[Action] = []
        self._go(node.treatment.on_max_wait, now, out)
        return out

    def _end(self, action: End, now: float, out: list[Action]) -> None:
        out.append(action)
        self.ended = action
        self.waiting = "ended"
        self._deadline = None
        self._typed = ""
        self.trace.append(Ended(now, self.node_id, action))

    # -- menus ----------------------------------------------------------------------------------

    def _present(self, node: MenuNode, now: float, out: list[Action]) -> None:
        if node.prompt is not None:
            self._play(node.prompt, True, now, out)
        for key, option in enumerate(self._offered, start=1):
            self._play(option.prompt, True, now, out, key=str(key))
        if node.agent is not None and node.agent_prompt is not None:
            self._play(node.agent_prompt, True, now, out, key="0")
        out.append(CollectDigits(1, None, node.timeout_s))
        self._wait("digits", node.timeout_s, now)

    def _menu_key(self, node: MenuNode, key: str, now: float, out: list[Action]) -> None:
        if key == "#":
            self.trace.append(Pressed(now, self.node_id, key, "repeat"))
            if self._step(now, out):
                self._present(node, now, out)
        elif key == "*":
            if len(self._menus) >= 2:
                back = self._menus[-2]
                self.trace.append(Pressed(now, self.node_id, key, f"back -> {back}"))
                self._go(back, now, out)
            else:
                self.trace.append(Pressed(now, self.node_id, key, "repeat (top menu)"))
                if self._step(now, out):
                    self._present(node, now, out)
        elif key == "0" and node.agent is not None:
            self.trace.append(Pressed(now, self.node_id, key, f"agent -> {node.agent}"))
            self._go(node.agent, now, out)
        elif key in _DIGITS and 1 <= int(key) <= len(self._offered):
            option = self._offered[int(key) - 1]
            self.trace.append(Pressed(now, self.node_id, key, f"option {key} -> {option.next}"))
            self._go(option.next, now, out)
        else:
            self.trace.append(Pressed(now, self.node_id, key, "invalid"))
            self._menu_retry(node, self.flow.invalid_prompt, now, out)

    def _menu_retry(self, node: MenuNode, prompt: str | None, now: float, out: list[Action]) -> None:
        self._retries += 1
        if self._retries > node.retries:
            self._go(node.on_fail or self.flow.on_fail, now, out)
            return
        if not self._step(now, out):
            return
        if prompt is not None:
            self._play(prompt, False, now, out)
        self._present(node, now, out)

    # -- collections ----------------------------------------------------------------------------

    def _ask(self, node: CollectNode, now: float, out: list[Action]) -> None:
        self._collected = ""
        self._play(node.prompt, True, now, out)
        out.append(CollectDigits(node.max_length, node.terminator, node.timeout_s))
        self._wait("digits", node.timeout_s, now)

    def _collect_key(self, node: CollectNode, key: str, now: float, out: list[Action]) -> None:
        shown = "*" if node.mask and key in _DIGITS else key
        if key == node.terminator:
            self.trace.append(Pressed(now, self.node_id, shown, "end of entry"))
            self._collected_done(node, now, out)
        elif key in _DIGITS:
            self._collected += key
            self.trace.append(
                Pressed(now, self.node_id, shown, f"digit {len(self._collected)}/{node.max_length}")
            )
            if len(self._collected) >= node.max_length:
                self._collected_done(node, now, out)
            else:
                # Each key gives the caller the full time again for the next.
                self._wait("digits", node.timeout_s, now)
        else:
            self.trace.append(Pressed(now, self.node_id, shown, "invalid"))
            self._collect_retry(node, self.flow.invalid_prompt, now, out)

    def _collected_done(self, node: CollectNode, now: float, out: list[Action]) -> None:
        if node.min_length <= len(self._collected) <= node.max_length:
            self.context[node.into] = self._collected
            self._collected = ""
            self._go(node.next, now, out)
        else:
            self._collect_retry(node, self.flow.invalid_prompt, now, out)

    def _collect_retry(self, node: CollectNode, prompt: str | None, now: float, out: list[Action]) -> None:
        self._retries += 1
        self._collected = ""
        if self._retries > node.retries:
            self._go(node.on_fail or self.flow.on_fail, now, out)
            return
        if not self._step(now, out):
            return
        if prompt is not None:
            self._play(prompt, False, now, out)
        self._ask(node, now, out)

    # -- helpers --------------------------------------------------------------------------------

    def _take_typed(self, now: float, out: list[Action]) -> None:
        while self._typed and self.waiting == "digits":
            key, self._typed = self._typed[0], self._typed[1:]
            if key.isspace():
                continue
            node = self.flow.nodes[self.node_id]
            if isinstance(node, MenuNode):
                self._menu_key(node, key, now, out)
            elif isinstance(node, CollectNode):
                self._collect_key(node, key, now, out)

    def _wait(self, what: Waiting, timeout_s: float, now: float) -> None:
        self.waiting = what
        self._timeout_s = timeout_s
        self._deadline = now + timeout_s

    def _play(self, prompt_id: str, barge_in: bool, now: float, out: list[Action], key: str = "") -> None:
        flow = self.flow
        text = self._fill(flow.prompt_text(prompt_id, self.language))
        if key:
            # The option first, then its key (the bank proposal: "查询,请按1").
            text += flow.prompt_text(flow.key_prompt, self.language).replace("{key}", key)
        out.append(Play(prompt_id, text, barge_in))
        self.trace.append(Heard(now, self.node_id, prompt_id, text))

    def _fill(self, template: str, extra: Mapping[str, str] | None = None) -> str:
        values = self.context if extra is None else {**self.context, **extra}
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), ""), template)
