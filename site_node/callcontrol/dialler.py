"""Dialling callbacks out through the trunk (F20), progressive: a due callback is dialled when an
agent of its skill group is ready (beyond those already awaiting a dialled callee) and nobody
waits in the group's queue (callers who are waiting come first). The callee who answers is
offered back on the trunk with the dial's id and served first in the group; one who does not is
retried later, up to the list's attempts. Each step is in the record of the call that asked."""

from __future__ import annotations

from collections import Counter

from routing.acd import Acd
from site_node.callcontrol.callbacks import Callback, CallbackError, CallbackList
from site_node.callcontrol.domain import Call, DialOut
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.timers import Timers
from vcc.call_events import EventKind
from vcc.errors import InvalidArgument, NotFound

# A gateway that never says how a dial went: counted as not answered after this long.
NO_ANSWER_S = 60.0
DIAL_OUTCOMES = frozenset({"no-answer", "busy", "failed"})


class Dialler:
    def __init__(self, site_groups: frozenset[str], acd: Acd, timers: Timers) -> None:
        self.callbacks = CallbackList()
        self._groups = site_groups
        self._acd = acd
        self._timers = timers
        # callback id -> the call that asked (its record gets every attempt, long after its end).
        self._origins: dict[str, Call] = {}
        # dial id -> callback id, while the gateway dials.
        self.dialling: dict[str, str] = {}
        # Callbacks not closed yet: `dial` runs after every tick, and is free while this is empty.
        self._open: set[str] = set()
        timers.on("dial", self._due)

    def asked(self, callback: Callback, call: Call, fx: Effects) -> None:
        self._origins.setdefault(callback.callback_id, call)
        self._open.add(callback.callback_id)
        self._keep(callback.callback_id, fx)
        self._timers.arm(callback.next_attempt_at, "dial", callback.callback_id)

    def restore(self, callback: Callback, call: Call, now: float) -> None:
        """A callback kept before the site restarted, its asking call's journal numbers continued.
        One being dialled stays so (the gateway may still offer its callee) with a new no-answer
        deadline from now."""
        self.callbacks.restore(callback)
        self._origins[callback.callback_id] = call
        self._open.add(callback.callback_id)
        if callback.state == "dialling":
            dial_id = f"{callback.callback_id}-{len(callback.attempts)}"
            self.dialling[dial_id] = callback.callback_id
            self._timers.arm(now + NO_ANSWER_S, "dial", callback.callback_id, dial_id)
        else:
            self._timers.arm(max(callback.next_attempt_at, now), "dial", callback.callback_id)

    def dial(self, now: float, fx: Effects) -> None:
        """Dial what is due for the agents ready now (call after agents may have become ready)."""
        if not self._open:
            return
        awaiting = Counter(self.callbacks.get(c).skill_group for c in self.dialling.values())
        for callback in self.callbacks.due(now):
            group = callback.skill_group
            if group not in self._groups or self._acd.waiting(group) > 0:
                continue
            if self._acd.ready_count(group) - awaiting[group] <= 0:
                continue
            started = self.callbacks.start(callback.callback_id, "", now)
            attempt = len(started.attempts)
            dial_id = f"{callback.callback_id}-{attempt}"
            self.dialling[dial_id] = callback.callback_id
            awaiting[group] += 1
            self._journal(callback.callback_id, "dialling", now, fx, attempt=str(attempt), dial_id=dial_id)
            self._keep(callback.callback_id, fx)
            fx.add(DialOut(dial_id, callback.number, group, callback.callback_id, attempt))
            self._timers.arm(now + NO_ANSWER_S, "dial", callback.callback_id, dial_id)

    def check_answer(self, dial_id: str) -> None:
        """Raises for a dial that is not being dialled (before anything changes)."""
        if dial_id not in self.dialling:
            raise NotFound("unknown-dial", f"dial_id: {dial_id!r} is not being dialled")

    def answered(self, call: Call, dial_id: str, now: float, fx: Effects) -> str:
        """The callee answered: the callback is done; the skill group to serve the call in."""
        callback_id = self.dialling.pop(dial_id)
        done = self.callbacks.finish(callback_id, "answered", now)
        self._journal(callback_id, "answered", now, fx, dial_id=dial_id, call_id=call.call_id)
        self._closed(callback_id, fx)
        fx.journal(
            call, EventKind.CALLBACK, now,
            data=(("callback_id", callback_id), ("stage", "callee-answered"),
                  ("origin_call_id", done.call_id)),
        )  # fmt: skip
        return done.skill_group

    def failed(self, dial_id: str, outcome: str, now: float, fx: Effects) -> None:
        if outcome not in DIAL_OUTCOMES:
            raise InvalidArgument("bad-dial-outcome", f"outcome: one of {', '.join(sorted(DIAL_OUTCOMES))}")
        callback_id = self.dialling.pop(dial_id, None)
        if callback_id is None:
            raise NotFound("unknown-dial", f"dial_id: {dial_id!r} is not being dialled")
        self._finish(callback_id, dial_id, outcome, now, fx)

    def _finish(self, callback_id: str, dial_id: str, outcome: str, now: float, fx: Effects) -> None:
        try:
            after = self.callbacks.finish(callback_id, outcome, now)  # type: ignore[arg-type]
        except CallbackError:
            return
        self._journal(callback_id, outcome, now, fx, dial_id=dial_id, state=after.state)
        if after.state == "pending":
            self._keep(callback_id, fx)
            self._timers.arm(after.next_attempt_at, "dial", callback_id)
        else:
            self._closed(callback_id, fx)

    def _closed(self, callback_id: str, fx: Effects) -> None:
        """A callback over (answered, or out of attempts): its caller's call is let go."""
        self._open.discard(callback_id)
        call = self._origins.pop(callback_id, None)
        fx.keep("callback", callback_id, call.call_id if call else "", None)

    def _keep(self, callback_id: str, fx: Effects) -> None:
        call = self._origins.get(callback_id)
        if call is not None:
            fx.keep("callback", callback_id, call.call_id, self.callbacks.get(callback_id))

    def _due(self, callback_id: str, dial_id: str, now: float, fx: Effects) -> None:
        if dial_id and self.dialling.get(dial_id) == callback_id:
            del self.dialling[dial_id]
            self._finish(callback_id, dial_id, "no-answer", now, fx)
        self.dial(now, fx)

    def _journal(self, callback_id: str, stage: str, now: float, fx: Effects, **data: str) -> None:
        call = self._origins.get(callback_id)
        if call is not None:
            fx.journal(
                call, EventKind.CALLBACK, now,
                data=(("callback_id", callback_id), ("stage", stage), *sorted(data.items())),
            )  # fmt: skip
