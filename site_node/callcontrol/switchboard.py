"""The facade of a site's call control: one object the adapters and the model engine call.

Each request goes to the part that owns the call where it is in its journey (a consultation, a
leg in another city, a guest call, a call of our own); the facade only routes and puts the
dispatch of waiting calls to ready agents after the operations that can free one. Pure and
single-threaded: every method takes `now` and returns the effects its adapters carry out, in
order; it never awaits, so each call is atomic on the event loop. The same code runs in real time
in a site node and in virtual time in the model engine.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from routing.agents import Agent
from site_node.callcontrol.callbacks import Callback
from site_node.callcontrol.directory import TransferTarget
from site_node.callcontrol.domain import (
    Call,
    CallState,
    CustomerInfo,
    Effect,
    Journal,
    Outcome,
    RecordedEvent,
)
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.flow_calls import FlowBook
from site_node.callcontrol.guests import RemoteOfferIn
from site_node.callcontrol.limits import check_digits
from site_node.callcontrol.parts import build_parts, site_stopping
from site_node.callcontrol.pushed_targets import PushedTarget
from site_node.callcontrol.resources import ChannelPool
from site_node.callcontrol.restored import restore_open
from site_node.callcontrol.voicemail import Message
from vcc.call_events import EventKind
from vcc.config import RoutingConfig, SiteConfig
from vcc.errors import AlreadyExists, FailedPrecondition

# A callee who answered our callback is served before the callers waiting in its group.
CALLBACK_PRIORITY = 9


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
        parts = build_parts(
            site, service_number, self.routing, new_call_id, new_offer_id, agent_sites, site_groups, flows
        )
        self.counters, self.timers, self.book = parts.counters, parts.timers, parts.book
        self.resources, self.acd, self.desk, self.ringing = (
            parts.resources,
            parts.acd,
            parts.desk,
            parts.ringing,
        )
        self.queues, self.trunk, self.flows, self.ivr = parts.queues, parts.trunk, parts.flows, parts.ivr
        self.screen_pop, self.connected, self.legs = parts.screen_pop, parts.connected, parts.legs
        self.guests, self.consults, self.transfers = parts.guests, parts.consults, parts.transfers
        self.supervision, self.dialler, self.directory = parts.supervision, parts.dialler, parts.directory
        self.timers.on("ring", self._ring_due)
        self.timers.on("offer", self._offer_due)

    def _fx(self) -> Effects:
        return Effects(self.site_id, self.journaling)

    # What the adapters and the status read ----------------------------------------------------

    @property
    def calls(self) -> dict[str, Call]:
        return self.book.live

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

    def agent(self, code: str) -> Agent:
        return self.desk.agent(code)

    def agents_by_state(self) -> Counter[str]:
        return self.desk.by_state()

    def oldest_wait_s(self, group: str, now: float) -> float:
        return self.queues.oldest_wait_s(group, now)

    def expected_wait(self, group: str, position: int) -> float:
        return self.queues.expected_wait(group, position)

    def call_for_key(self, idempotency_key: str) -> str | None:
        return self.book.call_for_key(idempotency_key)

    def ended_outcome(self, idempotency_key: str) -> tuple[str, Outcome] | None:
        return self.book.ended_outcome(idempotency_key)

    # Time -----------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    def tick(self, now: float) -> list[Effect]:
        fx = self._fx()
        self.timers.fire_due(now, fx)
        self.queues.dispatch(now, fx)
        self.dialler.dial(now, fx)
        return fx.items

    def _ring_due(self, call_id: str, code: str, now: float, fx: Effects) -> None:
        call = self.book.get(call_id)
        if call is None:
            return
        if call.guest_of:
            self.guests.ring_expired(call, code, now, fx)
        elif call.state == CallState.RINGING and call.agent_code == code:
            self.ringing.no_answer(call, code, now, fx)
            self.queues.enqueue(call, call.skill_group, now, fx, reason="ring-no-answer")

    def _offer_due(self, offer_id: str, _token: str, now: float, fx: Effects) -> None:
        consulting = self.consults.by_offer(offer_id)
        if consulting is not None:
            self.consults.offer_expired(consulting, now, fx)
        else:
            self.legs.offer_expired(offer_id, now, fx)

    # The caller's side ----------------------------------------------------------------------

    def offer(
        self,
        now: float,
        *,
        idempotency_key: str,
        ani: str,
        dnis: str,
        trunk_group: str = "",
        call_id: str = "",
        attached: dict[str, str] | None = None,
        dial_id: str = "",
    ) -> tuple[str, list[Effect]]:
        """A call arrives on a trunk. Returns its call id (minted here unless pre-routed).
        `dial_id`: the callee of one of our dial-outs answered (it skips the IVR)."""
        if dial_id:
            self.dialler.check_answer(dial_id)
        fx = self._fx()
        call = self.trunk.arrive(
            now, fx, idempotency_key=idempotency_key, ani=ani, dnis=dnis, trunk_group=trunk_group,
            call_id=call_id, attached=dict(attached or {}),
        )  # fmt: skip
        if call.state != CallState.ENDED:
            self.screen_pop.fetch(call, now, fx)
            if dial_id:
                agent = self.dialler.answered_by(dial_id)  # preview: the agent who accepted
                group = self.dialler.answered(call, dial_id, now, fx)
                call.priority, call.skill_group = CALLBACK_PRIORITY, group
                if agent:
                    self.ringing.ring(call, agent, now, fx)
                else:
                    self.queues.enqueue(call, group, now, fx, reason="callback")
            else:
                self.ivr.start(call, now, fx)
            self.queues.dispatch(now, fx)
        return call.call_id, fx.items

    def answer_callback_preview(self, now: float, code: str, callback_id: str, accept: bool) -> list[Effect]:
        """The agent shown a callback (preview) accepts it, dialled for them, or declines it."""
        fx = self._fx()
        self.dialler.answer_preview(code, callback_id, accept, now, fx)
        self.queues.dispatch(now, fx)
        return fx.items

    def dial_failed(self, now: float, dial_id: str, outcome: str) -> list[Effect]:
        """The trunk could not reach a dialled callee (no-answer, busy, failed): retried later."""
        fx = self._fx()
        self.dialler.failed(dial_id, outcome, now, fx)
        return fx.items

    def caller_digits(self, now: float, call_id: str, digits: str) -> list[Effect]:
        call = self.book.call(call_id)
        check_digits(digits)
        fx = self._fx()
        if call.state != CallState.IVR:
            # Digits outside the menu are heard by nobody; record them for the history.
            fx.journal(call, EventKind.DIGITS, now, data=(("digits", digits), ("ignored", "true")))
            return fx.items
        self.ivr.digits(call, digits, now, fx)
        self.queues.dispatch(now, fx)
        return fx.items

    def ivr_looked_up(
        self, now: float, call_id: str, request: int, fields: dict[str, str] | None
    ) -> list[Effect]:
        """Central answered a flow's look-up (None: it failed); a late answer takes the timeout path."""
        fx = self._fx()
        self.flows.looked_up(call_id, request, fields, now, fx)
        self.queues.dispatch(now, fx)
        return fx.items

    def prompts_played(self, now: float, call_id: str) -> list[Effect]:
        """The caller heard the flow's prompts to the end: its time to press keys counts from now."""
        self.flows.played(call_id, now)
        return []

    def customer_found(self, now: float, call_id: str, customer: CustomerInfo | None) -> list[Effect]:
        """The look-up answered (None: no record, or central unreachable)."""
        fx = self._fx()
        self.screen_pop.resolved(call_id, customer, now, fx)
        self.queues.dispatch(now, fx)
        return fx.items

    def caller_hang_up(self, now: float, call_id: str, reason: str = "caller-hung-up") -> list[Effect]:
        call = self.book.call(call_id)
        if call.guest_of:
            raise FailedPrecondition("guest-call", f"call {call_id} is served here for {call.guest_of}")
        fx = self._fx()
        if call.consult is not None:
            self.consults.end_leg(call, now, fx, reason)
        if call.remote is not None:
            self.legs.caller_hung_up(call, now, fx, reason)
        else:
            self.connected.caller_hang_up(call, now, fx, reason)
        self.queues.dispatch(now, fx)
        return fx.items

    def caller_line_failed(self, now: float, call_id: str, reason: str) -> list[Effect]:
        """The caller's line broke on our side (its media engine died): the call ends as a
        hang-up does, failed rather than abandoned when nobody had answered it."""
        call = self.book.call(call_id)
        if call.guest_of or call.remote is not None or call.consult is not None:
            return self.caller_hang_up(now, call_id, reason)
        fx = self._fx()
        self.connected.caller_hang_up(call, now, fx, reason, unanswered=Outcome.FAILED)
        self.queues.dispatch(now, fx)
        return fx.items

    # The agent's side -----------------------------------------------------------------------

    def phone_unreachable(self, now: float, code: str, call_id: str) -> list[Effect]:
        """The agent's phone refused the ring or never answered it: as a ring that timed out."""
        fx = self._fx()
        call = self.book.get(call_id)
        if call is not None and call.state == CallState.RINGING and call.agent_code == code:
            self._ring_due(call_id, code, now, fx)
            self.queues.dispatch(now, fx)
        return fx.items

    def login(self, now: float, code: str) -> list[Effect]:
        """Credentials are checked by the adapter (slow hash) before this is called."""
        fx = self._fx()
        self.desk.login(now, code, fx)
        return fx.items

    def logout(self, now: float, code: str) -> list[Effect]:
        fx = self._fx()
        self.desk.logout(now, code, fx)
        return fx.items

    def set_ready(self, now: float, code: str, ready: bool, reason: str = "") -> list[Effect]:
        fx = self._fx()
        self.desk.set_ready(now, code, ready, reason, fx)
        self.queues.dispatch(now, fx)
        self.dialler.dial(now, fx)
        return fx.items

    def end_wrap_up(
        self, now: float, code: str, ready: bool, reason: str = "", wrap_code: str = "", note: str = ""
    ) -> list[Effect]:
        fx = self._fx()
        call_id = self.desk.agent(code).call_id
        self.desk.end_wrap_up(now, code, ready, reason, fx)
        if wrap_code or note:
            self._journal_wrap_up(now, code, call_id, wrap_code, note, fx)
        self.queues.dispatch(now, fx)
        self.dialler.dial(now, fx)
        return fx.items

    def _journal_wrap_up(
        self, now: float, code: str, call_id: str, wrap_code: str, note: str, fx: Effects
    ) -> None:
        """The call's record at central keeps what the agent recorded (F19), live or ended."""
        data = (("code", wrap_code), ("note", note))
        call = self.book.live.get(call_id)
        if call is not None:
            fx.journal(call, EventKind.WRAPPED_UP, now, agent_code=code, data=data)
            return
        seq = self.book.next_seq_after_end(call_id)
        if seq is not None and fx.journaling:
            event = RecordedEvent(
                call_id, self.site_id, seq, EventKind.WRAPPED_UP, now, agent_code=code, data=data
            )
            fx.add(Journal(event))

    def desktop_attached(self, code: str) -> None:
        self.desk.desktop_attached(code)

    def desktop_detached(self, now: float, code: str) -> None:
        self.desk.desktop_detached(now, code)

    def _agent_call(self, code: str, call_id: str) -> Call:
        self.desk.logged_in(code)
        call = self.book.call(call_id)
        if call.agent_code != code:
            raise FailedPrecondition("not-your-call", f"call {call_id} is not with agent {code}")
        return call

    def answer(self, now: float, code: str, call_id: str) -> list[Effect]:
        fx = self._fx()
        consulted = self.consults.consulted_here(code, call_id)
        if consulted is not None:
            self.consults.consulted_answers(consulted, now, fx)
            return fx.items
        call = self._agent_call(code, call_id)
        if call.guest_of:
            return self.guests.answer(call)
        self.connected.answer(call, now, fx)
        return fx.items

    def hold(self, now: float, code: str, call_id: str, hold: bool) -> list[Effect]:
        consulting = self.book.get(call_id)
        if consulting is not None and consulting.consult is not None:
            raise FailedPrecondition(
                "consult-in-progress", "the caller's hold is managed by the consultation"
            )
        call = self._agent_call(code, call_id)
        fx = self._fx()
        self.connected.hold(call, hold, now, fx)
        if call.guest_of:
            fx.add(self.guests.held(call, hold))
        return fx.items

    def agent_hang_up(self, now: float, code: str, call_id: str) -> list[Effect]:
        fx = self._fx()
        consulted = self.consults.consulted_here(code, call_id)
        if consulted is not None:
            self.consults.consulted_leaves(consulted, now, fx)
            return fx.items
        consulting = self.book.get(call_id)
        if consulting is not None and consulting.consult is not None and consulting.agent_code == code:
            if consulting.consult.state != "talking":
                raise FailedPrecondition(
                    "consult-in-progress", "the consulted agent is ringing: cancel the consultation first"
                )
            # Hanging up while the consulted agent talks (or in a conference) hands the caller over.
            self.consults.hand_over(consulting, now, fx)
            self.queues.dispatch(now, fx)
            return fx.items
        call = self._agent_call(code, call_id)
        if call.remote is not None:
            raise FailedPrecondition(
                "call-elsewhere", f"call {call_id} is served at {call.remote.target_site_id}"
            )
        if call.guest_of:
            self.guests.agent_hang_up(call, now, fx)
        else:
            self.connected.agent_hang_up(call, now, fx)
        self.queues.dispatch(now, fx)
        return fx.items

    # Transfers, consultations, conferences --------------------------------------------------

    def transfer(
        self,
        now: float,
        code: str,
        call_id: str,
        target: TransferTarget,
        *,
        blind: bool,
        attached: Mapping[str, str] | None = None,
    ) -> list[Effect]:
        call = self._agent_call(code, call_id)
        fx = self._fx()
        self.transfers.transfer(call, code, target, blind, attached or {}, now, fx)
        self.queues.dispatch(now, fx)
        return fx.items

    def complete_transfer(self, now: float, code: str, call_id: str) -> list[Effect]:
        call = self._agent_call(code, call_id)
        fx = self._fx()
        self.consults.complete(call, now, fx)
        self.queues.dispatch(now, fx)
        return fx.items

    def conference(self, now: float, code: str, call_id: str) -> list[Effect]:
        call = self._agent_call(code, call_id)
        fx = self._fx()
        self.consults.conference(call, now, fx)
        return fx.items

    def cancel_transfer(self, now: float, code: str, call_id: str) -> list[Effect]:
        call = self._agent_call(code, call_id)
        fx = self._fx()
        self.consults.cancel(call, now, fx)
        self.queues.dispatch(now, fx)
        return fx.items

    # Central's routing ----------------------------------------------------------------------

    def route_decided(
        self, now: float, call_id: str, target_site_id: str | None, decision_id: str = ""
    ) -> list[Effect]:
        """Central's answer to AskRoute (None or this site: stay; ask again later)."""
        fx = self._fx()
        if self.legs.route_decided(now, call_id, target_site_id, decision_id, fx):
            self.queues.dispatch(now, fx)
        return fx.items

    def overflow_targets(self, now: float, epoch: int, targets: Sequence[PushedTarget]) -> list[Effect]:
        """Central pushed where calls that must leave should go now (legs_out offers at once)."""
        self.legs.targets.update(now, epoch, targets)
        return []

    def pull_call(self, now: float, skill_group: str, to_site_id: str, decision_id: str = "") -> list[Effect]:
        """Pooled mode: an agent is free at `to_site_id`: offer it our longest-waiting call."""
        fx = self._fx()
        self.legs.pull_call(now, skill_group, to_site_id, decision_id, fx)
        return fx.items

    # Origin: what the other city reports on a leg -------------------------------------------

    def remote_reserved(self, now: float, offer_id: str, agent_code: str) -> list[Effect]:
        consulting = self.consults.by_offer(offer_id)
        if consulting is not None:
            return self.consults.remote_reserved(consulting, agent_code, now)
        return self.legs.reserved(now, offer_id, agent_code)

    def remote_answer_asked(self, now: float, offer_id: str) -> list[Effect]:
        consulting = self.consults.by_offer(offer_id)
        if consulting is not None:
            return self.consults.remote_answered(consulting, now)
        return self.legs.answer_asked(now, offer_id)

    def remote_held(self, now: float, offer_id: str, held: bool) -> list[Effect]:
        if self.consults.by_offer(offer_id) is not None:
            return []  # the consulted agent's hold does not change the caller's
        return self.legs.held(now, offer_id, held)

    def remote_refused(self, now: float, offer_id: str, reason: str) -> list[Effect]:
        return self._leg_over(now, offer_id, reason, "consult-failed", self.legs.refused)

    def remote_returned(self, now: float, offer_id: str, reason: str) -> list[Effect]:
        return self._leg_over(now, offer_id, reason, "consult-failed", self.legs.returned)

    def remote_lost(self, now: float, offer_id: str, reason: str = "target-lost") -> list[Effect]:
        """The leg's stream broke (the target died or the link failed): nobody is dropped."""
        return self._leg_over(now, offer_id, reason, "consult-failed", self.legs.lost)

    def remote_hung_up(self, now: float, offer_id: str) -> list[Effect]:
        return self._leg_over(
            now, offer_id, "consulted-agent-left", "left", lambda n, o, _r, fx: self.legs.hung_up(n, o, fx)
        )

    def _leg_over(
        self,
        now: float,
        offer_id: str,
        reason: str,
        consult_stage: str,
        serving_over: Callable[[float, str, str, Effects], None],
    ) -> list[Effect]:
        fx = self._fx()
        consulting = self.consults.by_offer(offer_id)
        if consulting is not None:
            self.consults.remote_over(consulting, now, reason, consult_stage, fx)
        elif self.legs.serving(offer_id) is not None:
            serving_over(now, offer_id, reason, fx)
            self.queues.dispatch(now, fx)
        return fx.items

    def remote_transfer_asked(
        self,
        now: float,
        offer_id: str,
        from_agent_code: str,
        target: TransferTarget,
        attached: Mapping[str, str],
    ) -> list[Effect]:
        """The agent serving our call in another city transferred it (blind): carry it out here."""
        if self.legs.serving(offer_id) is None:
            return []
        fx = self._fx()
        self.transfers.carry_out(now, offer_id, from_agent_code, target, attached, fx)
        self.queues.dispatch(now, fx)
        return fx.items

    # Target: serving another city's caller --------------------------------------------------

    def serve_remote(self, now: float, offer: RemoteOfferIn) -> tuple[str | None, str, list[Effect]]:
        """Reserve an agent for an offered call: (agent code, "", effects) or (None, reason, [])."""
        fx = self._fx()
        code, reason = self.guests.serve(now, offer, fx)
        return code, reason, fx.items

    def remote_answer_confirmed(self, now: float, offer_id: str) -> list[Effect]:
        fx = self._fx()
        self.guests.answer_confirmed(now, offer_id, fx)
        return fx.items

    def remote_caller_gone(self, now: float, offer_id: str, reason: str) -> list[Effect]:
        """The origin ended the leg (caller hung up, offer withdrawn, origin lost)."""
        if self.guests.call_of(offer_id) is None:
            return []
        fx = self._fx()
        self.guests.caller_gone(now, offer_id, reason, fx)
        self.queues.dispatch(now, fx)
        return fx.items

    def restore_open(
        self, now: float, items: Sequence[Callback | Message], last_seq: Mapping[str, int]
    ) -> tuple[list[str], list[Effect]]:
        """At start: the callbacks and messages the site kept open before it stopped (restored.py);
        (ids left out, effects)."""
        fx = self._fx()
        left_out = restore_open(self.site_id, self.dialler, self.flows.voicemail, items, last_seq, now, fx)
        return left_out, fx.items

    # Voicemail (SPEC F27): an agent works its groups' messages --------------------------------

    def voicemail(self, code: str, skill_group: str) -> list[Message]:
        return self.flows.voicemail.listed(code, skill_group)

    def work_voicemail(
        self, now: float, code: str, message_id: str, step: str, note: str = ""
    ) -> list[Effect]:
        """`step`: take, play or done; each goes in the caller's call record."""
        fx = self._fx()
        desk = self.flows.voicemail
        if step == "take":
            desk.take(code, message_id, now, fx)
        elif step == "play":
            desk.play(code, message_id, now, fx)
        else:
            desk.done(code, message_id, note, now, fx)
        return fx.items

    def customer_edited(self, now: float, customer: CustomerInfo) -> list[Effect]:
        """An agent saved the caller's record at central (F21): the live calls of that customer
        carry the new one from now on (a consultation or transfer offers it as saved)."""
        for call in self.book.live.values():
            if call.customer is not None and call.customer.customer_id == customer.customer_id:
                call.customer = customer
        return []

    # Administration (SPEC F25): the adapter checks the administrator and keeps the change -----

    def add_agent(self, now: float, code: str, skills: Mapping[str, int]) -> list[Effect]:
        """A new agent of this site (role agent), logged out, reachable by transfer at once."""
        if code in self.directory.agent_sites:
            raise AlreadyExists("agent-exists", f"agent {code} already exists in the province")
        self.desk.add(code, skills)
        self.supervision.roles[code] = "agent"
        self.supervision.leads[code] = frozenset()
        self.directory.agent_sites[code] = self.site_id
        return []

    def set_agent_skills(self, now: float, code: str, skills: Mapping[str, int]) -> list[Effect]:
        """New skills and levels; a ready agent may take a waiting call of a new group at once."""
        fx = self._fx()
        self.desk.set_skills(code, skills)
        self.queues.dispatch(now, fx)
        return fx.items

    # Supervision (SPEC F24): a group leader on an agent of its team ---------------------------

    def team(self, leader: str) -> list[str]:
        """The agents `leader` may supervise (PermissionDenied for an agent)."""
        return self.supervision.team(leader)

    def check_may_supervise(self, leader: str, agent: str) -> None:
        self.supervision.check_may_act(leader, agent)

    def supervise(self, now: float, leader: str, agent: str, mode: str) -> list[Effect]:
        """Monitor, whisper or barge in on the agent's current call (or change mode)."""
        fx = self._fx()
        self.supervision.supervise(leader, agent, mode, now, fx)
        return fx.items

    def leave_supervision(self, now: float, leader: str) -> list[Effect]:
        fx = self._fx()
        self.supervision.leave(leader, now, fx)
        return fx.items

    def intercept(self, now: float, leader: str, agent: str) -> list[Effect]:
        """The leader takes the agent's call over; the agent goes to wrap-up."""
        fx = self._fx()
        self.supervision.intercept(leader, agent, now, fx)
        self.queues.dispatch(now, fx)
        return fx.items

    def force_state(self, now: float, leader: str, agent: str, ready: bool, reason: str = "") -> list[Effect]:
        fx = self._fx()
        self.supervision.force_state(leader, agent, ready, reason, now, fx)
        self.queues.dispatch(now, fx)
        return fx.items

    def force_logout(self, now: float, leader: str, agent: str) -> list[Effect]:
        fx = self._fx()
        self.supervision.force_logout(leader, agent, now, fx)
        return fx.items

    @property
    def supervising(self) -> bool:
        """Some supervision (or pending forced logout) needs following after each operation."""
        return self.supervision.active

    def follow_supervision(self, now: float) -> list[Effect]:
        """Call after every operation while `supervising`: supervision ends with the agent's leg,
        a forced logout happens once the agent is free."""
        fx = self._fx()
        self.supervision.follow(now, fx)
        return fx.items

    # Shutdown -------------------------------------------------------------------------------

    def shutdown(self, now: float) -> list[Effect]:
        """The site is stopping: every call ends, its record kept (parts.site_stopping)."""
        fx = self._fx()
        site_stopping(self, now, fx)
        return fx.items
