"""Transfers (SPEC F19): the agent serving a call hands the caller to an agent by code anywhere
in the province, to a skill group here or at a named site, or back to the IVR.

Blind: the caller goes at once and the agent is free. A consultation first (consults.py) ends in
the same hand-over. The call's attached data and its transfer history travel with it. A guest
call's agent transfers blind through the origin, which holds the caller's trunk.
"""

from __future__ import annotations

from collections.abc import Mapping

from routing import agents as fsm
from routing.agents import AgentState
from site_node.callcontrol.agents import Agents
from site_node.callcontrol.connected import ConnectedCalls
from site_node.callcontrol.consults import Consults
from site_node.callcontrol.directory import Directory, TransferTarget
from site_node.callcontrol.domain import Call, CallState, LegToOrigin, ToAgent, ToCaller
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.guests import GuestCalls
from site_node.callcontrol.ivr import Ivr
from site_node.callcontrol.legs_out import RemoteLegs
from site_node.callcontrol.limits import check_attached
from site_node.callcontrol.queues import Queues
from site_node.callcontrol.resources import Resources
from site_node.callcontrol.ringing import Ringing
from vcc.call_events import EventKind
from vcc.errors import FailedPrecondition, InvalidArgument, VccError

# Transfer history kept in the attached data, newest last; bounded like all attached data.
HISTORY_KEY = "transfer_history"
MAX_HISTORY = 512


