"""What a group leader's desk asks (SPEC F24) on an agent of its team: monitor, whisper, barge
in, intercept; force ready, not ready, logout. Supervision follows every operation after."""

from __future__ import annotations

from collections.abc import Callable

from site_node.callcontrol.domain import Effect
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.parts import Parts


class SupervisorDesk:
    def __init__(self, parts: Parts, fx: Callable[[], Effects]) -> None:
        self._sup = parts.supervision
        self._queues = parts.queues
        self._fx = fx

    def team(self, leader: str) -> list[str]:
        """The agents `leader` may supervise (PermissionDenied for an agent)."""
        return self._sup.team(leader)

    def check_may_supervise(self, leader: str, agent: str) -> None:
        self._sup.check_may_act(leader, agent)

    def supervise(self, now: float, leader: str, agent: str, mode: str) -> list[Effect]:
        """Monitor, whisper or barge in on the agent's current call (or change mode)."""
        fx = self._fx()
        self._sup.supervise(leader, agent, mode, now, fx)
        return fx.items

    def leave_supervision(self, now: float, leader: str) -> list[Effect]:
        fx = self._fx()
        self._sup.leave(leader, now, fx)
        return fx.items

    def intercept(self, now: float, leader: str, agent: str) -> list[Effect]:
        """The leader takes the agent's call over; the agent goes to wrap-up."""
        fx = self._fx()
        self._sup.intercept(leader, agent, now, fx)
        self._queues.dispatch(now, fx)
        return fx.items

    def force_state(self, now: float, leader: str, agent: str, ready: bool, reason: str = "") -> list[Effect]:
        fx = self._fx()
        self._sup.force_state(leader, agent, ready, reason, now, fx)
        self._queues.dispatch(now, fx)
        return fx.items

    def force_logout(self, now: float, leader: str, agent: str) -> list[Effect]:
        fx = self._fx()
        self._sup.force_logout(leader, agent, now, fx)
        return fx.items

    @property
    def supervising(self) -> bool:
        """Some supervision (or pending forced logout) needs following after each operation."""
        return self._sup.active

    def follow_supervision(self, now: float) -> list[Effect]:
        """Call after every operation while `supervising`: supervision ends with the agent's leg,
        a forced logout happens once the agent is free."""
        fx = self._fx()
        self._sup.follow(now, fx)
        return fx.items
