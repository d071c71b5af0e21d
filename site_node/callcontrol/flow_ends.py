"""Where a flow's end sends the caller, other than a queue (SPEC F6-F9): a voicemail box, the
callback list (asked by the flow, by the virtual hold key, or by abandoning the flow's queue), a
fax, back to the agent who sent them (F9), a hang-up."""

from __future__ import annotations

from typing import Literal

from routing import agents as fsm
from site_node.callcontrol.agents import Agents
from site_node.callcontrol.dialler import Dialler
from site_node.callcontrol.domain import Call, CallState, Outcome, ToAgent, ToCaller
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.ivr_flow import End, FaxOnDemand, Hangup, OfferCallback, ReturnToAgent, ToVoicemail
from site_node.callcontrol.queues import Queues
from site_node.callcontrol.resources import Resources
from site_node.callcontrol.trunk import TrunkSide
from site_node.callcontrol.voicemail_desk import VoicemailDesk
from vcc.call_events import EventKind


class FlowEnds:
    def __init__(
        self,
        site_groups: frozenset[str],
        default_group: str,
        resources: Resources,
        queues: Queues,
        trunk: TrunkSide,
        agents: Agents,
        voicemail: VoicemailDesk,
        dialler: Dialler,
    ) -> None:
        self._groups = site_groups
        self._default_group = default_group
        self._resources = resources
        self._queues = queues
        self._trunk = trunk
        self._agents = agents
        self._voicemail = voicemail
        self._dialler = dialler

    def voicemail(self, call: Call, end: ToVoicemail, now: float, fx: Effects) -> str:
        """The caller leaves a message: its message id (the call stays in the flow, FlowCalls, until
        the message is cut at the box's limit or the caller hangs up)."""
        # A box named after a skill group is that group's; any other is the IVR's default group's.
        group = end.box if end.box in self._groups else self._default_group
        desk = self._voicemail
        message_id = desk.record(call, end.box, group, now, fx)
        if desk.with_audio(message_id):
            # The trunk records the caller's voice for it (the SIP side; the gRPC trunk has none).
            fx.add(
                ToCaller(call.call_id, "voicemail", now, message_id=message_id, skill_group=group,
                         timeout_s=desk.box.max_message_s)
            )  # fmt: skip
        return message_id

    def leave(
        self, call: Call, end: End, now: float, fx: Effects, *, held_place: bool, agent_code: str
    ) -> None:
        """The call leaves the flow for good. `held_place`: it left the flow's queue by the virtual
        hold key; `agent_code`: the agent who sent it to the flow and waits for it (F9)."""
        if isinstance(end, OfferCallback):
            reason: Literal["virtual-hold", "flow-offer"] = "virtual-hold" if held_place else "flow-offer"
            asked = self._dialler.callbacks.request(
                f"{call.call_id}-cb", call.call_id, end.number, end.skill_group, now, reason=reason,
                priority=call.priority, place_since=call.arrived_at,
                mode="preview" if end.mode == "preview" else "progressive",
            )  # fmt: skip
            journal_callback(
                call, asked.callback_id if asked else "", "asked" if asked else "refused", end.skill_group,
                reason, fx, now, end.number,
            )  # fmt: skip
            if asked is not None:
                self._dialler.asked(asked, call, fx)
            self._trunk.end(call, Outcome.SELF_SERVED, "callback-asked", now, fx)
        elif isinstance(end, FaxOnDemand):
            got, board = self._resources.take_board("fax")
            # No fax engine yet: the document is "sent" on a fax channel, taken and freed at once.
            self._resources.release_board(board)
            self._trunk.end(call, Outcome.SELF_SERVED, "fax-sent" if got else "fax-busy", now, fx)
        elif isinstance(end, ReturnToAgent):
            if agent_code and call.agent_code == agent_code:
                self._back_to_agent(call, agent_code, end.results, now, fx)
            else:
                # Not sent by an agent (a number's flow ending in `return`): served as after a failure.
                self._queues.enqueue(
                    call, call.skill_group or self._default_group, now, fx, reason="ivr-return"
                )
        elif isinstance(end, Hangup):
            self._trunk.end(call, Outcome.SELF_SERVED, f"ivr-{end.reason}", now, fx)

    def abandoned_in_queue(self, call: Call, now: float, fx: Effects) -> None:
        """The caller hung up waiting in the flow's queue: on the callback list (a caller who left
        at once is not)."""
        asked = self._dialler.callbacks.request(
            f"{call.call_id}-cb", call.call_id, call.ani, call.skill_group, now, reason="abandoned",
            priority=call.priority, place_since=call.arrived_at, waited_s=now - call.arrived_at,
        )  # fmt: skip
        if asked is not None:
            journal_callback(call, asked.callback_id, "asked", call.skill_group, "abandoned", fx, now)
            self._dialler.asked(asked, call, fx)

    def _back_to_agent(self, call: Call, code: str, results: dict[str, str], now: float, fx: Effects) -> None:
        """F9: the caller is back with the agent who kept the call, with the flow's report only."""
        self._agents.apply(code, fsm.Retrieve(), now, fx)
        call.state = CallState.TALKING
        data = tuple(sorted(results.items()))
        fx.journal(call, EventKind.RETRIEVED, now, agent_code=code, data=(("from", "ivr"), *data))
        fx.add(ToCaller(call.call_id, "retrieved", now))
        fx.add(ToAgent(code, "retrieved", now, call_id=call.call_id, attached=data))


def journal_callback(
    call: Call, callback_id: str, stage: str, group: str, reason: str, fx: Effects, now: float,
    number: str = "",
) -> None:  # fmt: skip
    fx.journal(
        call, EventKind.CALLBACK, now,
        data=(("callback_id", callback_id), ("stage", stage), ("skill_group", group), ("reason", reason),
              ("number", masked(number or call.ani))),
    )  # fmt: skip


def masked(number: str) -> str:
    """A caller's number in a record: enough to recognise, not to dial (the list keeps it whole)."""
    return number[:3] + "*" * max(0, len(number) - 7) + number[-4:] if len(number) > 7 else "*" * len(number)