class Transfers:
    def __init__(
        self,
        site_id: str,
        directory: Directory,
        resources: Resources,
        agents: Agents,
        queues: Queues,
        ringing: Ringing,
        ivr: Ivr,
        connected: ConnectedCalls,
        legs: RemoteLegs,
        guests: GuestCalls,
        consults: Consults,
    ) -> None:
        self.site_id = site_id
        self.directory = directory
        self._resources = resources
        self._agents = agents
        self._queues = queues
        self._ringing = ringing
        self._ivr = ivr
        self._connected = connected
        self._legs = legs
        self._guests = guests
        self._consults = consults

    def transfer(
        self,
        call: Call,
        code: str,
        target: TransferTarget,
        blind: bool,
        attached: Mapping[str, str],
        now: float,
        fx: Effects,
    ) -> None:
        """The serving agent's request: blind, or a consultation first."""
        if call.guest_of:
            self.forward(call, code, target, blind, attached, now, fx)
            return
        ConnectedCalls.check_connected(call)
        if call.consult is not None:
            raise FailedPrecondition(
                "consult-in-progress", "finish the consultation first (complete, conference or cancel)"
            )
        site = self.resolve(code, target, blind)
        self.attach(call, attached)
        self.record_step(call, f"{code}>{target.describe(site)}")
        if target.ivr and target.flow_id:
            self._temporary(call, code, target, now, fx)
        elif blind:
            self.blind(call, code, target, site, now, fx)
        else:
            self._consults.start(call, code, target, site, now, fx)

    def resolve(self, code: str, target: TransferTarget, blind: bool) -> str:
        """Validate the target for a transfer from this site; return the site it is at. Raises
        before anything changes."""
        site = self.directory.site_of(code, target)
        if target.ivr and target.flow_id:
            self._ivr.check_flow(target.flow_id)
        if target.ivr:
            if not blind:
                raise InvalidArgument(
                    "bad-transfer-target", "target: a consultation needs a person, not the IVR"
                )
            if site != self.site_id:
                raise InvalidArgument("bad-transfer-target", "target: the IVR is the caller's own city's")
        elif target.agent_code:
            if target.site_id and target.site_id != site:
                raise InvalidArgument(
                    "bad-transfer-target", f"target: agent {target.agent_code} is at {site}"
                )
            if site == self.site_id and self._agents.agents[target.agent_code].state != AgentState.READY:
                raise FailedPrecondition("agent-not-ready", f"agent {target.agent_code} is not ready")
        elif site == self.site_id and not blind and self._queues.acd.ready_count(target.skill_group) == 0:
            raise FailedPrecondition("no-agent-ready", f"nobody is ready in {target.skill_group}")
        if site != self.site_id and not self._resources.tie_free(site):
            raise FailedPrecondition("no-tie-channel", f"no free tie-trunk channel to {site}")
        return site

    @staticmethod
    def attach(call: Call, extra: Mapping[str, str]) -> None:
        merged = {**call.attached, **extra}
        check_attached(merged, "attached_data: at most 64 entries and 8 KiB in all")
        call.attached = merged

    @staticmethod
    def record_step(call: Call, step: str) -> None:
        joined = f"{old};{step}" if (old := call.attached.get(HISTORY_KEY, "")) else step
        call.attached[HISTORY_KEY] = joined[-MAX_HISTORY:]

    def _temporary(self, call: Call, code: str, target: TransferTarget, now: float, fx: Effects) -> None:
        """F9: the caller goes to a collection flow; the agent keeps the call (held) meanwhile."""
        was_talking = call.state == CallState.TALKING
        self._ivr.temporary(call, code, target.flow_id, now, fx)
        fx.journal(
            call, EventKind.TRANSFERRED, now, agent_code=code,
            data=(("kind", "ivr-temporary"), ("to", target.describe(self.site_id))),
        )  # fmt: skip
        if was_talking:
            self._agents.apply(code, fsm.Hold(), now, fx)
            fx.add(ToAgent(code, "held", now, call_id=call.call_id))
        fx.add(ToAgent(code, "transfer", now, call_id=call.call_id, stage="ivr-sent", site_id=self.site_id))

    def blind(
        self, call: Call, code: str, target: TransferTarget, site: str, now: float, fx: Effects
    ) -> None:
        self._agent_leaves(call, code, target, site, now, fx)
        fx.add(self._told(call, target, site, now))
        call.agent_code = ""
        self.send_on(call, code, target, site, now, fx)

    def _agent_leaves(
        self, call: Call, code: str, target: TransferTarget, site: str, now: float, fx: Effects
    ) -> None:
        desc = target.describe(site)
        fx.journal(call, EventKind.TRANSFERRED, now, agent_code=code, data=(("kind", "blind"), ("to", desc)))
        if call.state == CallState.HELD:
            self._agents.apply(code, fsm.Retrieve(), now, fx)
        self._connected.end_agent_leg(call, now, fx, "transferred")
        fx.add(ToAgent(code, "transfer", now, call_id=call.call_id, stage="blind-sent", site_id=site))

    @staticmethod
    def _told(call: Call, target: TransferTarget, site: str, now: float) -> ToCaller:
        return ToCaller(
            call.call_id,
            "transferred",
            now,
            site_id=site,
            agent_code=target.agent_code,
            skill_group=target.skill_group,
        )

    def send_on(
        self, call: Call, code: str, target: TransferTarget, site: str, now: float, fx: Effects
    ) -> None:
        """Deliver a blind-transferred caller to its target (the serving agent has left)."""
        call.agent_code = ""
        if target.ivr:
            self._ivr.start(call, now, fx)
        elif site != self.site_id:
            call.state = CallState.QUEUED
            offer = self._legs.start_offer(
                call, site, "", now, fx, purpose="transfer-blind", agent_code=target.agent_code,
                skill_group=target.skill_group, from_agent_code=code,
            )  # fmt: skip
            if offer is None:
                self._queues.enqueue(call, call.skill_group, now, fx, reason="transfer-failed")
        elif target.agent_code:
            self._queues.acd.agent_unavailable(target.agent_code)
            call.purpose, call.from_agent_code = "transfer-blind", code
            self._ringing.ring(call, target.agent_code, now, fx)
            call.purpose = ""
        else:
            self._queues.enqueue(call, target.skill_group, now, fx, reason="transfer")

    # A guest call's agent hands the caller on -----------------------------------------------

    def forward(
        self,
        call: Call,
        code: str,
        target: TransferTarget,
        blind: bool,
        attached: Mapping[str, str],
        now: float,
        fx: Effects,
    ) -> None:
        """A guest call's agent hands the caller on: the origin, which holds the caller's trunk,
        carries the transfer out; this agent is free at once."""
        if not blind:
            raise FailedPrecondition(
                "consult-from-guest",
                f"call {call.call_id} is served here for {call.guest_of}: only a blind transfer is possible",
            )
        ConnectedCalls.check_connected(call)
        site = self.directory.site_of(code, target)
        extra = dict(attached)
        self.attach(call, extra)  # size limits, before anything changes
        self._agent_leaves(call, code, target, site, now, fx)
        fx.add(
            LegToOrigin(
                call.offer_id,
                "transfer_asked",
                agent_code=code,
                # "A skill group here" means here, at this site, not at the origin.
                transfer_to=(
                    target.agent_code,
                    target.skill_group,
                    site if target.skill_group else "",
                    target.ivr,
                ),
                attached=tuple(sorted(extra.items())),
            )
        )
        self._guests.close(call)

    def carry_out(
        self,
        now: float,
        offer_id: str,
        from_agent_code: str,
        target: TransferTarget,
        attached: Mapping[str, str],
        fx: Effects,
    ) -> None:
        """The agent serving our call in another city transferred it (blind): carry it out here."""
        found = self._legs.serving(offer_id)
        if found is None:
            return
        call, leg = found
        self._legs.close(call)
        call.state = CallState.TALKING
        try:
            site = self.resolve(from_agent_code, target, True)
            self.attach(call, attached)
        except VccError as exc:
            # The target cannot take it (any more): the caller waits in our queue, never dropped.
            fx.journal(
                call, EventKind.TRANSFERRED, now, agent_code=from_agent_code, data=(("failed", exc.error_id),)
            )
            self._queues.enqueue(call, call.skill_group, now, fx, reason="transfer-failed")
            return
        desc = target.describe(site)
        self.record_step(call, f"{from_agent_code}@{leg.target_site_id}>{desc}")
        fx.journal(
            call,
            EventKind.TRANSFERRED,
            now,
            agent_code=from_agent_code,
            data=(("kind", "blind"), ("to", desc), ("from_site", leg.target_site_id)),
        )
        fx.add(self._told(call, target, site, now))
        self.send_on(call, from_agent_code, target, site, now, fx)
