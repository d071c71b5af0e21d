"""Connected calls (SPEC F18): answer, hold and retrieve, either side hanging up, and the agent's
leg ending into wrap-up. Also the caller leaving before anyone answered (abandoned)."""

from __future__ import annotations

from routing import agents as fsm
from site_node.callcontrol.agents import Agents
from site_node.callcontrol.counters import SiteCounters
from site_node.callcontrol.domain import Call, CallState, Outcome, ToAgent, ToCaller
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.ivr import Ivr
from site_node.callcontrol.queues import Queues
from site_node.callcontrol.ringing import Ringing
from site_node.callcontrol.trunk import TrunkSide
from vcc.call_events import EventKind
from vcc.config import SiteConfig
from vcc.errors import FailedPrecondition

CONNECTED = (CallState.TALKING, CallState.HELD)


class ConnectedCalls:
    def __init__(
        self,
        site: SiteConfig,
        agents: Agents,
        queues: Queues,
        ringing: Ringing,
        ivr: Ivr,
        trunk: TrunkSide,
        counters: SiteCounters,
    ) -> None:
        self.site = site
        self._agents = agents
        self._queues = queues
        self._ringing = ringing
        self._ivr = ivr
        self._trunk = trunk
        self._counters = counters

    def answer(self, call: Call, now: float, fx: Effects) -> None:
        if call.state != CallState.RINGING:
            raise FailedPrecondition("call-not-ringing", f"call {call.call_id} is {call.state}, not ringing")
        self.connect(call, now, fx)
        self._counters.answered += 1

    def connect(self, call: Call, now: float, fx: Effects) -> None:
        code = call.agent_code
        self._agents.apply(code, fsm.Answer(), now, fx)
        call.state = CallState.TALKING
        call.answered_at = now
        if call.purpose == "transfer-consult":
            fx.journal(
                call, EventKind.TRANSFERRED, now, agent_code=code, data=(("stage", "consult-connected"),)
            )
        else:
            fx.journal(call, EventKind.ANSWERED, now, agent_code=code, skill_group=call.skill_group)
        if not call.guest_of:
            fx.add(ToCaller(call.call_id, "connected", now, site_id=self.site.id, agent_code=code))
        fx.add(ToAgent(code, "connected", now, call_id=call.call_id))

    def hold(self, call: Call, hold: bool, now: float, fx: Effects) -> None:
        code = call.agent_code
        want = CallState.TALKING if hold else CallState.HELD
        if call.state != want:
            raise FailedPrecondition("wrong-call-state", f"call {call.call_id} is {call.state}")
        self._agents.apply(code, fsm.Hold() if hold else fsm.Retrieve(), now, fx)
        call.state = CallState.HELD if hold else CallState.TALKING
        kind = "held" if hold else "retrieved"
        fx.journal(call, EventKind.HELD if hold else EventKind.RETRIEVED, now, agent_code=code)
        if not call.guest_of:
            fx.add(ToCaller(call.call_id, kind, now))
        fx.add(ToAgent(code, kind, now, call_id=call.call_id))

    def agent_hang_up(self, call: Call, now: float, fx: Effects) -> None:
        self.check_connected(call)
        fx.journal(call, EventKind.AGENT_HUNG_UP, now, agent_code=call.agent_code)
        self.end_agent_leg(call, now, fx, "agent-hung-up")
        self._trunk.end(call, Outcome.ANSWERED, "agent-hung-up", now, fx)

    def caller_hang_up(
        self, call: Call, now: float, fx: Effects, reason: str, unanswered: Outcome = Outcome.ABANDONED
    ) -> None:
        """The caller hung up on a call served here, wherever it was in its journey. A line lost
        on our side (`unanswered=FAILED`) ends an unanswered call as failed, not abandoned."""
        if call.state in CONNECTED:
            fx.journal(call, EventKind.CALLER_HUNG_UP, now, agent_code=call.agent_code)
            self.end_agent_leg(call, now, fx, reason)
            self._trunk.end(call, Outcome.ANSWERED, reason, now, fx)
            return
        if call.state == CallState.IVR and call.agent_code:
            # In an agent's temporary transfer to the IVR (F9): the waiting agent's leg ends too.
            self._ivr.caller_left(call, now, fx)
            fx.journal(call, EventKind.CALLER_HUNG_UP, now, agent_code=call.agent_code)
            self.end_agent_leg(call, now, fx, reason)
            self._trunk.end(call, Outcome.ANSWERED, reason, now, fx)
            return
        if self._ivr.caller_left(call, now, fx) and unanswered == Outcome.ABANDONED:
            # A message left in the flow's voicemail: served, not abandoned.
            self._trunk.end(call, Outcome.SELF_SERVED, "voicemail-left", now, fx)
            return
        if call.state == CallState.QUEUED:
            self._queues.leave(call)
        elif call.state == CallState.RINGING:
            self._ringing.withdraw(call, now, fx, reason)
        if unanswered == Outcome.ABANDONED:
            fx.journal(call, EventKind.ABANDONED, now, skill_group=call.skill_group)
        self._trunk.end(call, unanswered, reason, now, fx)

    def end_agent_leg(self, call: Call, now: float, fx: Effects, reason: str) -> None:
        """The agent's part of the call is over: wrap-up follows."""
        code = call.agent_code
        if call.answered_at is not None:
            self._queues.handled(call.skill_group, now - call.answered_at)
        wrap = self.site.wrap_up_s
        fx.add(ToAgent(code, "ended", now, call_id=call.call_id, reason=reason, wrap_up_s=wrap))
        self._agents.apply(code, fsm.CallEnded(wrap), now, fx)

    @staticmethod
    def check_connected(call: Call) -> None:
        if call.state not in CONNECTED:
            raise FailedPrecondition(
                "call-not-connected", f"call {call.call_id} is {call.state}, not connected"
            )
