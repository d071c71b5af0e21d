"""Other cities' callers served here (SPEC F13, F19), the target's side of a remote leg.

The call is a guest: an agent is reserved at once (calls are only ever queued at their origin),
its events are journaled here, and the caller is connected only when the origin confirms the
answer. Whatever ends the leg here — the agent, ring-no-answer, the origin, this site stopping —
the origin hears of it and keeps the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

from routing.agents import AgentState
from site_node.callcontrol.agents import Agents
from site_node.callcontrol.calls import CallBook
from site_node.callcontrol.connected import ConnectedCalls
from site_node.callcontrol.counters import SiteCounters
from site_node.callcontrol.domain import (
    Call,
    CallState,
    CustomerInfo,
    Effect,
    LegToOrigin,
    ToAgent,
)
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.queues import Queues
from site_node.callcontrol.resources import Resources
from site_node.callcontrol.ringing import Ringing
from vcc.call_events import EventKind
from vcc.errors import FailedPrecondition, InvalidArgument


@dataclass(frozen=True, slots=True)
class RemoteOfferIn:
    """What a target site is offered (SitePeerService.ServeCall's first message)."""

    offer_id: str
    call_id: str
    origin_site_id: str
    skill_group: str
    priority: int
    arrived_at: float
    ani: str
    dnis: str
    attached: tuple[tuple[str, str], ...] = ()
    customer: CustomerInfo | None = None
    agent_code: str = ""
    purpose: str = "overflow"
    from_agent_code: str = ""


class GuestCalls:
    def __init__(
        self,
        site_id: str,
        calls: CallBook,
        resources: Resources,
        agents: Agents,
        queues: Queues,
        ringing: Ringing,
        connected: ConnectedCalls,
        counters: SiteCounters,
    ) -> None:
        self.site_id = site_id
        self._calls = calls
        self._resources = resources
        self._agents = agents
        self._queues = queues
        self._ringing = ringing
        self._connected = connected
        self._counters = counters
        # offer id -> call id
        self._legs: dict[str, str] = {}

    def serve(self, now: float, offer: RemoteOfferIn, fx: Effects) -> tuple[str | None, str]:
        """Reserve an agent for an offered call: (agent code, "") or (None, why not)."""
        if offer.origin_site_id == self.site_id or not offer.offer_id or not offer.call_id:
            raise InvalidArgument(
                "bad-offer", "offer: origin must be another site; offer_id and call_id required"
            )
        if offer.offer_id in self._legs:
            raise FailedPrecondition("offer-exists", f"offer {offer.offer_id} is already being served")
        if self._calls.get(offer.call_id) is not None:
            return None, "call-already-here"
        if offer.skill_group not in self._queues.acd.skill_groups and not offer.agent_code:
            return None, "unknown-skill-group"
        tie = self._resources.ties.get(offer.origin_site_id)
        if tie is None:
            return None, "no-tie-trunk"
        code = self._reserve_agent(offer)
        if code is None:
            return None, "no-agent"
        if not tie.acquire():
            self._agents.unreserve(code)
            return None, "no-tie-channel"
        call = Call(
            offer.call_id,
            offer.offer_id,
            offer.ani,
            offer.dnis,
            offer.origin_site_id,
            "",
            offer.arrived_at,
            dict(offer.attached),
            state=CallState.RINGING,
            skill_group=offer.skill_group,
            customer=offer.customer,
            guest_of=offer.origin_site_id,
            offer_id=offer.offer_id,
            purpose=offer.purpose,
            from_agent_code=offer.from_agent_code,
        )
        self._calls.resume_seq(call)
        self._calls.admit(call, keyed=False)
        self._legs[offer.offer_id] = call.call_id
        self._ringing.ring(
            call, code, now, fx, data=(("origin", offer.origin_site_id), ("offer_id", offer.offer_id))
        )
        return code, ""

    def _reserve_agent(self, offer: RemoteOfferIn) -> str | None:
        if offer.agent_code:
            agent = self._agents.agents.get(offer.agent_code)
            if agent is None or agent.state != AgentState.READY:
                return None
            self._queues.acd.agent_unavailable(agent.code)
            return agent.code
        return self._queues.acd.take_ready_agent(offer.skill_group)

    def call_of(self, offer_id: str) -> Call | None:
        return self._calls.get(self._legs.get(offer_id, ""))

    # What the origin says -------------------------------------------------------------------

    def answer_confirmed(self, now: float, offer_id: str, fx: Effects) -> None:
        call = self.call_of(offer_id)
        if call is None or call.state != CallState.RINGING or not call.answer_asked:
            return
        self._connected.connect(call, now, fx)
        self._counters.served_for_others += 1

    def caller_gone(self, now: float, offer_id: str, reason: str, fx: Effects) -> None:
        """The origin ended the leg (caller hung up, offer withdrawn, origin lost)."""
        call = self.call_of(offer_id)
        if call is None:
            return
        if call.state == CallState.RINGING:
            self._ringing.withdraw(call, now, fx, reason)
        else:
            fx.journal(
                call, EventKind.CALLER_HUNG_UP, now, agent_code=call.agent_code, data=(("reason", reason),)
            )
            self._connected.end_agent_leg(call, now, fx, reason)
        self.close(call)

    def close(self, call: Call) -> None:
        if call.state in (CallState.TALKING, CallState.HELD):
            self._counters.served_for_others -= 1
        call.state = CallState.ENDED
        self._resources.release_tie(call.guest_of)
        self._legs.pop(call.offer_id, None)
        self._calls.left(call)

    # The agent's side of a guest call -------------------------------------------------------

    def answer(self, call: Call) -> list[Effect]:
        if call.state != CallState.RINGING:
            raise FailedPrecondition("call-not-ringing", f"call {call.call_id} is {call.state}, not ringing")
        if call.answer_asked:
            return []
        # The origin confirms: only then is the caller connected (never to two agents).
        call.answer_asked = True
        return [LegToOrigin(call.offer_id, "answer_asked", agent_code=call.agent_code)]

    @staticmethod
    def held(call: Call, hold: bool) -> LegToOrigin:
        return LegToOrigin(call.offer_id, "held" if hold else "retrieved", agent_code=call.agent_code)

    def agent_hang_up(self, call: Call, now: float, fx: Effects) -> None:
        ConnectedCalls.check_connected(call)
        code = call.agent_code
        fx.journal(call, EventKind.AGENT_HUNG_UP, now, agent_code=code)
        self._connected.end_agent_leg(call, now, fx, "agent-hung-up")
        fx.add(LegToOrigin(call.offer_id, "hung_up", agent_code=code))
        self.close(call)

    def ring_expired(self, call: Call, code: str, now: float, fx: Effects) -> None:
        if call.state != CallState.RINGING or call.agent_code != code or call.answer_asked:
            # Answered, waiting for the origin's confirmation: the stream settles it, not the timer.
            return
        self._ringing.no_answer(call, code, now, fx)
        fx.add(LegToOrigin(call.offer_id, "returned", reason="ring-no-answer"))
        self.close(call)

    def site_stopping(self, call: Call, now: float, fx: Effects) -> None:
        """Give the call back: its origin re-queues it, nobody is dropped."""
        if call.state != CallState.RINGING:
            fx.journal(
                call,
                EventKind.AGENT_HUNG_UP,
                now,
                agent_code=call.agent_code,
                data=(("reason", "site-stopping"),),
            )
        fx.add(ToAgent(call.agent_code, "ended", now, call_id=call.call_id, reason="site-shutdown"))
        fx.add(LegToOrigin(call.offer_id, "returned", reason="site-stopping"))
        self.close(call)
