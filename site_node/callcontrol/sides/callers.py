"""What the trunk brings: a call arriving, the caller's digits, the answers the caller's call
waits for (the screen pop, a flow's look-up, prompts heard), the caller hanging up or its line
failing, and the callees of our dial-outs."""

from __future__ import annotations

from collections.abc import Callable

from site_node.callcontrol.domain import CallState, CustomerInfo, Effect, Outcome
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.limits import check_digits
from site_node.callcontrol.parts import Parts
from vcc.call_events import EventKind
from vcc.errors import FailedPrecondition

# A callee who answered our callback is served before the callers waiting in its group.
CALLBACK_PRIORITY = 9


class CallerSide:
    def __init__(self, parts: Parts, fx: Callable[[], Effects]) -> None:
        self._p = parts
        self._fx = fx

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
        p = self._p
        if dial_id:
            p.dialler.check_answer(dial_id)
        fx = self._fx()
        call = p.trunk.arrive(
            now, fx, idempotency_key=idempotency_key, ani=ani, dnis=dnis, trunk_group=trunk_group,
            call_id=call_id, attached=dict(attached or {}),
        )  # fmt: skip
        if call.state != CallState.ENDED:
            p.screen_pop.fetch(call, now, fx)
            if dial_id:
                agent = p.dialler.answered_by(dial_id)  # preview: the agent who accepted it
                group = p.dialler.answered(call, dial_id, now, fx)
                call.priority, call.skill_group = CALLBACK_PRIORITY, group
                if agent:
                    p.ringing.ring(call, agent, now, fx)
                else:
                    p.queues.enqueue(call, group, now, fx, reason="callback")
            else:
                p.ivr.start(call, now, fx)
            p.queues.dispatch(now, fx)
        return call.call_id, fx.items

    def dial_failed(self, now: float, dial_id: str, outcome: str) -> list[Effect]:
        """The trunk could not reach a dialled callee (no-answer, busy, failed): retried later."""
        fx = self._fx()
        self._p.dialler.failed(dial_id, outcome, now, fx)
        return fx.items

    def caller_digits(self, now: float, call_id: str, digits: str) -> list[Effect]:
        call = self._p.book.call(call_id)
        check_digits(digits)
        fx = self._fx()
        if self._p.flows.queue_key(call, digits, now, fx):  # a flow queue's virtual hold key
            self._p.dialler.dial(now, fx)
            self._p.queues.dispatch(now, fx)
            return fx.items
        if call.state != CallState.IVR:
            # Digits outside the menu are heard by nobody; record them for the history.
            fx.journal(call, EventKind.DIGITS, now, data=(("digits", digits), ("ignored", "true")))
            return fx.items
        self._p.ivr.digits(call, digits, now, fx)
        self._p.queues.dispatch(now, fx)
        return fx.items

    def ivr_looked_up(
        self, now: float, call_id: str, request: int, fields: dict[str, str] | None
    ) -> list[Effect]:
        """Central answered a flow's look-up (None: it failed); a late answer takes the timeout path."""
        fx = self._fx()
        self._p.flows.looked_up(call_id, request, fields, now, fx)
        self._p.queues.dispatch(now, fx)
        return fx.items

    def prompts_played(self, now: float, call_id: str) -> list[Effect]:
        """The caller heard the flow's prompts to the end: its time to press keys counts from now."""
        self._p.flows.played(call_id, now)
        return []

    def customer_found(self, now: float, call_id: str, customer: CustomerInfo | None) -> list[Effect]:
        """The look-up answered (None: no record, or central unreachable)."""
        fx = self._fx()
        self._p.screen_pop.resolved(call_id, customer, now, fx)
        self._p.queues.dispatch(now, fx)
        return fx.items

    def caller_hang_up(self, now: float, call_id: str, reason: str = "caller-hung-up") -> list[Effect]:
        p = self._p
        call = p.book.call(call_id)
        if call.guest_of:
            raise FailedPrecondition("guest-call", f"call {call_id} is served here for {call.guest_of}")
        fx = self._fx()
        if call.consult is not None:
            p.consults.end_leg(call, now, fx, reason)
        if call.remote is not None:
            p.legs.caller_hung_up(call, now, fx, reason)
        else:
            p.connected.caller_hang_up(call, now, fx, reason)
        p.queues.dispatch(now, fx)
        return fx.items

    def caller_line_failed(self, now: float, call_id: str, reason: str) -> list[Effect]:
        """The caller's line broke on our side (its media engine died): the call ends as a
        hang-up does, failed rather than abandoned when nobody had answered it."""
        call = self._p.book.call(call_id)
        if call.guest_of or call.remote is not None or call.consult is not None:
            return self.caller_hang_up(now, call_id, reason)
        fx = self._fx()
        self._p.connected.caller_hang_up(call, now, fx, reason, unanswered=Outcome.FAILED)
        self._p.queues.dispatch(now, fx)
        return fx.items
