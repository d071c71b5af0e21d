"""Our callers served in other cities (SPEC F13, F15), the origin's side of a remote leg.

When a waiting call must leave, and where to, is `leaving.py`'s. The call offered to another site
(overflow, pooled, a transfer) leaves the local queue while
the offer is open, keeps its trunk channel and takes a tie-trunk channel; if the target refuses,
times out, dies or gives it back, it re-enters the queue with its original arrival time. The
origin alone tells the caller what happens, so a remote answer needs its confirmation: a call is
never connected twice.
"""

from __future__ import annotations

from collections.abc import Callable

from site_node.callcontrol.calls import CallBook
from site_node.callcontrol.counters import SiteCounters
from site_node.callcontrol.domain import (
    Call,
    CallState,
    Effect,
    LegToTarget,
    OfferRemote,
    Outcome,
    RemoteLeg,
    ToCaller,
)
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.queues import Queues
from site_node.callcontrol.resources import Resources
from site_node.callcontrol.timers import Timers
from site_node.callcontrol.trunk import TrunkSide
from vcc.call_events import EventKind
from vcc.config import RoutingConfig


class RemoteLegs:
    def __init__(
        self,
        site_id: str,
        routing: RoutingConfig,
        calls: CallBook,
        resources: Resources,
        queues: Queues,
        trunk: TrunkSide,
        timers: Timers,
        counters: SiteCounters,
        new_offer_id: Callable[[], str],
    ) -> None:
        self.site_id = site_id
        self.routing = routing
        self._calls = calls
        self._resources = resources
        self._queues = queues
        self._trunk = trunk
        self._timers = timers
        self._counters = counters
        self._new_offer_id = new_offer_id
        # offer id -> call id, for serving legs and consultations alike.
        self.open: dict[str, str] = {}

    # Opening and closing a leg --------------------------------------------------------------

    def start_offer(
        self,
        call: Call,
        target: str,
        decision_id: str,
        now: float,
        fx: Effects,
        *,
        purpose: str,
        agent_code: str = "",
        skill_group: str = "",
        from_agent_code: str = "",
    ) -> str | None:
        """Open a remote leg for the call: its offer id, or None when no tie channel is free.

        Routing and blind transfers make it the call's serving leg (`call.remote`); a consult keeps
        it beside the serving agent (the consultation records it in `call.consult`)."""
        if not self._resources.take_tie(target):
            # No voice path to that city now.
            call.excluded.add(target)
            fx.journal(
                call, EventKind.ROUTE_FAILED, now, data=(("target", target), ("reason", "no-tie-channel"))
            )
            if purpose in ("overflow", "pooled"):
                self._timers.arm(now, "route", call.call_id)  # stays, and tries others
            return None
        # Unpredictable: an offer id is a capability on the peer path.
        offer_id = self._new_offer_id()
        self.open[offer_id] = call.call_id
        if purpose != "transfer-consult":
            self._queues.leave(call)
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
        fx.add(
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
        self._timers.arm(now + self.routing.offer_timeout_s, "offer", offer_id)
        return offer_id

    def call_of(self, offer_id: str) -> Call | None:
        return self._calls.get(self.open.get(offer_id, ""))

    def serving(self, offer_id: str) -> tuple[Call, RemoteLeg] | None:
        """The call whose serving leg this is (None for a consultation or a leg no longer open)."""
        call = self.call_of(offer_id)
        if call is None or call.remote is None or call.remote.offer_id != offer_id:
            return None
        return call, call.remote

    def close(self, call: Call) -> None:
        """The serving leg is over: its tie channel is free."""
        leg = call.remote
        if leg is None:
            return
        self._resources.release_tie(leg.target_site_id)
        self.open.pop(leg.offer_id, None)
        if leg.state in ("talking", "held"):
            self._counters.served_elsewhere -= 1
        call.remote = None
        call.agent_code = ""

    def close_consult(self, offer_id: str, target: str) -> None:
        self._resources.release_tie(target)
        self.open.pop(offer_id, None)

    def offer_expired(self, offer_id: str, now: float, fx: Effects) -> None:
        found = self.serving(offer_id)
        if found is not None and found[1].state == "offering":
            fx.add(LegToTarget(offer_id, "end", "offer-timeout"))
            self._failed(found[0], now, fx, "offer-timeout", EventKind.ROUTE_FAILED)

    def _failed(self, call: Call, now: float, fx: Effects, reason: str, kind: EventKind) -> None:
        """The leg is over without the call being finished: back to our queue, original arrival kept."""
        leg = call.remote
        assert leg is not None
        self.close(call)
        call.excluded.add(leg.target_site_id)
        fx.journal(call, kind, now, data=(("target", leg.target_site_id), ("reason", reason)))
        call.answered_at = None if kind == EventKind.ROUTE_FAILED else call.answered_at
        self._queues.enqueue(call, call.skill_group, now, fx, reason=reason)

    # What the target reports ----------------------------------------------------------------

    def reserved(self, now: float, offer_id: str, agent_code: str) -> list[Effect]:
        found = self.serving(offer_id)
        if found is None or found[1].state != "offering":
            return [LegToTarget(offer_id, "end", "offer-withdrawn")]
        call, leg = found
        leg.state = "ringing"
        leg.agent_code = agent_code
        call.state = CallState.RINGING
        call.agent_code = agent_code
        return [ToCaller(call.call_id, "ringing", now, site_id=leg.target_site_id, agent_code=agent_code)]

    def refused(self, now: float, offer_id: str, reason: str, fx: Effects) -> None:
        found = self.serving(offer_id)
        if found is not None:
            self._failed(found[0], now, fx, reason, EventKind.ROUTE_FAILED)

    def lost(self, now: float, offer_id: str, reason: str, fx: Effects) -> None:
        """The leg's stream broke (the target died or the link failed): nobody is dropped."""
        found = self.serving(offer_id)
        if found is not None:
            kind = EventKind.ROUTE_FAILED if found[1].state == "offering" else EventKind.RETURNED
            self._failed(found[0], now, fx, reason, kind)

    def returned(self, now: float, offer_id: str, reason: str, fx: Effects) -> None:
        found = self.serving(offer_id)
        if found is not None:
            self._failed(found[0], now, fx, reason, EventKind.RETURNED)

    def answer_asked(self, now: float, offer_id: str) -> list[Effect]:
        found = self.serving(offer_id)
        if found is None or found[1].state != "ringing":
            return [LegToTarget(offer_id, "end", "leg-not-current")]
        call, leg = found
        leg.state = "talking"
        call.state = CallState.TALKING
        call.answered_at = now
        self._counters.answered += 1
        self._counters.served_elsewhere += 1
        return [
            LegToTarget(offer_id, "confirm"),
            ToCaller(call.call_id, "connected", now, site_id=leg.target_site_id, agent_code=leg.agent_code),
        ]

    def held(self, now: float, offer_id: str, held: bool) -> list[Effect]:
        found = self.serving(offer_id)
        if found is None or found[1].state not in ("talking", "held"):
            return []
        call, leg = found
        leg.state = "held" if held else "talking"
        call.state = CallState.HELD if held else CallState.TALKING
        return [ToCaller(call.call_id, "held" if held else "retrieved", now)]

    def hung_up(self, now: float, offer_id: str, fx: Effects) -> None:
        found = self.serving(offer_id)
        if found is None:
            return
        call, leg = found
        agent = leg.agent_code
        self.close(call)
        call.agent_code = agent
        self._trunk.end(call, Outcome.ANSWERED, "agent-hung-up", now, fx)

    def caller_hung_up(self, call: Call, now: float, fx: Effects, reason: str) -> None:
        """Our caller hung up while another city was offered or served the call."""
        leg = call.remote
        assert leg is not None
        answered = leg.state in ("talking", "held")
        fx.add(LegToTarget(leg.offer_id, "end", reason))
        agent = leg.agent_code
        self.close(call)
        call.agent_code = agent if answered else ""
        if answered:
            fx.journal(call, EventKind.CALLER_HUNG_UP, now, agent_code=agent)
            self._trunk.end(call, Outcome.ANSWERED, reason, now, fx)
        else:
            fx.journal(call, EventKind.ABANDONED, now, skill_group=call.skill_group)
            self._trunk.end(call, Outcome.ABANDONED, reason, now, fx)

    def site_stopping(self, call: Call, fx: Effects) -> None:
        if call.remote is not None:
            fx.add(LegToTarget(call.remote.offer_id, "end", "site-stopping"))
            self.close(call)
