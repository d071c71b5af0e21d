"""Queues and agent selection (SPEC F10, F12): a call joins its skill group's queue, keeps its
place by arrival time, and rings the agent the ACD chooses as soon as one is ready.

A call whose screen pop is still being fetched is queued for the caller but parked outside the
ACD until the look-up is done (bounded by the screen-pop wait).
"""

from __future__ import annotations

from collections.abc import Callable

from routing.acd import Acd
from routing.waits import expected_wait_s, smoothed
from site_node.callcontrol.agents import Agents
from site_node.callcontrol.calls import CallBook
from site_node.callcontrol.domain import Call, CallState, ToCaller
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.ringing import Ringing
from vcc.call_events import EventKind
from vcc.config import SiteConfig

# Told whenever a call joins the ACD's queue (the virtual center decides when to ask central).
WaitingListener = Callable[[Call, float, Effects], None]


class Queues:
    def __init__(self, site: SiteConfig, acd: Acd, calls: CallBook, agents: Agents, ringing: Ringing) -> None:
        self.acd = acd
        self._calls = calls
        self._agents = agents
        self._ringing = ringing
        self.mean_handle_s = {g.id: 30.0 for g in site.skill_groups}
        self._listeners: list[WaitingListener] = []

    def on_waiting(self, listener: WaitingListener) -> None:
        self._listeners.append(listener)

    def enqueue(self, call: Call, group: str, now: float, fx: Effects, reason: str = "") -> None:
        call.state = CallState.QUEUED
        call.skill_group = group
        call.agent_code = ""
        if call.customer_pending:
            # Its place is kept by arrival time: it joins the ACD when the screen pop is ready.
            call.parked = True
            position = self.acd.waiting(group) + 1
        else:
            self.acd.enqueue(call.call_id, group, call.arrived_at, call.priority)
            position = self.acd.position(call.call_id)
            self._waiting(call, now, fx)
        data = (("reason", reason),) if reason else ()
        fx.journal(call, EventKind.QUEUED, now, skill_group=group, data=data)
        fx.add(
            ToCaller(
                call.call_id,
                "queued",
                now,
                skill_group=group,
                position=position,
                expected_wait_s=self.expected_wait(group, position),
            )
        )

    def unpark(self, call: Call, now: float, fx: Effects) -> None:
        """The screen pop is ready: the parked call takes its place in the ACD."""
        if call.parked:
            call.parked = False
            self.acd.enqueue(call.call_id, call.skill_group, call.arrived_at, call.priority)
            self._waiting(call, now, fx)

    def leave(self, call: Call) -> None:
        """The call leaves the queue (the caller hung up, another city serves it)."""
        self.acd.dequeue(call.call_id)

    def _waiting(self, call: Call, now: float, fx: Effects) -> None:
        for listener in self._listeners:
            listener(call, now, fx)

    def expected_wait(self, group: str, position: int) -> float:
        """Expected wait of the call at `position`; -1 when nobody is staffed for the group."""
        ewt = expected_wait_s(position, self._agents.staffed[group], self.mean_handle_s[group])
        return ewt if ewt != float("inf") else -1.0

    def handled(self, group: str, handle_s: float) -> None:
        """A call of the group was handled in `handle_s`: the expected waits follow."""
        self.mean_handle_s[group] = smoothed(self.mean_handle_s[group], handle_s)

    def dispatch(self, now: float, fx: Effects) -> None:
        """Connect waiting calls with ready agents."""
        for match in self.acd.matches():
            self._ringing.ring(self._calls.live[match.call.call_id], match.agent_code, now, fx)

    def oldest_wait_s(self, group: str, now: float) -> float:
        oldest = self.acd.oldest_arrival(group)
        return 0.0 if oldest is None else now - oldest
