"""The call control's deadlines as they fall due: a ring not answered, an offer to another city
not taken. The adapter asks `next_deadline()` and calls `tick(now)` then; time is an argument."""

from __future__ import annotations

from collections.abc import Callable

from site_node.callcontrol.domain import CallState, Effect
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.parts import Parts


class Deadlines:
    def __init__(self, parts: Parts, fx: Callable[[], Effects]) -> None:
        self._p = parts
        self._fx = fx
        parts.timers.on("ring", self.ring_due)
        parts.timers.on("offer", self.offer_due)

    def next_deadline(self) -> float | None:
        return self._p.timers.next_deadline()

    def tick(self, now: float) -> list[Effect]:
        fx = self._fx()
        self._p.timers.fire_due(now, fx)
        self._p.dialler.dial(now, fx)  # first: a caller on virtual hold whose turn came
        self._p.queues.dispatch(now, fx)
        self._p.dialler.dial(now, fx)
        return fx.items

    def ring_due(self, call_id: str, code: str, now: float, fx: Effects) -> None:
        """The ring of `call_id` at agent `code` was not answered in time (or the phone refused)."""
        call = self._p.book.get(call_id)
        if call is None:
            return
        if call.guest_of:
            self._p.guests.ring_expired(call, code, now, fx)
        elif call.state == CallState.RINGING and call.agent_code == code:
            self._p.ringing.no_answer(call, code, now, fx)
            self._p.queues.enqueue(call, call.skill_group, now, fx, reason="ring-no-answer")

    def offer_due(self, offer_id: str, _token: str, now: float, fx: Effects) -> None:
        """Another city did not take our offer in time: a consultation's, or a caller's leg."""
        consulting = self._p.consults.by_offer(offer_id)
        if consulting is not None:
            self._p.consults.offer_expired(consulting, now, fx)
        else:
            self._p.legs.offer_expired(offer_id, now, fx)
