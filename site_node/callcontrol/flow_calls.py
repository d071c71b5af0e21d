"""Calls in an IVR flow (SPEC F6-F8, F12): one FlowRun per call, its actions carried out as effects.

A prompt is a `ToCaller` prompt (id and text; the SIP side plays it, the gRPC trunk shows it); a
key request is a prompt with `collect`; a look-up is an `IvrLookup` the runtime asks central,
answered into `looked_up` (its own timeout is the run's deadline: a late answer finds the run
gone on and changes nothing). The run holds the flow version it started on, so a newer version
pushed meanwhile only changes new calls. The flow's ends: a queue (priority from the flow, the
queue's announcements and maximum wait here), a voicemail, a callback asked for, a fax, a hang-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from site_node.callcontrol.calls import CallBook
from site_node.callcontrol.domain import Call, CallState, IvrLookup, Outcome, ToCaller
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.flow_ends import FlowEnds, masked
from site_node.callcontrol.ivr_flow import (
    Action,
    CollectDigits,
    Ended,
    FlowRun,
    Lookup,
    OfferCallback,
    Play,
    Pressed,
    ReturnToAgent,
    ToQueue,
    ToVoicemail,
)
from site_node.callcontrol.ivr_flow.report import end_report
from site_node.callcontrol.queue_treatment import MaxWaitReached, QueueTreatment
from site_node.callcontrol.queues import Queues
from site_node.callcontrol.resources import Resources
from site_node.callcontrol.timers import Timers
from site_node.callcontrol.trunk import TrunkSide
from site_node.callcontrol.voicemail_desk import VoicemailDesk
from vcc.call_events import EventKind
from vcc.ivr.flow import Flow


class FlowBook(Protocol):
    """The flows the site holds (its copy of central's catalog)."""

    def for_number(self, number: str) -> tuple[str, Flow] | None:
        """(the service a dialled number reaches here, the newest version of its flow); None: none."""

    def named(self, flow_id: str) -> Flow | None:
        """The newest version of a flow (an agent's temporary transfer names one, F9)."""


# How often a queued call whose treatment is due, but who is ringing an agent, is looked at again.
RING_RECHECK_S = 1.0


@dataclass
class FlowCall:
    run: FlowRun
    service: str
    # Trace entries already journaled.
    seen: int = 0
    treatment: QueueTreatment | None = None
    message_id: str = ""
    # A temporary transfer (F9): the agent who sent the caller and waits for them (the call held).
    agent_code: str = ""
    # The run's deadline a timer is armed for (each is armed once).
    armed_at: float | None = None
    # The caller left the queue by its virtual hold key: the callback keeps their place.
    held_place: bool = False


class FlowCalls:
    def __init__(
        self,
        site_groups: frozenset[str],
        default_group: str,
        calls: CallBook,
        resources: Resources,
        queues: Queues,
        trunk: TrunkSide,
        timers: Timers,
        voicemail: VoicemailDesk,
        ends: FlowEnds,
    ) -> None:
        self._groups = site_groups
        self._default_group = default_group
        self._calls = calls
        self._resources = resources
        self._queues = queues
        self._trunk = trunk
        self._timers = timers
        self.live: dict[str, FlowCall] = {}
        self.voicemail = voicemail
        # Where the flow's end sends the caller when it is not a queue.
        self._ends = ends
        timers.on("flow", self._flow_due)
        timers.on("treat", self._treatment_due)
        timers.on("voicemail", self._voicemail_cut)

    def runs(self, call_id: str) -> bool:
        return call_id in self.live

    def start(
        self, call: Call, service: str, flow: Flow, now: float, fx: Effects, *, agent_code: str = ""
    ) -> None:
        run = FlowRun()
        fc = FlowCall(run, service, agent_code=agent_code)
        self.live[call.call_id] = fc
        call.state = CallState.IVR
        fx.journal(
            call, EventKind.IVR_STARTED, now,
            data=(("flow", flow.id), ("version", str(flow.version)), ("service", service),
                  *((("for_agent", agent_code),) if agent_code else ())),
        )  # fmt: skip
        context = {"ani": call.ani, "dnis": call.dnis, **{f"call.{k}": v for k, v in call.attached.items()}}
        self._carry_out(call, fc, run.start(flow, context, now), now, fx)

    def digits(self, call: Call, digits: str, now: float, fx: Effects) -> None:
        fc = self.live[call.call_id]
        self._carry_out(call, fc, fc.run.on_digits(digits, now), now, fx)

    def queue_key(self, call: Call, digits: str, now: float, fx: Effects) -> bool:
        """A key while waiting in a flow's queue: its virtual hold key leaves for the callback node."""
        fc = self.live.get(call.call_id)
        if fc is None or fc.treatment is None or call.state != CallState.QUEUED:
            return False
        actions = fc.run.on_max_wait(now, key=digits)
        if actions:
            self._leave_queue(call, fc, actions, now, fx, held_place=True)
        return bool(actions)

    def _leave_queue(
        self,
        call: Call,
        fc: FlowCall,
        actions: list[Action],
        now: float,
        fx: Effects,
        *,
        held_place: bool = False,
    ) -> None:
        """Out of the queue (its maximum wait, or the virtual hold key: the caller keeps their place)."""
        if not call.parked:
            self._queues.leave(call)
        if fc.treatment is not None:
            fc.treatment.stop()
        call.parked, fc.treatment, fc.held_place, call.state = False, None, held_place, CallState.IVR
        self._carry_out(call, fc, actions, now, fx)

    def looked_up(
        self, call_id: str, request: int, fields: dict[str, str] | None, now: float, fx: Effects
    ) -> None:
        fc = self.live.get(call_id)
        call = self._calls.get(call_id)
        if fc is None or call is None or call.state != CallState.IVR:
            return
        self._carry_out(call, fc, fc.run.on_lookup(fields, now, request=request), now, fx)

    def played(self, call_id: str, now: float) -> None:
        """The prompts before a key request were all heard: the caller's time to answer starts now
        (an adapter that knows when playback ends says so; the gRPC trunk does not)."""
        fc = self.live.get(call_id)
        if fc is None:
            return
        fc.run.on_played(now)
        if fc.run.deadline is not None and fc.run.deadline != fc.armed_at:
            fc.armed_at = fc.run.deadline
            self._timers.arm(fc.run.deadline, "flow", call_id, str(fc.run.steps))

    def caller_left(self, call: Call, now: float, fx: Effects) -> bool:
        """The caller hung up in the flow (or in its queue): True when the IVR served the call
        (a voicemail was being left), so it ends self-served rather than abandoned."""
        fc = self.live.pop(call.call_id, None)
        if fc is None:
            return False
        if fc.treatment is not None:
            fc.treatment.stop()
        self._journal_trace(call, fc, fx)
        if call.state == CallState.QUEUED:
            self._ends.abandoned_in_queue(call, now, fx)
        if fc.message_id:
            return self.voicemail.recorded(fc.message_id, now, fx).state == "new"
        return False

    def served(self, call: Call) -> None:
        """The call reached an agent (or left the site): the flow and its treatment are over."""
        fc = self.live.pop(call.call_id, None)
        if fc is not None and fc.treatment is not None:
            fc.treatment.stop()

    # -- carrying actions out ------------------------------------------------------------------

    def _carry_out(self, call: Call, fc: FlowCall, actions: list[Action], now: float, fx: Effects) -> None:
        flow = fc.run.flow
        for action in actions:
            if isinstance(action, Play):
                fx.add(
                    ToCaller(
                        call.call_id, "prompt", now, prompt=action.prompt_id, text=action.text,
                        flow_id=flow.id, flow_version=flow.version,
                    )
                )  # fmt: skip
            elif isinstance(action, CollectDigits):
                fx.add(
                    ToCaller(
                        call.call_id, "prompt", now, collect=True, max_digits=action.max_digits,
                        timeout_s=action.timeout_s, flow_id=flow.id, flow_version=flow.version,
                    )
                )  # fmt: skip
            elif isinstance(action, Lookup):
                fx.add(
                    IvrLookup(call.call_id, action.name, tuple(sorted(action.args.items())), action.timeout_s,
                              action.request)
                )  # fmt: skip
        self._journal_trace(call, fc, fx)
        if fc.run.ended is not None and fc.run.ended in actions:
            self._leave(call, fc, now, fx)
        elif fc.run.deadline is not None and fc.run.deadline != fc.armed_at:
            fc.armed_at = fc.run.deadline
            self._timers.arm(fc.run.deadline, "flow", call.call_id, str(fc.run.steps))

    def _journal_trace(self, call: Call, fc: FlowCall, fx: Effects) -> None:
        run = fc.run
        for entry in run.trace[fc.seen :]:
            if isinstance(entry, Pressed):
                fx.journal(
                    call, EventKind.DIGITS, entry.at,
                    data=(("digits", entry.key), ("effect", entry.effect), ("node", entry.node)),
                )  # fmt: skip
            elif isinstance(entry, Ended):
                details = {k: str(v) for k, v in end_report(entry.action).items() if k != "announcements"}
                if isinstance(entry.action, OfferCallback):
                    details["number"] = masked(entry.action.number)
                if isinstance(entry.action, ReturnToAgent):
                    details = {
                        "kind": "return",
                        **{f"result.{k}": v for k, v in entry.action.results.items()},
                    }
                fx.journal(
                    call, EventKind.IVR_ENDED, entry.at,
                    data=(("flow", run.flow.id), ("version", str(run.flow.version)), ("node", entry.node),
                          *sorted(details.items())),
                )  # fmt: skip
        fc.seen = len(run.trace)

    def _leave(self, call: Call, fc: FlowCall, now: float, fx: Effects) -> None:
        """The flow ended: carry out where it sent the caller."""
        end = fc.run.ended
        self._resources.release_board(call.ivr_port)
        call.ivr_port = None
        if isinstance(end, ToQueue):
            self._to_queue(call, fc, end, now, fx)
        elif isinstance(end, ToVoicemail):
            fc.message_id = self._ends.voicemail(call, end, now, fx)
            cut_at = self.voicemail.box.cut_at(fc.message_id)
            self._timers.arm(cut_at, "voicemail", call.call_id, fc.message_id)
        elif end is not None:
            self.live.pop(call.call_id, None)
            self._ends.leave(call, end, now, fx, held_place=fc.held_place, agent_code=fc.agent_code)

    def _to_queue(self, call: Call, fc: FlowCall, end: ToQueue, now: float, fx: Effects) -> None:
        group, reason = end.skill_group, ""
        if group not in self._groups:
            group, reason = self._default_group, f"no-group-{end.skill_group}-here"
        call.priority = end.priority
        self._queues.enqueue(call, group, now, fx, reason=reason)
        if end.announcements is None:
            self.live.pop(call.call_id, None)
            return
        fc.treatment = QueueTreatment(end.announcements, now)
        # The first announcement at once (the caller's position as they join).
        self._treatment_due(call.call_id, str(fc.run.steps), now, fx)

    def _arm_treatment(self, call: Call, fc: FlowCall) -> None:
        assert fc.treatment is not None
        due = fc.treatment.deadline
        if due is not None:
            self._timers.arm(due, "treat", call.call_id, str(fc.run.steps))

    # -- deadlines -----------------------------------------------------------------------------

    def _flow_due(self, call_id: str, token: str, now: float, fx: Effects) -> None:
        fc = self.live.get(call_id)
        call = self._calls.get(call_id)
        if fc is None or call is None or call.state != CallState.IVR or token != str(fc.run.steps):
            return
        self._carry_out(call, fc, fc.run.on_timeout(now), now, fx)

    def _treatment_due(self, call_id: str, token: str, now: float, fx: Effects) -> None:
        fc = self.live.get(call_id)
        call = self._calls.get(call_id)
        if fc is None or call is None or fc.treatment is None or token != str(fc.run.steps):
            return
        if call.state == CallState.RINGING:
            self._timers.arm(now + RING_RECHECK_S, "treat", call_id, token)
            return
        if call.state != CallState.QUEUED:
            self.served(call)
            return
        acd = self._queues.acd
        # Parked (its screen pop not back yet): behind everyone in the ACD.
        position = acd.waiting(call.skill_group) + 1 if call.parked else acd.position(call.call_id)
        wait = self._queues.expected_wait(call.skill_group, position)
        flow = fc.run.flow
        for said in fc.treatment.on_tick(now, position, wait if wait >= 0 else None):
            if isinstance(said, MaxWaitReached):
                self._leave_queue(call, fc, fc.run.on_max_wait(now), now, fx)
                return
            fx.add(
                ToCaller(
                    call_id, "prompt", now, prompt=said.prompt_id, text=said.text, flow_id=flow.id,
                    flow_version=flow.version, position=position,
                )
            )  # fmt: skip
        self._arm_treatment(call, fc)

    def _voicemail_cut(self, call_id: str, message_id: str, now: float, fx: Effects) -> None:
        fc = self.live.get(call_id)
        call = self._calls.get(call_id)
        if fc is None or call is None or fc.message_id != message_id:
            return
        self.caller_left(call, now, fx)
        self._trunk.end(call, Outcome.SELF_SERVED, "voicemail-left", now, fx)
