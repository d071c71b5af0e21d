"""When one of our waiting callers must leave for another city, and where to (SPEC F13, F15).

The site's own rules say when: in overflow mode once it waited `overflow_after_s` (at once when
nobody of its group is staffed here), in pooled mode at once. Then it is offered to the first
fresh target central pushed (`pushed_targets.py`), reporting the decision after, or central is
asked (AskRoute) and its answer acted on; in pooled mode central may also pull our longest-
waiting call for a free agent elsewhere. The leg itself is `legs_out.py`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from site_node.callcontrol.calls import CallBook
from site_node.callcontrol.domain import AskRoute, Call, CallState, ReportRoute
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.legs_out import RemoteLegs
from site_node.callcontrol.pushed_targets import PushedTargets
from site_node.callcontrol.queues import Queues
from site_node.callcontrol.timers import Timers
from vcc.config import RoutingConfig


class Leaving:
    def __init__(
        self,
        site_id: str,
        routing: RoutingConfig,
        calls: CallBook,
        queues: Queues,
        legs: RemoteLegs,
        timers: Timers,
        staffed: Mapping[str, int],
        new_decision_id: Callable[[], str],
    ) -> None:
        self.site_id = site_id
        self.routing = routing
        self._calls = calls
        self._queues = queues
        self._legs = legs
        self._timers = timers
        self._staffed = staffed
        self._new_decision_id = new_decision_id
        # Central's ready targets: a due call is offered at once to a fresh one (pushed_targets.py).
        self.targets = PushedTargets(routing.max_state_age_s)
        queues.on_waiting(self._waiting)
        timers.on("route", self._route_due)

    # When to ask central, and acting on its answer ------------------------------------------

    def _waiting(self, call: Call, now: float, fx: Effects) -> None:
        mode = self.routing.mode
        if mode == "isolated":
            return
        if mode == "pooled" or self._staffed[call.skill_group] == 0:
            self._timers.arm(now, "route", call.call_id)
        else:
            self._timers.arm(max(now, call.arrived_at + self.routing.overflow_after_s), "route", call.call_id)

    def _route_due(self, call_id: str, _token: str, now: float, fx: Effects) -> None:
        call = self._calls.get(call_id)
        if call is None or call.state != CallState.QUEUED or call.remote or call.route_pending:
            return
        if self._queues.acd.queued(call_id) is None:
            return  # parked for its screen pop; it asks once it joins the queue
        picked = self.targets.pick(now, call.skill_group, call.excluded)
        if picked is not None:
            target, epoch = picked
            decision_id = self._new_decision_id()
            waited = now - call.arrived_at
            offered = self._legs.start_offer(call, target, decision_id, now, fx, purpose=self.routing.mode)
            if offered is not None:
                fx.add(
                    ReportRoute(
                        decision_id, call_id, call.skill_group, target, epoch, waited, now, call.priority
                    )
                )
            return
        call.route_pending = True
        fx.add(
            AskRoute(
                call_id, call.skill_group, call.priority, now - call.arrived_at, tuple(sorted(call.excluded))
            )
        )

    def route_decided(
        self, now: float, call_id: str, target_site_id: str | None, decision_id: str, fx: Effects
    ) -> bool:
        """Central's answer to AskRoute (None or this site: stay; ask again later). True when
        the call was offered to the site central chose."""
        call = self._calls.get(call_id)
        if call is None:
            return False
        call.route_pending = False  # answered, whatever happened to the call meanwhile
        if call.state != CallState.QUEUED or call.remote is not None:
            # It rang here meanwhile (or is offered elsewhere): if that fails, it is queued again
            # and asks again then.
            return False
        if not target_site_id or target_site_id == self.site_id:
            call.excluded.clear()
            self._timers.arm(now + self.routing.reroute_interval_s, "route", call_id)
            return False
        self._legs.start_offer(call, target_site_id, decision_id, now, fx, purpose=self.routing.mode)
        return True

    def pull_call(self, now: float, skill_group: str, to_site_id: str, decision_id: str, fx: Effects) -> None:
        """Pooled mode: an agent is free at `to_site_id`: offer it our longest-waiting call."""
        acd = self._queues.acd
        if skill_group not in acd.skill_groups or to_site_id == self.site_id:
            return
        call_id = acd.head(skill_group)
        if call_id is not None:
            self._legs.start_offer(
                self._calls.live[call_id], to_site_id, decision_id, now, fx, purpose="pooled"
            )
