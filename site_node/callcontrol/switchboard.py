"""The facade of a site's call control: one object the adapters and the model engine call.

It builds the parts (`parts.py`) and, over them, one small object per caller (`sides/`): the
trunk's callers, the agents' desks (their calls, their transfers), the supervisors' desks,
administration, central, the other cities' legs, and the deadlines. Each request the facade
offers is the method of the side it comes from (see the table in `__init__`); it adds only the
read-outs of the adapters and the status, and the site's shutdown.

Pure and single-threaded: every request takes `now` and returns the effects its adapters carry
out, in order; it never awaits, so each one is atomic on the event loop. The same code runs in
real time in a site node and in virtual time in the model engine.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Mapping

from routing.agents import Agent
from site_node.callcontrol.domain import Call, Effect, Outcome
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.flow_calls import FlowBook
from site_node.callcontrol.parts import build_parts, site_stopping
from site_node.callcontrol.resources import ChannelPool
from site_node.callcontrol.sides.administration import Administration
from site_node.callcontrol.sides.agent_desk import AgentDesk
from site_node.callcontrol.sides.callers import CallerSide
from site_node.callcontrol.sides.central import CentralSide
from site_node.callcontrol.sides.deadlines import Deadlines
from site_node.callcontrol.sides.peers import PeerSide
from site_node.callcontrol.sides.supervisor_desk import SupervisorDesk
from site_node.callcontrol.sides.transfer_desk import TransferDesk
from vcc.config import RoutingConfig, SiteConfig


def _new_id() -> str:
    return uuid.uuid4().hex


class Switchboard:
    def __init__(
        self,
        site: SiteConfig,
        service_number: str,
        new_call_id: Callable[[], str] = _new_id,
        *,
        routing: RoutingConfig | None = None,
        agent_sites: Mapping[str, str] | None = None,
        site_groups: Mapping[str, frozenset[str]] | None = None,
        journal: bool = True,
        new_offer_id: Callable[[], str] = _new_id,
        flows: FlowBook | None = None,
    ) -> None:
        """`journal=False` leaves the Journal effects out (nothing else changes): for the model
        engine, which never reads them and would spend much of its time building them. `flows`:
        the IVR flow a dialled number runs (None, or no flow for it: the site's one menu)."""
        self.site = site
        self.site_id = site.id
        self.service_number = service_number
        self.routing = routing or RoutingConfig(mode="isolated")
        self.journaling = journal
        self.parts = parts = build_parts(
            site, service_number, self.routing, new_call_id, new_offer_id, agent_sites, site_groups, flows
        )
        # The parts the adapters and the status read.
        self.counters, self.acd, self.desk, self.queues = parts.counters, parts.acd, parts.desk, parts.queues
        self.resources, self.flows, self.directory = parts.resources, parts.flows, parts.directory
        self.supervision, self.dialler = parts.supervision, parts.dialler

        # The sides, one per caller, each over the shared parts.
        self.deadlines = Deadlines(parts, self._fx)
        self.callers = CallerSide(parts, self._fx)
        self.agent_desk = AgentDesk(parts, self._fx, self.deadlines)
        self.transfer_desk = TransferDesk(parts, self._fx)
        self.supervisor_desk = SupervisorDesk(parts, self._fx)
        self.administration = Administration(site.id, parts, self._fx)
        self.central = CentralSide(parts, self._fx)
        self.peers = PeerSide(parts, self._fx)

        # The requests, by who makes them: each is the side's own method.
        self.next_deadline, self.tick = self.deadlines.next_deadline, self.deadlines.tick
        callers = self.callers  # the trunk
        self.offer, self.dial_failed, self.caller_digits = (
            callers.offer,
            callers.dial_failed,
            callers.caller_digits,
        )
        self.ivr_looked_up, self.prompts_played = callers.ivr_looked_up, callers.prompts_played
        self.customer_found, self.caller_hang_up = callers.customer_found, callers.caller_hang_up
        self.caller_line_failed = callers.caller_line_failed
        agent = self.agent_desk  # an agent's desk or phone
        self.login, self.logout, self.set_ready = agent.login, agent.logout, agent.set_ready
        self.desktop_attached, self.desktop_detached = agent.desktop_attached, agent.desktop_detached
        self.phone_unreachable, self.answer, self.hold = agent.phone_unreachable, agent.answer, agent.hold
        self.agent_hang_up, self.end_wrap_up = agent.agent_hang_up, agent.end_wrap_up
        self.voicemail, self.work_voicemail = agent.voicemail, agent.work_voicemail
        self.answer_callback_preview = agent.answer_callback_preview
        transfers = self.transfer_desk
        self.transfer, self.complete_transfer = transfers.transfer, transfers.complete_transfer
        self.conference, self.cancel_transfer = transfers.conference, transfers.cancel_transfer
        leader = self.supervisor_desk
        self.team, self.check_may_supervise, self.supervise = (
            leader.team,
            leader.check_may_supervise,
            leader.supervise,
        )
        self.leave_supervision, self.intercept = leader.leave_supervision, leader.intercept
        self.force_state, self.force_logout = leader.force_state, leader.force_logout
        self.follow_supervision = leader.follow_supervision
        admin = self.administration
        self.add_agent, self.set_agent_skills = admin.add_agent, admin.set_agent_skills
        self.customer_edited, self.restore_open = admin.customer_edited, admin.restore_open
        central = self.central
        self.route_decided, self.overflow_targets = central.route_decided, central.overflow_targets
        self.pull_call = central.pull_call
        peers = self.peers  # the other cities, on our legs there and theirs here
        self.remote_reserved, self.remote_answer_asked = peers.remote_reserved, peers.remote_answer_asked
        self.remote_held, self.remote_refused = peers.remote_held, peers.remote_refused
        self.remote_returned, self.remote_lost = peers.remote_returned, peers.remote_lost
        self.remote_hung_up, self.remote_transfer_asked = peers.remote_hung_up, peers.remote_transfer_asked
        self.serve_remote, self.remote_answer_confirmed = peers.serve_remote, peers.remote_answer_confirmed
        self.remote_caller_gone = peers.remote_caller_gone

    def _fx(self) -> Effects:
        return Effects(self.site_id, self.journaling)

    # What the adapters and the status read ----------------------------------------------------

    @property
    def calls(self) -> dict[str, Call]:
        return self.parts.book.live

    @property
    def agents(self) -> dict[str, Agent]:
        return self.desk.agents

    @property
    def skills(self) -> dict[str, dict[str, int]]:
        return self.desk.skills

    @property
    def trunks(self) -> dict[str, ChannelPool]:
        return self.resources.trunks

    @property
    def boards(self) -> dict[str, ChannelPool]:
        return self.resources.boards

    @property
    def ties(self) -> dict[str, ChannelPool]:
        return self.resources.ties

    @property
    def served_for_others(self) -> int:
        return self.counters.served_for_others

    @property
    def served_elsewhere(self) -> int:
        return self.counters.served_elsewhere

    @property
    def supervising(self) -> bool:
        """Some supervision (or pending forced logout) needs following after each operation."""
        return self.supervisor_desk.supervising

    def agent(self, code: str) -> Agent:
        return self.desk.agent(code)

    def agents_by_state(self) -> Counter[str]:
        return self.desk.by_state()

    def oldest_wait_s(self, group: str, now: float) -> float:
        return self.queues.oldest_wait_s(group, now)

    def expected_wait(self, group: str, position: int) -> float:
        return self.queues.expected_wait(group, position)

    def call_for_key(self, idempotency_key: str) -> str | None:
        return self.parts.book.call_for_key(idempotency_key)

    def ended_outcome(self, idempotency_key: str) -> tuple[str, Outcome] | None:
        return self.parts.book.ended_outcome(idempotency_key)

    # Shutdown -------------------------------------------------------------------------------

    def shutdown(self, now: float) -> list[Effect]:
        """The site is stopping: every call ends, its record kept (parts.site_stopping)."""
        fx = self._fx()
        site_stopping(self.parts, now, fx)
        return fx.items
