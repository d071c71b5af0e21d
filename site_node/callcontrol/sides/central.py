"""What central says on the state stream: its answer to a routing question, the targets it
pushes for calls that must leave, and (pooled mode) a pull of our longest-waiting call."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from site_node.callcontrol.domain import Effect
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.parts import Parts
from site_node.callcontrol.pushed_targets import PushedTarget


class CentralSide:
    def __init__(self, parts: Parts, fx: Callable[[], Effects]) -> None:
        self._leaving = parts.leaving
        self._queues = parts.queues
        self._fx = fx

    def route_decided(
        self, now: float, call_id: str, target_site_id: str | None, decision_id: str = ""
    ) -> list[Effect]:
        """Central's answer to AskRoute (None or this site: stay; ask again later)."""
        fx = self._fx()
        if self._leaving.route_decided(now, call_id, target_site_id, decision_id, fx):
            self._queues.dispatch(now, fx)
        return fx.items

    def overflow_targets(self, now: float, epoch: int, targets: Sequence[PushedTarget]) -> list[Effect]:
        """Central pushed where calls that must leave should go now (leaving.py offers at once)."""
        self._leaving.targets.update(now, epoch, targets)
        return []

    def pull_call(self, now: float, skill_group: str, to_site_id: str, decision_id: str = "") -> list[Effect]:
        """Pooled mode: an agent is free at `to_site_id`: offer it our longest-waiting call."""
        fx = self._fx()
        self._leaving.pull_call(now, skill_group, to_site_id, decision_id, fx)
        return fx.items
