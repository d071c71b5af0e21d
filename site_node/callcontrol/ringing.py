"""Offering a call to one agent: the ring, the screen pop it carries, the offer withdrawn, and
ring-no-answer (SPEC F11: the agent turns not ready; the facade puts the caller back in queue)."""

from __future__ import annotations

from routing import agents as fsm
from site_node.callcontrol.agents import Agents
from site_node.callcontrol.counters import SiteCounters
from site_node.callcontrol.domain import Call, CallState, ToAgent, ToCaller
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.timers import Timers
from vcc.call_events import EventKind
from vcc.config import SiteConfig

Data = tuple[tuple[str, str], ...]


class Ringing:
    def __init__(self, site: SiteConfig, agents: Agents, timers: Timers, counters: SiteCounters) -> None:
        self.site = site
        self._agents = agents
        self._timers = timers
        self._counters = counters

    def ring(self, call: Call, code: str, now: float, fx: Effects, data: Data = ()) -> None:
        """Offer the call to an agent the ACD (or a peer's offer) reserved."""
        self._agents.reserve(code, call.call_id, now)
        call.state = CallState.RINGING
        call.agent_code = code
        if call.purpose == "transfer-consult":
            # The caller is on hold and hears nothing of this: history, not a ring of the call.
            data = (("stage", "consult-ringing"), ("from", call.from_agent_code), *data)
            fx.journal(
                call, EventKind.TRANSFERRED, now, agent_code=code, skill_group=call.skill_group, data=data
            )
        else:
            fx.journal(call, EventKind.RINGING, now, agent_code=code, skill_group=call.skill_group, data=data)
        if not call.guest_of:
            fx.add(ToCaller(call.call_id, "ringing", now, site_id=self.site.id, agent_code=code))
        fx.add(self._agents.state_event(code, now))
        fx.add(self.offered(call, code, now, call.purpose, call.from_agent_code))
        self._timers.arm(now + self.site.ring_timeout_s, "ring", call.call_id, code)

    def offered(self, call: Call, code: str, now: float, purpose: str, from_agent_code: str) -> ToAgent:
        """The offer banner and screen pop at the agent's desk."""
        return ToAgent(
            code,
            "offered",
            now,
            call_id=call.call_id,
            ani=call.ani,
            dnis=call.dnis,
            skill_group=call.skill_group,
            entry_site_id=call.entry_site_id,
            attached=tuple(sorted(call.attached.items())),
            customer=call.customer,
            ring_timeout_s=self.site.ring_timeout_s,
            waited_s=now - call.arrived_at,
            purpose=purpose,
            from_agent_code=from_agent_code,
        )

    def no_answer(self, call: Call, code: str, now: float, fx: Effects) -> None:
        """The ring timed out: the agent turns not ready (reason: no answer), the offer is withdrawn."""
        self._counters.ring_no_answer += 1
        fx.journal(call, EventKind.RING_NO_ANSWER, now, agent_code=code)
        self._agents.apply(code, fsm.RingTimeout(), now, fx)
        fx.add(ToAgent(code, "withdrawn", now, call_id=call.call_id, reason="no-answer"))

    def withdraw(self, call: Call, now: float, fx: Effects, reason: str) -> None:
        code = call.agent_code
        fx.add(ToAgent(code, "withdrawn", now, call_id=call.call_id, reason=reason))
        self._agents.apply(code, fsm.OfferWithdrawn(), now, fx)
