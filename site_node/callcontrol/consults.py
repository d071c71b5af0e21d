"""Consultations and three-way conferences (SPEC F19): the caller is held while the serving agent
talks with another agent, here or in another city; then the agent completes (the other agent
keeps the caller), conferences (all three talk) or cancels (back to the caller)."""

from __future__ import annotations

from routing import agents as fsm
from routing.agents import AgentState
from site_node.callcontrol.agents import Agents
from site_node.callcontrol.calls import CallBook
from site_node.callcontrol.connected import ConnectedCalls
from site_node.callcontrol.counters import SiteCounters
from site_node.callcontrol.directory import TransferTarget
from site_node.callcontrol.domain import (
    Call,
    CallState,
    Consult,
    Effect,
    LegToTarget,
    RemoteLeg,
    ToAgent,
    ToCaller,
)
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.legs_out import RemoteLegs
from site_node.callcontrol.queues import Queues
from site_node.callcontrol.resources import Resources
from site_node.callcontrol.ringing import Ringing
from site_node.callcontrol.timers import Timers
from vcc.call_events import EventKind
from vcc.config import SiteConfig
from vcc.errors import FailedPrecondition

# Who hears whom on a consultation's bridge (the SIP side mixes by it), while the serving agent
# consults (the caller held, hearing music) and once all three are conferenced.
CONSULT_HEARS: dict[str, dict[str, tuple[str, ...]]] = {
    "consult": {"caller": (), "agent": ("far",), "far": ("agent",)},
    "conference": {"caller": ("agent", "far"), "agent": ("caller", "far"), "far": ("caller", "agent")},
}


