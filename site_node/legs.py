"""Calls served in other cities (the virtual call center), on top of a city's own switchboard.

On the ORIGIN side a waiting call may be offered to another site (overflow, pooled): it leaves
the local queue while the offer is open, keeps its trunk channel and takes a tie-trunk channel;
if the target refuses, times out, dies or gives it back, it re-enters the queue with its
original arrival time. The origin alone tells the caller what happens, so a remote answer needs
its confirmation: a call is never connected twice. On the TARGET side the call is a guest: an
agent reserved at once (calls are only ever queued at their origin), its events journaled here.
Pure like its base: time comes in, effects go out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from routing import agents as fsm
from routing.agents import AgentState
from site_node.domain import (
    AskRoute,
    Call,
    CallState,
    CustomerInfo,
    Effect,
    LegToOrigin,
    LegToTarget,
    OfferRemote,
    Outcome,
    RemoteLeg,
    ToAgent,
    ToCaller,
)
from site_node.local_switch import (
    LocalSwitchboard,
    _Effects,
)
from vcc.call_events import EventKind
from vcc.config import RoutingConfig, SiteConfig
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


class LegsSwitchboard(LocalSwitchboard):
    def __init__(
        self,
        site: SiteConfig,
        service_number: str,
        new_call_id: Callable[[], str] | None = None,
        *,
        routing: RoutingConfig | None = None,
        journal: bool = True,
    ) -> None:
        if new_call_id is None:
            super().__init__(site, service_number, journal=journal)
        else:
            super().__init__(site, service_number, new_call_id, journal=journal)
        self.routing = routing or RoutingConfig(mode="isolated")
        self._offers_made = 0
        # offer id -> call id, on both sides.
        self._legs_out: dict[str, str] = {}
        self._legs_in: dict[str, str] = {}
        self.served_for_others = 0
        self.served_elsewhere = 0

    # Origin: when to ask, and acting on the answer ------------------------------------------

    def _waiting(self, call: Call, now: float, fx: _Effects) -> None:
        mode = self.routing.mode
        if mode == "isolated":
            return
        if mode == "pooled" or not self._staffed(call.skill_group):
            self._arm(now, "route", call.call_id, "")
        else:
            self._arm(max(now, call.arrived_at + self.routing.overflow_after_s), "route", call.call_id, "")

    def _staffed(self, group: str) -> bool:
        return self.staffed[group] > 0

    def _on_deadline(self, kind: str, subject: str, token: str, when: float, fx: _Effects) -> None:
        if kind == "route":
            self._route_due(subject, when, fx)
        elif kind == "offer":
            self._offer_expired(subject, when, fx)
        else:
            super()._on_deadline(kind, subject, token, when, fx)

    def _route_due(self, call_id: str, now: float, fx: _Effects) -> None:
        call = self.calls.get(call_id)
        if call is None or call.state != CallState.QUEUED or call.remote or call.route_pending:
            return
        if self.acd.queued(call_id) is None:
            return  # parked for its screen pop; it asks once it joins the queue
        call.route_pending = True
        fx.items.append(
            AskRoute(
                call_id, call.skill_group, call.priority, now - call.arrived_at, tuple(sorted(call.excluded))
            )
        )

    def route_decided(
        self, now: float, call_id: str, target_site_id: str | None, decision_id: str = ""
    ) -> list[Effect]:
        """Central's answer to AskRoute (None or this site: stay; ask again later)."""
        fx = _Effects(self.site_id, self.journaling)
        call = self.calls.get(call_id)
        if call is None:
            return []
        call.route_pending = False  # answered, whatever happened to the call meanwhile
        if call.state != CallState.QUEUED or call.remote is not None:
            # It rang here meanwhile (or is offered elsewhere): if that fails, it is queued again
            # and asks again then.
            return []
        if not target_site_id or target_site_id == self.site_id:
            call.excluded.clear()
            self._arm(now + self.routing.reroute_interval_s, "route", call_id, "")
            return []
        self._start_offer(call, target_site_id, decision_id, now, fx, purpose=self.routing.mode)
        self._dispatch(now, fx)
        return fx.items

    def pull_call(self, now: float, skill_group: str, to_site_id: str, decision_id: str = "") -> list[Effect]:
        """Pooled mode: an agent is free at `to_site_id`: offer it our longest-waiting call."""
        if skill_group not in self.acd.skill_groups or to_site_id == self.site_id:
            return []
        call_id = self.acd.head(skill_group)
        if call_id is None:
            return []
        fx = _Effects(self.site_id, self.journaling)
        self._start_offer(self.calls[call_id], to_site_id, decision_id, now, fx, purpose="pooled")
        return fx.items

    def _start_offer(
        self,
        call: Call,
        target: str,
        decision_id: str,
        now: float,
        fx: _Effects,
        *,
        purpose: str,
        agent_code: str = "",
        skill_group: str = "",
        from_agent_code: str = "",
    ) -> str | None:
        """Open a remote leg for the call: its offer id, or None when no tie channel is free.

        Routing and blind transfers make it the call's serving leg (`call.remote`); a consult keeps
        it beside the serving agent (the transfer layer records it in `call.consult`)."""
        tie = self.ties.get(target)
        if tie is None or not tie.acquire():
            # No voice path to that city now.
            call.excluded.add(target)
            fx.journal(
                call, EventKind.ROUTE_FAILED, now, data=(("target", target), ("reason", "no-tie-channel"))
            )
            if purpose in ("overflow", "pooled"):
                self._arm(now, "route", call.call_id, "")  # stays, and tries others
            return None
        self._offers_made += 1
        offer_id = f"{self.site_id}-{call.call_id}-{self._offers_made}"
        self._legs_out[offer_id] = call.call_id
        if purpose != "transfer-consult":
            self.acd.dequeue(call.call_id)
            call.remote = RemoteLeg(target, offer_id, decision_id)
        fx.journal(
            call,
            EventKind.ROUTED,
            now,
            skill_group=call.skill_group,
            data=(
                ("target", target),
                ("decision_id", decision_id),
                ("offer_id", offer_id),
                ("purpose", purpose),
            ),
        )
        fx.items.append(
            OfferRemote(
                offer_id,
                call.call_id,
                target,
                decision_id,
                skill_group or call.skill_group,
                call.priority,
                call.arrived_at,
                call.ani,
                call.dnis,
                tuple(sorted(call.attached.items())),
                call.customer,
                purpose,
                agent_code=agent_code,
                from_agent_code=from_agent_code,
            )
        )
        self._arm(now + self.routing.offer_timeout_s, "offer", offer_id, "")
        return offer_id

    def _leg(self, offer_id: str) -> tuple[Call, RemoteLeg] | None:
        call = self.calls.get(self._legs_out.get(offer_id, ""))
        if call is None or call.remote is None or call.remote.offer_id != offer_id:
            return None
        return call, call.remote

    def _offer_expired(self, offer_id: str, now: float, fx: _Effects) -> None:
        found = self._leg(offer_id)
        if found is not None and found[1].state == "offering":
            fx.items.append(LegToTarget(offer_id, "end", "offer-timeout"))
            self._leg_failed(found[0], now, fx, "offer-timeout", EventKind.ROUTE_FAILED)

    def _leg_failed(self, call: Call, now: float, fx: _Effects, reason: str, kind: EventKind) -> None:
        """The leg is over without the call being finished: back to our queue, original arrival kept."""
        leg = call.remote
        assert leg is not None
        self._close_leg_out(call)
        call.excluded.add(leg.target_site_id)
        fx.journal(call, kind, now, data=(("target", leg.target_site_id), ("reason", reason)))
        call.answered_at = None if kind == EventKind.ROUTE_FAILED else call.answered_at
        self._enqueue(call, call.skill_group, now, fx, reason=reason)

    def _close_leg_out(self, call: Call) -> None:
        leg = call.remote
        if leg is None:
            return
        self.ties[leg.target_site_id].release()
        self._legs_out.pop(leg.offer_id, None)
        if leg.state in ("talking", "held"):
            self.served_elsewhere -= 1
        call.remote = None
        call.agent_code = ""

    # Origin: what the target reports --------------------------------------------------------

    def remote_reserved(self, now: float, offer_id: str, agent_code: str) -> list[Effect]:
        found = self._leg(offer_id)
        if found is None or found[1].state != "offering":
            return [LegToTarget(offer_id, "end", "offer-withdrawn")]
        call, leg = found
        leg.state = "ringing"
        leg.agent_code = agent_code
        call.state = CallState.RINGING
        call.agent_code = agent_code
        return [ToCaller(call.call_id, "ringing", now, site_id=leg.target_site_id, agent_code=agent_code)]

    def remote_refused(self, now: float, offer_id: str, reason: str) -> list[Effect]:
        found = self._leg(offer_id)
        if found is None:
            return []
        fx = _Effects(self.site_id, self.journaling)
        self._leg_failed(found[0], now, fx, reason, EventKind.ROUTE_FAILED)
        self._dispatch(now, fx)
        return fx.items

    def remote_lost(self, now: float, offer_id: str, reason: str = "target-lost") -> list[Effect]:
        """The leg's stream broke (the target died or the link failed): nobody is dropped."""
        found = self._leg(offer_id)
        if found is None:
            return []
        fx = _Effects(self.site_id, self.journaling)
        call, leg = found
        kind = EventKind.ROUTE_FAILED if leg.state == "offering" else EventKind.RETURNED
        self._leg_failed(call, now, fx, reason, kind)
        self._dispatch(now, fx)
        return fx.items

    def remote_returned(self, now: float, offer_id: str, reason: str) -> list[Effect]:
        found = self._leg(offer_id)
        if found is None:
            return []
        fx = _Effects(self.site_id, self.journaling)
        self._leg_failed(found[0], now, fx, reason, EventKind.RETURNED)
        self._dispatch(now, fx)
        return fx.items

    def remote_answer_asked(self, now: float, offer_id: str) -> list[Effect]:
        found = self._leg(offer_id)
        if found is None or found[1].state != "ringing":
            return [LegToTarget(offer_id, "end", "leg-not-current")]
        call, leg = found
        leg.state = "talking"
        call.state = CallState.TALKING
        call.answered_at = now
        self.counters.answered += 1
        self.served_elsewhere += 1
        return [
            LegToTarget(offer_id, "confirm"),
            ToCaller(call.call_id, "connected", now, site_id=leg.target_site_id, agent_code=leg.agent_code),
        ]

    def remote_held(self, now: float, offer_id: str, held: bool) -> list[Effect]:
        found = self._leg(offer_id)
        if found is None or found[1].state not in ("talking", "held"):
            return []
        call, leg = found
        leg.state = "held" if held else "talking"
        call.state = CallState.HELD if held else CallState.TALKING
        return [ToCaller(call.call_id, "held" if held else "retrieved", now)]

    def remote_hung_up(self, now: float, offer_id: str) -> list[Effect]:
        found = self._leg(offer_id)
        if found is None:
            return []
        call, leg = found
        fx = _Effects(self.site_id, self.journaling)
        agent = leg.agent_code
        self._close_leg_out(call)
        call.agent_code = agent
        self._end(call, Outcome.ANSWERED, "agent-hung-up", now, fx)
        self._dispatch(now, fx)
        return fx.items

    # Origin: the caller's side while the call is elsewhere ----------------------------------

    def caller_hang_up(self, now: float, call_id: str, reason: str = "caller-hung-up") -> list[Effect]:
        call = self._live_call(call_id)
        if call.guest_of:
            raise FailedPrecondition("guest-call", f"call {call_id} is served here for {call.guest_of}")
        if call.remote is None:
            return super().caller_hang_up(now, call_id, reason)
        fx = _Effects(self.site_id, self.journaling)
        leg = call.remote
        answered = leg.state in ("talking", "held")
        fx.items.append(LegToTarget(leg.offer_id, "end", reason))
        agent = leg.agent_code
        self._close_leg_out(call)
        call.agent_code = agent if answered else ""
        if answered:
            fx.journal(call, EventKind.CALLER_HUNG_UP, now, agent_code=agent)
            self._end(call, Outcome.ANSWERED, reason, now, fx)
        else:
            fx.journal(call, EventKind.ABANDONED, now, skill_group=call.skill_group)
            self._end(call, Outcome.ABANDONED, reason, now, fx)
        self._dispatch(now, fx)
        return fx.items

    # Target: serving another city's call ----------------------------------------------------

    def serve_remote(self, now: float, offer: RemoteOfferIn) -> tuple[str | None, str, list[Effect]]:
        """Reserve an agent for an offered call: (agent code, "", effects) or (None, reason, [])."""
        if offer.origin_site_id == self.site_id or not offer.offer_id or not offer.call_id:
            raise InvalidArgument(
                "bad-offer", "offer: origin must be another site; offer_id and call_id required"
            )
        if offer.offer_id in self._legs_in:
            raise FailedPrecondition("offer-exists", f"offer {offer.offer_id} is already being served")
        if offer.call_id in self.calls:
            return None, "call-already-here", []
        if offer.skill_group not in self.acd.skill_groups and not offer.agent_code:
            return None, "unknown-skill-group", []
        tie = self.ties.get(offer.origin_site_id)
        if tie is None:
            return None, "no-tie-trunk", []
        code = self._reserve_agent(offer)
        if code is None:
            return None, "no-agent", []
        if not tie.acquire():
            self._unreserve(code)
            return None, "no-tie-channel", []
        fx = _Effects(self.site_id, self.journaling)
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
        call.seq = self._ended_seq.pop(call.call_id, 0)
        self.calls[call.call_id] = call
        self._legs_in[offer.offer_id] = call.call_id
        self._ring(call, code, now, fx, data=(("origin", offer.origin_site_id), ("offer_id", offer.offer_id)))
        return code, "", fx.items

    def _reserve_agent(self, offer: RemoteOfferIn) -> str | None:
        if offer.agent_code:
            agent = self.agents.get(offer.agent_code)
            if agent is None or agent.state != AgentState.READY:
                return None
            self.acd.agent_unavailable(agent.code)
            return agent.code
        return self.acd.take_ready_agent(offer.skill_group)

    def _unreserve(self, code: str) -> None:
        agent = self.agents[code]
        self.acd.agent_ready(code, self._standing(agent))

    def _guest(self, offer_id: str) -> Call | None:
        return self.calls.get(self._legs_in.get(offer_id, ""))

    def remote_answer_confirmed(self, now: float, offer_id: str) -> list[Effect]:
        call = self._guest(offer_id)
        if call is None or call.state != CallState.RINGING or not call.answer_asked:
            return []
        fx = _Effects(self.site_id, self.journaling)
        self._connect(call, now, fx)
        self.served_for_others += 1
        return fx.items

    def remote_caller_gone(self, now: float, offer_id: str, reason: str) -> list[Effect]:
        """The origin ended the leg (caller hung up, offer withdrawn, origin lost)."""
        call = self._guest(offer_id)
        if call is None:
            return []
        fx = _Effects(self.site_id, self.journaling)
        if call.state == CallState.RINGING:
            self._withdraw_offer(call, now, fx, reason)
        else:
            fx.journal(
                call, EventKind.CALLER_HUNG_UP, now, agent_code=call.agent_code, data=(("reason", reason),)
            )
            self._end_agent_leg(call, now, fx, reason)
        self._close_guest(call)
        self._dispatch(now, fx)
        return fx.items

    def _close_guest(self, call: Call) -> None:
        if call.state in (CallState.TALKING, CallState.HELD):
            self.served_for_others -= 1
        call.state = CallState.ENDED
        self.ties[call.guest_of].release()
        self._legs_in.pop(call.offer_id, None)
        del self.calls[call.call_id]
        self._ended_seq[call.call_id] = call.seq

    # Target: the agent side of a guest call --------------------------------------------------

    def answer(self, now: float, code: str, call_id: str) -> list[Effect]:
        call = self._agent_call(code, call_id)
        if not call.guest_of:
            return super().answer(now, code, call_id)
        if call.state != CallState.RINGING:
            raise FailedPrecondition("call-not-ringing", f"call {call_id} is {call.state}, not ringing")
        if call.answer_asked:
            return []
        # The origin confirms: only then is the caller connected (never to two agents).
        call.answer_asked = True
        return [LegToOrigin(call.offer_id, "answer_asked", agent_code=code)]

    def hold(self, now: float, code: str, call_id: str, hold: bool) -> list[Effect]:
        effects = super().hold(now, code, call_id, hold)
        call = self.calls[call_id]
        if call.guest_of:
            effects.append(LegToOrigin(call.offer_id, "held" if hold else "retrieved", agent_code=code))
        return effects

    def agent_hang_up(self, now: float, code: str, call_id: str) -> list[Effect]:
        call = self._agent_call(code, call_id)
        if call.remote is not None:
            raise FailedPrecondition(
                "call-elsewhere", f"call {call_id} is served at {call.remote.target_site_id}"
            )
        if not call.guest_of:
            return super().agent_hang_up(now, code, call_id)
        if call.state not in (CallState.TALKING, CallState.HELD):
            raise FailedPrecondition("call-not-connected", f"call {call_id} is {call.state}, not connected")
        fx = _Effects(self.site_id, self.journaling)
        fx.journal(call, EventKind.AGENT_HUNG_UP, now, agent_code=code)
        self._end_agent_leg(call, now, fx, "agent-hung-up")
        fx.items.append(LegToOrigin(call.offer_id, "hung_up", agent_code=code))
        self._close_guest(call)
        self._dispatch(now, fx)
        return fx.items

    def _ring_expired(self, call_id: str, agent_code: str, now: float, fx: _Effects) -> None:
        call = self.calls.get(call_id)
        if call is None or not call.guest_of:
            super()._ring_expired(call_id, agent_code, now, fx)
            return
        if call.state != CallState.RINGING or call.agent_code != agent_code or call.answer_asked:
            # Answered, waiting for the origin's confirmation: the stream settles it, not the timer.
            return
        self.counters.ring_no_answer += 1
        fx.journal(call, EventKind.RING_NO_ANSWER, now, agent_code=agent_code)
        self._set_agent(agent_code, fsm.RingTimeout(), now, fx)
        fx.items.append(ToAgent(agent_code, "withdrawn", now, call_id=call_id, reason="no-answer"))
        fx.items.append(LegToOrigin(call.offer_id, "returned", reason="ring-no-answer"))
        self._close_guest(call)

    # Shutdown and figures -------------------------------------------------------------------

    def shutdown(self, now: float) -> list[Effect]:
        fx = _Effects(self.site_id, self.journaling)
        for call in list(self.calls.values()):
            if call.guest_of:
                # Give the call back: its origin re-queues it, nobody is dropped.
                if call.state != CallState.RINGING:
                    fx.journal(
                        call,
                        EventKind.AGENT_HUNG_UP,
                        now,
                        agent_code=call.agent_code,
                        data=(("reason", "site-stopping"),),
                    )
                fx.items.append(
                    ToAgent(call.agent_code, "ended", now, call_id=call.call_id, reason="site-shutdown")
                )
                fx.items.append(LegToOrigin(call.offer_id, "returned", reason="site-stopping"))
                self._close_guest(call)
            elif call.remote is not None:
                fx.items.append(LegToTarget(call.remote.offer_id, "end", "site-stopping"))
                self._close_leg_out(call)
        return fx.items + super().shutdown(now)
