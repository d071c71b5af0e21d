"""A city's switchboard in the province: transfers, consultations and conferences (SPEC F19),
on top of its own calls (local_switch.py) and calls served in other cities (legs.py).

The agent serving a call at its origin can hand the caller to an agent by code anywhere in the
province, to a skill group here or at a named site, or back to the IVR. Blind: the caller goes
at once and the agent is free. Consult: the caller is held while the agent talks with the
target, then completes (the target keeps the caller), conferences (all three talk) or cancels.
The call's attached data and the transfer history travel with it. Pure, like the layers below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from routing import agents as fsm
from routing.agents import AgentState
from site_node.domain import (
    Call,
    CallState,
    Consult,
    Effect,
    LegToOrigin,
    LegToTarget,
    RemoteLeg,
    ToAgent,
    ToCaller,
)
from site_node.legs import LegsSwitchboard, RemoteOfferIn
from site_node.local_switch import (
    CUSTOMER_WAIT_S,
    MAX_ATTACHED_BYTES,
    MAX_ATTACHED_ITEMS,
    MAX_REASON_LENGTH,
    SiteCounters,
    _Effects,
)
from vcc.call_events import EventKind
from vcc.config import RoutingConfig, SiteConfig
from vcc.errors import FailedPrecondition, InvalidArgument, NotFound, VccError

__all__ = [
    "CUSTOMER_WAIT_S",
    "MAX_REASON_LENGTH",
    "RemoteOfferIn",
    "SiteCounters",
    "Switchboard",
    "TransferTarget",
]

# Transfer history kept in the attached data, newest last; bounded like all attached data.
HISTORY_KEY = "transfer_history"
MAX_HISTORY = 512


@dataclass(frozen=True, slots=True)
class TransferTarget:
    """Exactly one of: an agent code, a skill group (with a site, or here), the IVR."""

    agent_code: str = ""
    skill_group: str = ""
    site_id: str = ""
    ivr: bool = False

    def describe(self, site: str) -> str:
        if self.ivr:
            return "ivr"
        return f"{self.agent_code or self.skill_group}@{site}"


class Switchboard(LegsSwitchboard):
    def __init__(
        self,
        site: SiteConfig,
        service_number: str,
        new_call_id: Callable[[], str] | None = None,
        *,
        routing: RoutingConfig | None = None,
        agent_sites: Mapping[str, str] | None = None,
        site_groups: Mapping[str, frozenset[str]] | None = None,
        journal: bool = True,
    ) -> None:
        super().__init__(site, service_number, new_call_id, routing=routing, journal=journal)
        # The province's directory: agent code -> site, site -> its skill groups.
        self.agent_sites = dict(agent_sites or {a.code: site.id for a in site.agents})
        self.site_groups = dict(site_groups or {site.id: frozenset(g.id for g in site.skill_groups)})

    # Requests from the serving agent --------------------------------------------------------

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
        guest = self._agent_call(code, call_id)
        if guest.guest_of:
            return self._forward_transfer(now, code, guest, target, blind=blind, attached=attached or {})
        call = self._serving_call(code, call_id)
        if call.consult is not None:
            raise FailedPrecondition(
                "consult-in-progress", "finish the consultation first (complete, conference or cancel)"
            )
        site = self._resolve(code, target, blind)
        self._attach(call, attached or {})
        fx = _Effects(self.site_id, self.journaling)
        desc = target.describe(site)
        call.attached[HISTORY_KEY] = _history(call.attached.get(HISTORY_KEY, ""), f"{code}>{desc}")
        if blind:
            self._blind(call, code, target, site, now=now, fx=fx)
        else:
            self._consult(call, code, target, site, now=now, fx=fx)
        self._dispatch(now, fx)
        return fx.items

    def _forward_transfer(
        self,
        now: float,
        code: str,
        call: Call,
        target: TransferTarget,
        *,
        blind: bool,
        attached: Mapping[str, str],
    ) -> list[Effect]:
        """A guest call's agent hands the caller on: the origin, which holds the caller's trunk,
        carries the transfer out; this agent is free at once."""
        if not blind:
            raise FailedPrecondition(
                "consult-from-guest",
                f"call {call.call_id} is served here for {call.guest_of}: only a blind transfer is possible",
            )
        if call.state not in (CallState.TALKING, CallState.HELD):
            raise FailedPrecondition(
                "call-not-connected", f"call {call.call_id} is {call.state}, not connected"
            )
        site = self._target_site(code, target)
        extra = dict(attached)
        self._attach(call, extra)  # size limits, before anything changes
        fx = _Effects(self.site_id, self.journaling)
        desc = target.describe(site)
        fx.journal(call, EventKind.TRANSFERRED, now, agent_code=code, data=(("kind", "blind"), ("to", desc)))
        if call.state == CallState.HELD:
            self._set_agent(code, fsm.Retrieve(), now, fx)
        self._end_agent_leg(call, now, fx, "transferred")
        fx.items.append(
            ToAgent(code, "transfer", now, call_id=call.call_id, stage="blind-sent", site_id=site)
        )
        fx.items.append(
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
        self._close_guest(call)
        self._dispatch(now, fx)
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
        found = self._leg(offer_id)
        if found is None:
            return []
        call, leg = found
        fx = _Effects(self.site_id, self.journaling)
        self._close_leg_out(call)
        call.state = CallState.TALKING
        try:
            site = self._resolve(from_agent_code, target, True)
            self._attach(call, attached)
        except VccError as exc:
            # The target cannot take it (any more): the caller waits in our queue, never dropped.
            fx.journal(
                call, EventKind.TRANSFERRED, now, agent_code=from_agent_code, data=(("failed", exc.error_id),)
            )
            self._enqueue(call, call.skill_group, now, fx, reason="transfer-failed")
            self._dispatch(now, fx)
            return fx.items
        desc = target.describe(site)
        history = f"{from_agent_code}@{leg.target_site_id}>{desc}"
        call.attached[HISTORY_KEY] = _history(call.attached.get(HISTORY_KEY, ""), history)
        fx.journal(
            call,
            EventKind.TRANSFERRED,
            now,
            agent_code=from_agent_code,
            data=(("kind", "blind"), ("to", desc), ("from_site", leg.target_site_id)),
        )
        self._send_on(call, from_agent_code, target, site, now=now, fx=fx)
        self._dispatch(now, fx)
        return fx.items

    def _serving_call(self, code: str, call_id: str) -> Call:
        call = self._agent_call(code, call_id)
        if call.state not in (CallState.TALKING, CallState.HELD):
            raise FailedPrecondition("call-not-connected", f"call {call_id} is {call.state}, not connected")
        return call

    def _target_site(self, code: str, target: TransferTarget) -> str:
        """The site a target is at, by the province's directory; raises for a bad target."""
        chosen = sum((bool(target.agent_code), bool(target.skill_group), target.ivr))
        if chosen != 1:
            raise InvalidArgument(
                "bad-transfer-target", "target: exactly one of agent_code, skill_group, ivr"
            )
        if target.ivr:
            return target.site_id or self.site_id
        if target.agent_code:
            site = self.agent_sites.get(target.agent_code)
            if site is None:
                raise NotFound(
                    "unknown-agent", f"target.agent_code: no agent {target.agent_code!r} in the province"
                )
            if target.agent_code == code:
                raise InvalidArgument("transfer-to-self", "target: that is you")
            return site
        site = target.site_id or self.site_id
        if target.skill_group not in self.site_groups.get(site, frozenset()):
            raise NotFound("unknown-skill-group", f"target: no skill group {target.skill_group!r} at {site}")
        return site

    def _resolve(self, code: str, target: TransferTarget, blind: bool) -> str:
        """Validate the target for a transfer from this site; return the site it is at. Raises
        before anything changes."""
        site = self._target_site(code, target)
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
            if site == self.site_id and self.agents[target.agent_code].state != AgentState.READY:
                raise FailedPrecondition("agent-not-ready", f"agent {target.agent_code} is not ready")
        elif site == self.site_id and not blind and self.acd.ready_count(target.skill_group) == 0:
            raise FailedPrecondition("no-agent-ready", f"nobody is ready in {target.skill_group}")
        if site != self.site_id:
            tie = self.ties.get(site)
            if tie is None or tie.free == 0:
                raise FailedPrecondition("no-tie-channel", f"no free tie-trunk channel to {site}")
        return site

    def _attach(self, call: Call, extra: Mapping[str, str]) -> None:
        merged = {**call.attached, **extra}
        size = sum(len(k) + len(v) for k, v in merged.items())
        if len(merged) > MAX_ATTACHED_ITEMS or size > MAX_ATTACHED_BYTES:
            raise InvalidArgument(
                "attached-data-too-large", "attached_data: at most 64 entries and 8 KiB in all"
            )
        call.attached = merged

    def _blind(
        self, call: Call, code: str, target: TransferTarget, site: str, *, now: float, fx: _Effects
    ) -> None:
        desc = target.describe(site)
        fx.journal(call, EventKind.TRANSFERRED, now, agent_code=code, data=(("kind", "blind"), ("to", desc)))
        if call.state == CallState.HELD:
            self._set_agent(code, fsm.Retrieve(), now, fx)
        self._end_agent_leg(call, now, fx, "transferred")
        fx.items.append(
            ToAgent(code, "transfer", now, call_id=call.call_id, stage="blind-sent", site_id=site)
        )
        fx.items.append(
            ToCaller(
                call.call_id,
                "transferred",
                now,
                site_id=site,
                agent_code=target.agent_code,
                skill_group=target.skill_group,
            )
        )
        call.agent_code = ""
        self._send_on(call, code, target, site, now=now, fx=fx, told=True)

    def _send_on(
        self,
        call: Call,
        code: str,
        target: TransferTarget,
        site: str,
        *,
        now: float,
        fx: _Effects,
        told: bool = False,
    ) -> None:
        """Deliver a blind-transferred caller to its target (the serving agent has left)."""
        if not told:
            fx.items.append(
                ToCaller(
                    call.call_id,
                    "transferred",
                    now,
                    site_id=site,
                    agent_code=target.agent_code,
                    skill_group=target.skill_group,
                )
            )
        call.agent_code = ""
        if target.ivr:
            self._start_ivr(call, now, fx)
        elif site != self.site_id:
            call.state = CallState.QUEUED
            offer = self._start_offer(
                call, site, "", now, fx, purpose="transfer-blind", agent_code=target.agent_code,
                skill_group=target.skill_group, from_agent_code=code,
            )  # fmt: skip
            if offer is None:
                self._enqueue(call, call.skill_group, now, fx, reason="transfer-failed")
        elif target.agent_code:
            self.acd.agent_unavailable(target.agent_code)
            call.purpose, call.from_agent_code = "transfer-blind", code
            self._ring(call, target.agent_code, now, fx)
            call.purpose = ""
        else:
            self._enqueue(call, target.skill_group, now, fx, reason="transfer")

    def _consult(
        self, call: Call, code: str, target: TransferTarget, site: str, *, now: float, fx: _Effects
    ) -> None:
        if call.state == CallState.TALKING:
            self._set_agent(code, fsm.Hold(), now, fx)
            call.state = CallState.HELD
            fx.items.append(ToCaller(call.call_id, "held", now))
        desc = target.describe(site)
        fx.journal(
            call, EventKind.TRANSFERRED, now, agent_code=code, data=(("kind", "consult"), ("to", desc))
        )
        if site != self.site_id:
            offer_id = self._start_offer(
                call, site, "", now, fx, purpose="transfer-consult", agent_code=target.agent_code,
                skill_group=target.skill_group, from_agent_code=code,
            )  # fmt: skip
            assert offer_id is not None  # a free tie channel was checked before anything changed
            call.consult = Consult(target.agent_code, site, offer_id=offer_id)
            return
        other = target.agent_code or self.acd.take_ready_agent(target.skill_group)
        assert other is not None  # checked by _resolve
        self.acd.agent_unavailable(other)
        call.consult = Consult(other, self.site_id)
        self.agents[other] = fsm.transition(self.agents[other], fsm.Offer(call.call_id), now)
        fx.journal(call, EventKind.TRANSFERRED, now, agent_code=other, data=(("stage", "consult-ringing"),))
        fx.items.append(self._state_event(other, now))
        fx.items.append(
            ToAgent(
                other, "offered", now, call_id=call.call_id, ani=call.ani, dnis=call.dnis,
                skill_group=call.skill_group, entry_site_id=call.entry_site_id,
                attached=tuple(sorted(call.attached.items())), customer=call.customer,
                ring_timeout_s=self.site.ring_timeout_s, waited_s=now - call.arrived_at,
                purpose="transfer-consult", from_agent_code=code,
            )
        )  # fmt: skip
        fx.items.append(self._consult_event(call, "consult-ringing", now))
        self._arm(now + self.site.ring_timeout_s, "consult", call.call_id, other)

    def _consult_event(self, call: Call, stage: str, now: float, reason: str = "") -> ToAgent:
        c = call.consult
        assert c is not None
        return ToAgent(
            call.agent_code, "transfer", now, call_id=call.call_id, stage=stage,
            other_agent_code=c.agent_code, site_id=c.site_id, reason=reason,
        )  # fmt: skip

    def complete_transfer(self, now: float, code: str, call_id: str) -> list[Effect]:
        call = self._consulting(code, call_id, talking=True)
        fx = _Effects(self.site_id, self.journaling)
        self._hand_over(call, code, now, fx)
        self._dispatch(now, fx)
        return fx.items

    def _hand_over(self, call: Call, code: str, now: float, fx: _Effects) -> None:
        """The consulted agent keeps the caller; the serving agent leaves."""
        c = call.consult
        assert c is not None
        fx.journal(
            call,
            EventKind.TRANSFERRED,
            now,
            agent_code=code,
            data=(("stage", "completed"), ("to", c.agent_code)),
        )
        fx.items.append(self._consult_event(call, "completed", now))
        if call.state == CallState.HELD:
            self._set_agent(code, fsm.Retrieve(), now, fx)
        self._end_agent_leg(call, now, fx, "transferred")
        call.consult = None
        call.state = CallState.TALKING
        call.agent_code = c.agent_code
        if c.offer_id:
            call.remote = RemoteLeg(c.site_id, c.offer_id, "", state="talking", agent_code=c.agent_code)
            self.served_elsewhere += 1
        fx.items.append(
            ToCaller(call.call_id, "transferred", now, site_id=c.site_id, agent_code=c.agent_code)
        )
        fx.items.append(ToCaller(call.call_id, "connected", now, site_id=c.site_id, agent_code=c.agent_code))

    def conference(self, now: float, code: str, call_id: str) -> list[Effect]:
        call = self._consulting(code, call_id, talking=True)
        c = call.consult
        assert c is not None
        if c.conference:
            raise FailedPrecondition("already-conferenced", "the caller is already in the conference")
        fx = _Effects(self.site_id, self.journaling)
        c.conference = True
        self._set_agent(code, fsm.Retrieve(), now, fx)
        call.state = CallState.TALKING
        fx.journal(
            call,
            EventKind.TRANSFERRED,
            now,
            agent_code=code,
            data=(("stage", "conferenced"), ("with", c.agent_code)),
        )
        fx.items.append(ToCaller(call.call_id, "retrieved", now))
        fx.items.append(self._consult_event(call, "conferenced", now))
        return fx.items

    def cancel_transfer(self, now: float, code: str, call_id: str) -> list[Effect]:
        call = self._consulting(code, call_id, talking=False)
        fx = _Effects(self.site_id, self.journaling)
        fx.journal(call, EventKind.TRANSFERRED, now, agent_code=code, data=(("stage", "cancelled"),))
        self._drop_consult(call, now, fx, "consult-cancelled", "cancelled")
        self._dispatch(now, fx)
        return fx.items

    def _consulting(self, code: str, call_id: str, *, talking: bool) -> Call:
        call = self._serving_call(code, call_id)
        if call.consult is None:
            raise FailedPrecondition("no-consult", f"call {call_id} has no consultation in progress")
        if talking and call.consult.state != "talking":
            raise FailedPrecondition("consult-not-connected", "the consulted agent has not answered yet")
        return call

    def _drop_consult(self, call: Call, now: float, fx: _Effects, reason: str, stage: str) -> None:
        """End the consultation leg and give the caller back to the serving agent."""
        c = call.consult
        assert c is not None
        fx.items.append(self._consult_event(call, stage, now, reason))
        call.consult = None
        if c.offer_id:
            fx.items.append(LegToTarget(c.offer_id, "end", reason))
            self.ties[c.site_id].release()
            self._legs_out.pop(c.offer_id, None)
        else:
            self._release_consulted(call.call_id, c, now, fx, reason)
        if call.state == CallState.HELD:
            self._set_agent(call.agent_code, fsm.Retrieve(), now, fx)
            call.state = CallState.TALKING
            fx.items.append(ToCaller(call.call_id, "retrieved", now))

    def _release_consulted(self, call_id: str, c: Consult, now: float, fx: _Effects, reason: str) -> None:
        other = self.agents[c.agent_code]
        if other.state == AgentState.RINGING:
            fx.items.append(ToAgent(other.code, "withdrawn", now, call_id=call_id, reason=reason))
            self._set_agent(other.code, fsm.OfferWithdrawn(), now, fx)
        elif other.state in (AgentState.TALKING, AgentState.HELD):
            wrap = self.site.wrap_up_s
            fx.items.append(ToAgent(other.code, "ended", now, call_id=call_id, reason=reason, wrap_up_s=wrap))
            self._set_agent(other.code, fsm.CallEnded(wrap), now, fx)

    # The consulted agent, when it is at this site --------------------------------------------

    def _consult_here(self, code: str, call_id: str) -> Call | None:
        call = self.calls.get(call_id)
        if (
            call is not None
            and call.consult is not None
            and not call.consult.offer_id
            and call.consult.agent_code == code
        ):
            return call
        return None

    def answer(self, now: float, code: str, call_id: str) -> list[Effect]:
        call = self._consult_here(code, call_id)
        if call is None:
            return super().answer(now, code, call_id)
        c = call.consult
        assert c is not None
        if c.state != "ringing":
            raise FailedPrecondition("call-not-ringing", f"call {call_id} is not ringing at {code}")
        fx = _Effects(self.site_id, self.journaling)
        c.state = "talking"
        self._set_agent(code, fsm.Answer(), now, fx)
        fx.journal(call, EventKind.TRANSFERRED, now, agent_code=code, data=(("stage", "consult-connected"),))
        fx.items.append(ToAgent(code, "connected", now, call_id=call_id))
        fx.items.append(self._consult_event(call, "consult-connected", now))
        return fx.items

    def agent_hang_up(self, now: float, code: str, call_id: str) -> list[Effect]:
        consulted = self._consult_here(code, call_id)
        fx = _Effects(self.site_id, self.journaling)
        if consulted is not None:
            c = consulted.consult
            assert c is not None
            if c.state != "talking":
                raise FailedPrecondition("call-not-connected", f"call {call_id} is not connected at {code}")
            fx.journal(consulted, EventKind.TRANSFERRED, now, agent_code=code, data=(("stage", "left"),))
            self._drop_consult(consulted, now, fx, "consulted-agent-left", "left")
            return fx.items
        call = self.calls.get(call_id)
        if (
            call is not None
            and call.consult is not None
            and call.agent_code == code
            and call.consult.state == "talking"
        ):
            # Hanging up while the consulted agent talks (or in a conference) hands the caller over.
            self._hand_over(call, code, now, fx)
            self._dispatch(now, fx)
            return fx.items
        if call is not None and call.consult is not None and call.agent_code == code:
            raise FailedPrecondition(
                "consult-in-progress", "the consulted agent is ringing: cancel the consultation first"
            )
        return super().agent_hang_up(now, code, call_id)

    def hold(self, now: float, code: str, call_id: str, hold: bool) -> list[Effect]:
        call = self.calls.get(call_id)
        if call is not None and call.consult is not None:
            raise FailedPrecondition(
                "consult-in-progress", "the caller's hold is managed by the consultation"
            )
        return super().hold(now, code, call_id, hold)

    def _on_deadline(self, kind: str, subject: str, token: str, when: float, fx: _Effects) -> None:
        if kind == "consult":
            call = self.calls.get(subject)
            c = call.consult if call is not None else None
            if (
                call is not None
                and c is not None
                and c.state == "ringing"
                and c.agent_code == token
                and not c.offer_id
            ):
                self.counters.ring_no_answer += 1
                fx.items.append(self._consult_event(call, "consult-failed", when, "no-answer"))
                call.consult = None
                fx.items.append(ToAgent(token, "withdrawn", when, call_id=subject, reason="no-answer"))
                self._set_agent(token, fsm.RingTimeout(), when, fx)
            return
        if kind == "offer" and self._consult_leg(subject) is not None:
            found = self._consult_leg(subject)
            assert found is not None
            if (
                found.consult is not None
                and found.consult.state == "ringing"
                and not found.consult.agent_code
            ):
                self._drop_consult(found, when, fx, "offer-timeout", "consult-failed")
            return
        super()._on_deadline(kind, subject, token, when, fx)

    # The consulted agent, when it is at another site ----------------------------------------

    def _consult_leg(self, offer_id: str) -> Call | None:
        call = self.calls.get(self._legs_out.get(offer_id, ""))
        if call is not None and call.consult is not None and call.consult.offer_id == offer_id:
            return call
        return None

    def remote_reserved(self, now: float, offer_id: str, agent_code: str) -> list[Effect]:
        call = self._consult_leg(offer_id)
        if call is None:
            return super().remote_reserved(now, offer_id, agent_code)
        c = call.consult
        assert c is not None
        c.agent_code = agent_code
        return [self._consult_event(call, "consult-ringing", now)]

    def remote_answer_asked(self, now: float, offer_id: str) -> list[Effect]:
        call = self._consult_leg(offer_id)
        if call is None:
            return super().remote_answer_asked(now, offer_id)
        c = call.consult
        assert c is not None
        c.state = "talking"
        return [LegToTarget(offer_id, "confirm"), self._consult_event(call, "consult-connected", now)]

    def _consult_leg_over(self, now: float, offer_id: str, reason: str, stage: str) -> list[Effect] | None:
        call = self._consult_leg(offer_id)
        if call is None:
            return None
        fx = _Effects(self.site_id, self.journaling)
        c = call.consult
        assert c is not None
        fx.journal(
            call,
            EventKind.TRANSFERRED,
            now,
            agent_code=c.agent_code,
            data=(("stage", stage), ("reason", reason)),
        )
        self._drop_consult(call, now, fx, reason, stage)
        return fx.items

    def remote_refused(self, now: float, offer_id: str, reason: str) -> list[Effect]:
        over = self._consult_leg_over(now, offer_id, reason, "consult-failed")
        return over if over is not None else super().remote_refused(now, offer_id, reason)

    def remote_returned(self, now: float, offer_id: str, reason: str) -> list[Effect]:
        over = self._consult_leg_over(now, offer_id, reason, "consult-failed")
        return over if over is not None else super().remote_returned(now, offer_id, reason)

    def remote_lost(self, now: float, offer_id: str, reason: str = "target-lost") -> list[Effect]:
        over = self._consult_leg_over(now, offer_id, reason, "consult-failed")
        return over if over is not None else super().remote_lost(now, offer_id, reason)

    def remote_hung_up(self, now: float, offer_id: str) -> list[Effect]:
        over = self._consult_leg_over(now, offer_id, "consulted-agent-left", "left")
        return over if over is not None else super().remote_hung_up(now, offer_id)

    def remote_held(self, now: float, offer_id: str, held: bool) -> list[Effect]:
        if self._consult_leg(offer_id) is not None:
            return []  # the consulted agent's hold does not change the caller's
        return super().remote_held(now, offer_id, held)

    # The caller leaves; the site stops ------------------------------------------------------

    def caller_hang_up(self, now: float, call_id: str, reason: str = "caller-hung-up") -> list[Effect]:
        call = self._live_call(call_id)
        if call.consult is None:
            return super().caller_hang_up(now, call_id, reason)
        fx = _Effects(self.site_id, self.journaling)
        c = call.consult
        call.consult = None
        if c.offer_id:
            fx.items.append(LegToTarget(c.offer_id, "end", reason))
            self.ties[c.site_id].release()
            self._legs_out.pop(c.offer_id, None)
        else:
            self._release_consulted(call_id, c, now, fx, reason)
        return fx.items + super().caller_hang_up(now, call_id, reason)

    def shutdown(self, now: float) -> list[Effect]:
        fx = _Effects(self.site_id, self.journaling)
        for call in list(self.calls.values()):
            c = call.consult
            if c is not None:
                call.consult = None
                if c.offer_id:
                    fx.items.append(LegToTarget(c.offer_id, "end", "site-stopping"))
                    self.ties[c.site_id].release()
                    self._legs_out.pop(c.offer_id, None)
                else:
                    self._release_consulted(call.call_id, c, now, fx, "site-shutdown")
        return fx.items + super().shutdown(now)


def _history(old: str, step: str) -> str:
    joined = f"{old};{step}" if old else step
    return joined[-MAX_HISTORY:]
