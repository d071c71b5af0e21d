"""The trunk side (SPEC F2): a call arrives on a trunk channel, or is blocked when none is free
(call loss, counted); it holds the channel until it ends, whatever happened in between, and its
end is recorded once."""

from __future__ import annotations

from collections.abc import Callable

from site_node.callcontrol.calls import CallBook
from site_node.callcontrol.counters import SiteCounters
from site_node.callcontrol.domain import Call, CallState, Outcome, ToCaller
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.limits import ANI_CHARS, check_attached
from site_node.callcontrol.resources import Resources
from vcc.call_events import EventKind
from vcc.errors import AlreadyExists, InvalidArgument, NotFound


class TrunkSide:
    def __init__(
        self,
        site_id: str,
        service_number: str,
        calls: CallBook,
        resources: Resources,
        counters: SiteCounters,
        new_call_id: Callable[[], str],
        catalog_number: Callable[[str], bool] = lambda _n: False,
    ) -> None:
        self.site_id = site_id
        self.service_number = service_number
        # Whether the service catalog offers a number here (一号通: many numbers, one platform).
        self._catalog_number = catalog_number
        self._calls = calls
        self._resources = resources
        self._counters = counters
        self._new_call_id = new_call_id

    def arrive(
        self,
        now: float,
        fx: Effects,
        *,
        idempotency_key: str,
        ani: str,
        dnis: str,
        trunk_group: str,
        call_id: str,
        attached: dict[str, str],
    ) -> Call:
        """Validate the offer and take a trunk channel. The call returned is ENDED when blocked."""
        self._validate(
            key=idempotency_key,
            ani=ani,
            dnis=dnis,
            trunk_group=trunk_group,
            call_id=call_id,
            attached=attached,
        )
        if self._calls.key_used(idempotency_key):
            raise AlreadyExists("offer-key-reused", f"an offer with key {idempotency_key!r} was already made")
        if call_id and self._calls.get(call_id) is not None:
            raise AlreadyExists("call-exists", f"call {call_id} is already at site {self.site_id}")
        call_id = call_id or self._new_call_id()
        self._counters.offered += 1
        pool = self._resources.take_trunk(trunk_group)
        call = Call(call_id, idempotency_key, ani, dnis, self.site_id, trunk_group or "", now, attached)
        self._calls.resume_seq(call)
        if pool is None:
            self._counters.blocked += 1
            call.state = CallState.ENDED
            call.outcome = Outcome.BLOCKED
            fx.journal(
                call, EventKind.BLOCKED, now, ani=ani, dnis=dnis, data=(("trunk_group", trunk_group or "*"),)
            )
            fx.journal(
                call, EventKind.ENDED, now, outcome=Outcome.BLOCKED, data=(("reason", "no-trunk-channel"),)
            )
            fx.add(ToCaller(call_id, "ended", now, outcome=Outcome.BLOCKED, reason="no-trunk-channel"))
            self._calls.ended(call, Outcome.BLOCKED)
            return call
        call.trunk_group = pool.id
        self._calls.admit(call)
        fx.journal(call, EventKind.ARRIVED, now, ani=ani, dnis=dnis, data=(("trunk_group", pool.id),))
        fx.add(ToCaller(call_id, "accepted", now, site_id=self.site_id, trunk_group=pool.id))
        return call

    def _validate(
        self, *, key: str, ani: str, dnis: str, trunk_group: str, call_id: str, attached: dict[str, str]
    ) -> None:
        if not key or len(key) > 128:
            raise InvalidArgument("bad-idempotency-key", "idempotency_key: required, at most 128 characters")
        if not ani or len(ani) > 32 or not set(ani) <= ANI_CHARS:
            raise InvalidArgument("bad-ani", "ani: 1 to 32 characters of 0-9 + * #")
        if dnis != self.service_number and not self._catalog_number(dnis):
            raise InvalidArgument("unknown-dnis", f"dnis: {dnis!r} is not a service number of this province")
        if trunk_group and trunk_group not in self._resources.trunks:
            raise NotFound(
                "unknown-trunk-group", f"trunk_group: no trunk group {trunk_group!r} at {self.site_id}"
            )
        if call_id and (len(call_id) > 64 or not call_id.isascii()):
            raise InvalidArgument("bad-call-id", "call_id: at most 64 ASCII characters")
        check_attached(attached)

    def end(self, call: Call, outcome: Outcome, reason: str, now: float, fx: Effects) -> None:
        """The call is over: its trunk channel is free, its end journaled, the caller told."""
        call.state = CallState.ENDED
        call.outcome = outcome
        # Answers are counted when they happen.
        if outcome == Outcome.ABANDONED:
            self._counters.abandoned += 1
        elif outcome == Outcome.FAILED:
            self._counters.failed += 1
        self._resources.trunks[call.trunk_group].release()
        fx.journal(
            call,
            EventKind.ENDED,
            now,
            outcome=outcome,
            agent_code=call.agent_code,
            skill_group=call.skill_group,
            data=(("reason", reason),),
        )
        fx.add(ToCaller(call.call_id, "ended", now, outcome=outcome, reason=reason))
        self._calls.ended(call, outcome)
