"""The IVR (SPEC F6): a caller holds an IVR port while it is in the IVR. A dialled number whose
service has a flow in the site's catalog runs that flow (flow_calls.py); otherwise the site's one
menu plays: a digit chooses the skill group, silence or an unknown digit takes the default. Every
port busy: the IVR is skipped rather than the caller refused."""

from __future__ import annotations

from site_node.callcontrol.calls import CallBook
from site_node.callcontrol.counters import SiteCounters
from site_node.callcontrol.domain import Call, CallState, ToCaller
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.flow_calls import FlowBook, FlowCalls
from site_node.callcontrol.queues import Queues
from site_node.callcontrol.resources import Resources
from site_node.callcontrol.timers import Timers
from vcc.call_events import EventKind
from vcc.config import SiteConfig
from vcc.errors import FailedPrecondition, NotFound
from vcc.ivr.flow import Flow


class Ivr:
    def __init__(
        self,
        site: SiteConfig,
        calls: CallBook,
        resources: Resources,
        queues: Queues,
        timers: Timers,
        counters: SiteCounters,
        flows: FlowCalls,
        book: FlowBook | None = None,
    ) -> None:
        self.flows = flows
        self._book = book
        self._menu = site.ivr
        self._choices = {c.digit: c.skill_group for c in site.ivr.choices}
        self._resources = resources
        self._queues = queues
        self._timers = timers
        self._counters = counters
        self._calls = calls
        timers.on("ivr", self._expired)

    def start(self, call: Call, now: float, fx: Effects) -> None:
        menu = self._menu
        got, port = self._resources.take_board("ivr")
        if not got:
            self._counters.ivr_bypassed += 1
            self._queues.enqueue(call, menu.default_skill_group, now, fx, reason="ivr-ports-busy")
            return
        call.ivr_port = port
        found = self._book.for_number(call.dnis) if self._book is not None else None
        if found is not None:
            service, flow = found
            self.flows.start(call, service, flow, now, fx)
            return
        call.state = CallState.IVR
        fx.journal(call, EventKind.IVR_STARTED, now)
        fx.add(
            ToCaller(
                call.call_id,
                "prompt",
                now,
                prompt=menu.prompt,
                choices=tuple(self._choices),
                timeout_s=menu.digit_timeout_s,
            )
        )
        self._timers.arm(now + menu.digit_timeout_s, "ivr", call.call_id)

    def temporary(self, call: Call, code: str, flow_id: str, now: float, fx: Effects) -> None:
        """An agent sends the caller to a flow and waits (F9): the call is held for the agent,
        the caller in the flow; `return` brings them back to this agent."""
        flow = self.check_flow(flow_id)
        got, port = self._resources.take_board("ivr")
        if not got:
            raise FailedPrecondition("ivr-ports-busy", "every IVR port is busy; try again")
        call.ivr_port = port
        self.flows.start(call, "", flow, now, fx, agent_code=code)

    def check_flow(self, flow_id: str) -> Flow:
        flow = self._book.named(flow_id) if self._book is not None else None
        if flow is None:
            raise NotFound("flow-not-found", f"target.flow_id: no flow {flow_id!r} at this site")
        return flow

    def digits(self, call: Call, digits: str, now: float, fx: Effects) -> None:
        """The caller pressed keys in the menu: the first one chooses (a flow takes them all)."""
        if self.flows.runs(call.call_id):
            self.flows.digits(call, digits, now, fx)
            return
        fx.journal(call, EventKind.DIGITS, now, data=(("digits", digits),))
        group = self._choices.get(digits[0])
        call.attached["ivr_choice"] = digits[0]
        self.release(call)
        self._queues.enqueue(
            call, group or self._menu.default_skill_group, now, fx, reason="" if group else "unknown-choice"
        )

    def _expired(self, call_id: str, _token: str, now: float, fx: Effects) -> None:
        call = self._calls.get(call_id)
        if call is None or call.state != CallState.IVR:
            return
        self.release(call)
        self._queues.enqueue(call, self._menu.default_skill_group, now, fx, reason="no-digit")

    def release(self, call: Call) -> None:
        """The call leaves the menu (chose, timed out, hung up, site stopping): its port is free."""
        self._resources.release_board(call.ivr_port)
        call.ivr_port = None
        self.flows.served(call)

    def caller_left(self, call: Call, now: float, fx: Effects) -> bool:
        """The caller hung up in the IVR or a flow's queue: True when the flow served the call."""
        served = self.flows.caller_left(call, now, fx)
        if call.state == CallState.IVR:
            self.release(call)
        return served
