"""A flow run's questions to the caller: its menus (the options this caller is offered, the way
back with *, say again with #) and its digit entries (a PIN, an account), each key, silence and
wrong answer, and the retries before the flow's on_fail."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from site_node.callcontrol.ivr_flow.actions import Action, CollectDigits, Pressed, Silence, TraceEntry
from site_node.callcontrol.ivr_flow.conditions import holds
from site_node.callcontrol.ivr_flow.inputs import (
    DIGITS,
    Choose,
    Entered,
    SayAgain,
    Typed,
    entry_key,
    menu_key,
)
from site_node.callcontrol.ivr_flow.listening import Listening
from vcc.ivr.flow import CollectNode, Flow, MenuNode, MenuOption

# A menu or a digit entry: what is asked again after a wrong answer or a silence.
_Asking = TypeVar("_Asking", MenuNode, CollectNode)


class Moves(Protocol):
    """What the questions need of their run: where it is, its trace, and how it goes on."""

    node_id: str
    context: dict[str, str]
    trace: list[TraceEntry]

    @property
    def flow(self) -> Flow: ...

    def go(self, node_id: str, now: float, out: list[Action]) -> None:
        """Enter `node_id` and go on until the call waits or leaves the flow."""

    def count_step(self, now: float, out: list[Action]) -> bool:
        """Count a step; False: past the flow's bound (the call has ended)."""

    def play(self, prompt_id: str, barge_in: bool, now: float, out: list[Action], key: str = "") -> None:
        """Say a prompt (with the option's key, in a menu)."""


class Questions:
    def __init__(self, run: Moves, ear: Listening) -> None:
        self._run = run
        self._ear = ear
        self._offered: list[MenuOption] = []
        # The menus on the way here, the current one last (* goes one back).
        self._menus: list[str] = []

    def menu(self, node_id: str, node: MenuNode, now: float, out: list[Action]) -> None:
        """Entering a menu: the way here (back to an earlier menu cuts it), the options offered."""
        if node_id in self._menus:
            del self._menus[self._menus.index(node_id) + 1 :]
        else:
            self._menus.append(node_id)
        self._ear.retries = 0
        run = self._run
        self._offered = [
            o for o in node.options if o.when is None or holds(o.when, run.context, now, run.flow.calendar)
        ]
        self._present(node, now, out)

    def entry(self, node: CollectNode, now: float, out: list[Action]) -> None:
        """Entering a digit collection."""
        self._ear.retries = 0
        self._ask(node, now, out)

    def key(self, node: MenuNode | CollectNode, key: str, now: float, out: list[Action]) -> None:
        if isinstance(node, MenuNode):
            self._menu_key(node, key, now, out)
        else:
            self._entry_key(node, key, now, out)

    def silence(self, node: MenuNode | CollectNode, now: float, out: list[Action]) -> None:
        """The caller's time to answer ran out."""
        run = self._run
        if isinstance(node, MenuNode):
            run.trace.append(Silence(now, run.node_id, "no key"))
            self._retry(node, run.flow.no_input_prompt, self._present, now, out)
        elif node.terminator is None and len(self._ear.collected) >= node.min_length:
            # No terminator to wait for: a pause ends the entry.
            run.trace.append(Silence(now, run.node_id, "entry ended"))
            self._entered(node, self._ear.collected, now, out)
        else:
            run.trace.append(Silence(now, run.node_id, "no entry"))
            self._ear.collected = ""
            self._retry(node, run.flow.no_input_prompt, self._ask, now, out)

    # -- menus ----------------------------------------------------------------------------------

    def _present(self, node: MenuNode, now: float, out: list[Action]) -> None:
        play = self._run.play
        if node.prompt is not None:
            play(node.prompt, True, now, out)
        for key, option in enumerate(self._offered, start=1):
            play(option.prompt, True, now, out, key=str(key))
        if node.agent is not None and node.agent_prompt is not None:
            play(node.agent_prompt, True, now, out, key="0")
        out.append(CollectDigits(1, None, node.timeout_s))
        self._ear.wait("digits", node.timeout_s, now)

    def _menu_key(self, node: MenuNode, key: str, now: float, out: list[Action]) -> None:
        run = self._run
        meaning = menu_key(node, self._offered, self._menus, key)
        run.trace.append(Pressed(now, run.node_id, key, meaning.effect))
        if isinstance(meaning, Choose):
            run.go(meaning.target, now, out)
        elif isinstance(meaning, SayAgain):
            if run.count_step(now, out):
                self._present(node, now, out)
        else:
            self._retry(node, run.flow.invalid_prompt, self._present, now, out)

    # -- digit entries --------------------------------------------------------------------------

    def _ask(self, node: CollectNode, now: float, out: list[Action]) -> None:
        self._ear.collected = ""
        self._run.play(node.prompt, True, now, out)
        out.append(CollectDigits(node.max_length, node.terminator, node.timeout_s))
        self._ear.wait("digits", node.timeout_s, now)

    def _entry_key(self, node: CollectNode, key: str, now: float, out: list[Action]) -> None:
        run = self._run
        meaning = entry_key(node, self._ear.collected, key)
        shown = "*" if node.mask and key in DIGITS else key
        run.trace.append(Pressed(now, run.node_id, shown, meaning.effect))
        if isinstance(meaning, Entered):
            self._entered(node, meaning.value, now, out)
        elif isinstance(meaning, Typed):
            self._ear.collected += key
            # Each key gives the caller the full time again for the next.
            self._ear.wait("digits", node.timeout_s, now)
        else:
            self._ear.collected = ""
            self._retry(node, run.flow.invalid_prompt, self._ask, now, out)

    def _entered(self, node: CollectNode, value: str, now: float, out: list[Action]) -> None:
        self._run.context[node.into] = value
        self._ear.collected = ""
        if len(value) == node.max_length and node.terminator is not None:
            # Full length ends the entry; the caller's terminator right after it belongs to it
            # too, not to the next menu (where "#" would mean "say it again").
            self._ear.swallow = node.terminator
        self._run.go(node.next, now, out)

    # -- both -----------------------------------------------------------------------------------

    def _retry(
        self, node: _Asking, prompt: str | None, again: Callable[[_Asking, float, list[Action]], None],
        now: float, out: list[Action],
    ) -> None:  # fmt: skip
        """A wrong answer or a silence: ask `again` (after `prompt`), or past the node's retries
        go on at its on_fail (or the flow's)."""
        run = self._run
        self._ear.retries += 1
        if self._ear.retries > node.retries:
            run.go(node.on_fail or run.flow.on_fail, now, out)
            return
        if not run.count_step(now, out):
            return
        if prompt is not None:
            run.play(prompt, False, now, out)
        again(node, now, out)
