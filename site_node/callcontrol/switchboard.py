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

from routing.acd import Acd
from routing.agents import Agent
from site_node.callcontrol.agents import Agents
from site_node.callcontrol.calls import CallBook
from site_node.callcontrol.connected import ConnectedCalls
from site_node.callcontrol.consults import Consults
from site_node.callcontrol.counters import SiteCounters
from site_node.callcontrol.directory import Directory, TransferTarget
from site_node.callcontrol.domain import Call, CallState, CustomerInfo, Effect, Outcome, ToAgent
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.guests import GuestCalls, RemoteOfferIn
from site_node.callcontrol.ivr import Ivr
from site_node.callcontrol.legs_out import RemoteLegs
from site_node.callcontrol.limits import check_digits
from site_node.callcontrol.pushed_targets import PushedTarget
from site_node.callcontrol.queues import Queues
from site_node.callcontrol.resources import ChannelPool, Resources
from site_node.callcontrol.ringing import Ringing
from site_node.callcontrol.screen_pop import ScreenPop
from site_node.callcontrol.supervision import Supervision
from site_node.callcontrol.timers import Timers
from site_node.callcontrol.transfers import Transfers
from site_node.callcontrol.trunk import TrunkSide
from vcc.call_events import EventKind
from vcc.config import RoutingConfig, SiteConfig
from vcc.errors import FailedPrecondition


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
    ) -> None:
        """`journal=False` leaves the Journal effects out (nothing else changes): for the model
        engine, which never reads them and would spend much of its time building them."""
        self.site = site
        self.site_id = site.id
        self.service_number = service_number
        self.routing = routing or RoutingConfig(mode="isolated")
        self.journaling = journal
        self.counters = SiteCounters()
        self.timers = Timers()
        self.book = CallBook(site.id)
        self.resources = Resources(site)
        self.acd = Acd({g.id: (g.strategy, g.priority) for g in site.skill_groups})
        self.desk = Agents(site, self.acd, self.timers)
        self.ringing = Ringing(site, self.desk, self.timers, self.counters)
        self.queues = Queues(site, self.acd, self.book, self.desk, self.ringing)
        self.ivr = Ivr(site, self.book, self.resources, self.queues, self.timers, self.counters)
        self.screen_pop = ScreenPop(self.book, self.queues, self.timers)
        self.trunk = TrunkSide(site.id, service_number, self.book, self.resources, self.counters, new_call_id)
        self.connected = ConnectedCalls(
            site, self.desk, self.queues, self.ringing, self.ivr, self.trunk, self.counters
        )
        self.legs = RemoteLegs(
            site.id, self.routing, self.book, self.resources, self.queues, self.trunk, self.timers,
            self.counters, self.desk.staffed, new_offer_id,
        )  # fmt: skip
        self.guests = GuestCalls(
            site.id, self.book, self.resources, self.desk, self.queues, self.ringing, self.connected,
            self.counters,
        )  # fmt: skip
        self.consults = Consults(
            site, self.book, self.desk, self.queues, self.ringing, self.connected, self.legs, self.timers,
            self.counters,
        )  # fmt: skip
        directory = Directory(
            site.id,
            agent_sites or {a.code: site.id for a in site.agents},
            site_groups or {site.id: frozenset(g.id for g in site.skill_groups)},
        )
        self.transfers = Transfers(
            site.id, directory, self.resources, self.desk, self.queues, self.ringing, self.ivr,
            self.connected, self.legs, self.guests, self.consults,
        )  # fmt: skip
        self.supervision = Supervision(site, self.book, self.desk, self.connected)
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
    ) -> tuple[str, list[Effect]]:
        """A call arrives on a trunk. Returns its call id (minted here unless pre-routed)."""
        fx = self._fx()
        call = self.trunk.arrive(
            now, fx, idempotency_key=idempotency_key, ani=ani, dnis=dnis, trunk_group=trunk_group,
            call_id=call_id, attached=dict(attached or {}),
        )  # fmt: skip
        if call.state != CallState.ENDED:
            self.screen_pop.fetch(call, now, fx)
            self.ivr.start(call, now, fx)
            self.queues.dispatch(now, fx)
        return call.call_id, fx.items

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
        return fx.items

    def end_wrap_up(self, now: float, code: str, ready: bool, reason: str = "") -> list[Effect]:
        fx = self._fx()
        self.desk.end_wrap_up(now, code, ready, reason, fx)
        self.queues.dispatch(now, fx)
        return fx.items

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
        """The site is stopping: consultations end, guest calls go back to their origins, legs in
        other cities end, and every call of our trunks ends (failed unless answered), its record
        kept."""
        fx = self._fx()
        for call in list(self.calls.values()):
            if call.consult is not None:
                reason = "site-stopping" if call.consult.offer_id else "site-shutdown"
                self.consults.end_leg(call, now, fx, reason)
        for call in list(self.calls.values()):
            if call.guest_of:
                self.guests.site_stopping(call, now, fx)
            elif call.remote is not None:
                self.legs.site_stopping(call, fx)
        for call in list(self.calls.values()):
            if call.state == CallState.QUEUED:
                self.queues.leave(call)
            elif call.state == CallState.IVR:
                self.ivr.release(call)
            code = call.agent_code
            if call.state in (CallState.RINGING, CallState.TALKING, CallState.HELD) and code:
                fx.add(ToAgent(code, "ended", now, call_id=call.call_id, reason="site-shutdown"))
                self.desk.site_stopping(code)
            outcome = Outcome.ANSWERED if call.answered_at is not None else Outcome.FAILED
            self.trunk.end(call, outcome, "site-shutdown", now, fx)
        return fx.items