class Consults:
    def __init__(
        self,
        site: SiteConfig,
        calls: CallBook,
        agents: Agents,
        queues: Queues,
        ringing: Ringing,
        connected: ConnectedCalls,
        legs: RemoteLegs,
        timers: Timers,
        counters: SiteCounters,
        resources: Resources | None = None,
    ) -> None:
        self.site = site
        self._calls = calls
        self._agents = agents
        self._queues = queues
        self._ringing = ringing
        self._connected = connected
        self._legs = legs
        self._timers = timers
        self._counters = counters
        # The conference boards: a three-way conference takes a channel (none free: refused).
        self._resources = resources
        timers.on("consult", self._ring_expired)

    def start(
        self, call: Call, code: str, target: TransferTarget, site: str, now: float, fx: Effects
    ) -> None:
        if call.state == CallState.TALKING:
            self._agents.apply(code, fsm.Hold(), now, fx)
            call.state = CallState.HELD
            fx.add(ToCaller(call.call_id, "held", now))
        desc = target.describe(site)
        fx.journal(
            call, EventKind.TRANSFERRED, now, agent_code=code, data=(("kind", "consult"), ("to", desc))
        )
        if site != self.site.id:
            offer_id = self._legs.start_offer(
                call, site, "", now, fx, purpose="transfer-consult", agent_code=target.agent_code,
                skill_group=target.skill_group, from_agent_code=code,
            )  # fmt: skip
            assert offer_id is not None  # a free tie channel was checked before anything changed
            call.consult = Consult(target.agent_code, site, offer_id=offer_id)
            return
        other = target.agent_code or self._queues.acd.take_ready_agent(target.skill_group)
        assert other is not None  # checked by Transfers.resolve
        self._queues.acd.agent_unavailable(other)
        call.consult = Consult(other, self.site.id)
        self._agents.reserve(other, call.call_id, now)
        fx.journal(call, EventKind.TRANSFERRED, now, agent_code=other, data=(("stage", "consult-ringing"),))
        fx.add(self._agents.state_event(other, now))
        fx.add(self._ringing.offered(call, other, now, "transfer-consult", code))
        fx.add(self.progress(call, "consult-ringing", now))
        self._timers.arm(now + self.site.ring_timeout_s, "consult", call.call_id, other)

    def progress(self, call: Call, stage: str, now: float, reason: str = "") -> ToAgent:
        """The serving agent's view of the consultation."""
        c = call.consult
        assert c is not None
        return ToAgent(
            call.agent_code, "transfer", now, call_id=call.call_id, stage=stage,
            other_agent_code=c.agent_code, site_id=c.site_id, reason=reason,
        )  # fmt: skip

    # The serving agent ends the consultation ------------------------------------------------

    @staticmethod
    def consulting(call: Call, *, talking: bool) -> Consult:
        ConnectedCalls.check_connected(call)
        if call.consult is None:
            raise FailedPrecondition("no-consult", f"call {call.call_id} has no consultation in progress")
        if talking and call.consult.state != "talking":
            raise FailedPrecondition("consult-not-connected", "the consulted agent has not answered yet")
        return call.consult

    def complete(self, call: Call, now: float, fx: Effects) -> None:
        self.consulting(call, talking=True)
        self.hand_over(call, now, fx)

    def hand_over(self, call: Call, now: float, fx: Effects) -> None:
        """The consulted agent keeps the caller; the serving agent leaves."""
        c = call.consult
        assert c is not None
        code = call.agent_code
        fx.journal(
            call,
            EventKind.TRANSFERRED,
            now,
            agent_code=code,
            data=(("stage", "completed"), ("to", c.agent_code)),
        )
        fx.add(self.progress(call, "completed", now))
        self._release(c)
        if call.state == CallState.HELD:
            self._agents.apply(code, fsm.Retrieve(), now, fx)
        self._connected.end_agent_leg(call, now, fx, "transferred")
        call.consult = None
        call.state = CallState.TALKING
        call.agent_code = c.agent_code
        if c.offer_id:
            call.remote = RemoteLeg(c.site_id, c.offer_id, "", state="talking", agent_code=c.agent_code)
            self._counters.served_elsewhere += 1
        fx.add(ToCaller(call.call_id, "transferred", now, site_id=c.site_id, agent_code=c.agent_code))
        fx.add(ToCaller(call.call_id, "connected", now, site_id=c.site_id, agent_code=c.agent_code))

    def conference(self, call: Call, now: float, fx: Effects) -> None:
        c = self.consulting(call, talking=True)
        if c.conference:
            raise FailedPrecondition("already-conferenced", "the caller is already in the conference")
        if self._resources is not None:
            got, board = self._resources.take_board("conference")
            if not got:
                raise FailedPrecondition("no-conference-channel", "every conference board channel is busy")
            c.board = board
        code = call.agent_code
        c.conference = True
        self._agents.apply(code, fsm.Retrieve(), now, fx)
        call.state = CallState.TALKING
        fx.journal(
            call,
            EventKind.TRANSFERRED,
            now,
            agent_code=code,
            data=(("stage", "conferenced"), ("with", c.agent_code)),
        )
        fx.add(ToCaller(call.call_id, "retrieved", now))
        fx.add(self.progress(call, "conferenced", now))

    def cancel(self, call: Call, now: float, fx: Effects) -> None:
        self.consulting(call, talking=False)
        fx.journal(
            call, EventKind.TRANSFERRED, now, agent_code=call.agent_code, data=(("stage", "cancelled"),)
        )
        self.drop(call, now, fx, "consult-cancelled", "cancelled")

    def drop(self, call: Call, now: float, fx: Effects, reason: str, stage: str) -> None:
        """End the consultation leg and give the caller back to the serving agent."""
        fx.add(self.progress(call, stage, now, reason))
        self.end_leg(call, now, fx, reason)
        if call.state == CallState.HELD:
            self._agents.apply(call.agent_code, fsm.Retrieve(), now, fx)
            call.state = CallState.TALKING
            fx.add(ToCaller(call.call_id, "retrieved", now))

    def end_leg(self, call: Call, now: float, fx: Effects, reason: str) -> None:
        """The consultation is over (the caller stays where it is): free the consulted side."""
        c = call.consult
        assert c is not None
        call.consult = None
        self._release(c)
        if c.offer_id:
            fx.add(LegToTarget(c.offer_id, "end", reason))
            self._legs.close_consult(c.offer_id, c.site_id)
            return
        other = self._agents.agents[c.agent_code]
        if other.state == AgentState.RINGING:
            fx.add(ToAgent(other.code, "withdrawn", now, call_id=call.call_id, reason=reason))
            self._agents.apply(other.code, fsm.OfferWithdrawn(), now, fx)
        elif other.state in (AgentState.TALKING, AgentState.HELD):
            wrap = self.site.wrap_up_s
            fx.add(ToAgent(other.code, "ended", now, call_id=call.call_id, reason=reason, wrap_up_s=wrap))
            self._agents.apply(other.code, fsm.CallEnded(wrap), now, fx)

    def _release(self, c: Consult) -> None:
        if c.board is not None and self._resources is not None:
            self._resources.release_board(c.board)
            c.board = None

    # The consulted agent, when it is at this site --------------------------------------------

    def consulted_here(self, code: str, call_id: str) -> Call | None:
        call = self._calls.get(call_id)
        c = call.consult if call is not None else None
        if c is not None and not c.offer_id and c.agent_code == code:
            return call
        return None

    def consulted_answers(self, call: Call, now: float, fx: Effects) -> None:
        c = call.consult
        assert c is not None
        code = c.agent_code
        if c.state != "ringing":
            raise FailedPrecondition("call-not-ringing", f"call {call.call_id} is not ringing at {code}")
        c.state = "talking"
        self._agents.apply(code, fsm.Answer(), now, fx)
        fx.journal(call, EventKind.TRANSFERRED, now, agent_code=code, data=(("stage", "consult-connected"),))
        fx.add(ToAgent(code, "connected", now, call_id=call.call_id))
        fx.add(self.progress(call, "consult-connected", now))

    def consulted_leaves(self, call: Call, now: float, fx: Effects) -> None:
        c = call.consult
        assert c is not None
        if c.state != "talking":
            raise FailedPrecondition(
                "call-not-connected", f"call {call.call_id} is not connected at {c.agent_code}"
            )
        fx.journal(call, EventKind.TRANSFERRED, now, agent_code=c.agent_code, data=(("stage", "left"),))
        self.drop(call, now, fx, "consulted-agent-left", "left")

    def consulted_unreachable(self, call: Call, now: float, fx: Effects) -> None:
        """The consulted agent's phone refused the ring or never answered it (a talking
        consultation is not ended by it: the agent leaves by hanging up)."""
        c = call.consult
        assert c is not None
        self._ring_expired(call.call_id, c.agent_code, now, fx)

    def _ring_expired(self, call_id: str, code: str, now: float, fx: Effects) -> None:
        call = self._calls.get(call_id)
        c = call.consult if call is not None else None
        if call is None or c is None or c.state != "ringing" or c.agent_code != code or c.offer_id:
            return
        self._counters.ring_no_answer += 1
        fx.add(self.progress(call, "consult-failed", now, "no-answer"))
        call.consult = None
        fx.add(ToAgent(code, "withdrawn", now, call_id=call_id, reason="no-answer"))
        self._agents.apply(code, fsm.RingTimeout(), now, fx)

    # The consulted agent, when it is at another site ----------------------------------------

    def by_offer(self, offer_id: str) -> Call | None:
        call = self._legs.call_of(offer_id)
        if call is not None and call.consult is not None and call.consult.offer_id == offer_id:
            return call
        return None

    def offer_expired(self, call: Call, now: float, fx: Effects) -> None:
        c = call.consult
        if c is not None and c.state == "ringing" and not c.agent_code:
            self.drop(call, now, fx, "offer-timeout", "consult-failed")

    def remote_reserved(self, call: Call, agent_code: str, now: float) -> list[Effect]:
        c = call.consult
        assert c is not None
        c.agent_code = agent_code
        return [self.progress(call, "consult-ringing", now)]

    def remote_answered(self, call: Call, now: float) -> list[Effect]:
        c = call.consult
        assert c is not None
        c.state = "talking"
        return [LegToTarget(c.offer_id, "confirm"), self.progress(call, "consult-connected", now)]

    def remote_over(self, call: Call, now: float, reason: str, stage: str, fx: Effects) -> None:
        c = call.consult
        assert c is not None
        fx.journal(
            call,
            EventKind.TRANSFERRED,
            now,
            agent_code=c.agent_code,
            data=(("stage", stage), ("reason", reason)),
        )
        self.drop(call, now, fx, reason, stage)
