"""An agent's transfers from the desk: blind ones, consultations (completed, made a three-way
conference, or cancelled), here or to another city."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from site_node.callcontrol.directory import TransferTarget
from site_node.callcontrol.domain import Effect
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.parts import Parts
from site_node.callcontrol.sides.agent_desk import agent_call


class TransferDesk:
    def __init__(self, parts: Parts, fx: Callable[[], Effects]) -> None:
        self._p = parts
        self._fx = fx

    def transfer(
        self,
        now: float,
        code: str,
        call_id: str,
        target: TransferTarget,
        *,
        blind: bool,
        attached: Mapping[str, str] | None = None,
    ) -> list[Effect]:
        call = agent_call(self._p, code, call_id)
        fx = self._fx()
        self._p.transfers.transfer(call, code, target, blind, attached or {}, now, fx)
        self._p.queues.dispatch(now, fx)
        return fx.items

    def complete_transfer(self, now: float, code: str, call_id: str) -> list[Effect]:
        call = agent_call(self._p, code, call_id)
        fx = self._fx()
        self._p.consults.complete(call, now, fx)
        self._p.queues.dispatch(now, fx)
        return fx.items

    def conference(self, now: float, code: str, call_id: str) -> list[Effect]:
        call = agent_call(self._p, code, call_id)
        fx = self._fx()
        self._p.consults.conference(call, now, fx)
        return fx.items

    def cancel_transfer(self, now: float, code: str, call_id: str) -> list[Effect]:
        call = agent_call(self._p, code, call_id)
        fx = self._fx()
        self._p.consults.cancel(call, now, fx)
        self._p.queues.dispatch(now, fx)
        return fx.items
