"""The callback list (F20), pure: callers to ring back, their attempts and outcomes; time given.

A callback comes from a caller who asked for one in the flow, who left the queue keeping their
place (virtual hold), who waited past a queue's maximum wait, or who hung up while waiting
(abandoned). One number has one open callback per skill group: asking twice keeps the earlier
place. Each attempt is recorded with its outcome; an attempt that does not reach the caller is
retried later, up to the policy's limit. Dialling (preview or progressive) is the call control's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

Reason = Literal["flow-offer", "virtual-hold", "max-wait", "abandoned"]
Outcome = Literal["answered", "no-answer", "busy", "failed", "agent-declined"]
Mode = Literal["progressive", "preview"]
MODES: frozenset[str] = frozenset({"progressive", "preview"})
State = Literal["pending", "dialling", "done", "failed", "cancelled"]
OPEN: frozenset[State] = frozenset({"pending", "dialling"})


class CallbackError(Exception):
    """A request the list cannot take; `error_id` is stable (the adapter maps it to a status)."""

    def __init__(self, error_id: str, message: str) -> None:
        super().__init__(message)
        self.error_id = error_id


@dataclass(frozen=True)
class CallbackPolicy:
    max_attempts: int = 3
    retry_after_s: float = 300.0
    # An abandoned call that waited less than this is not called back (a caller who changed
    # their mind at once does not want the phone to ring).
    min_abandoned_wait_s: float = 5.0


@dataclass(frozen=True)
class Attempt:
    at: float
    agent_code: str
    # None while the attempt is being dialled.
    outcome: Outcome | None = None
    ended_at: float | None = None


@dataclass(frozen=True)
class Callback:
    callback_id: str
    call_id: str
    number: str
    skill_group: str
    reason: Reason
    priority: int
    requested_at: float
    # The caller's place in line: when they first queued (virtual hold keeps it), else when asked.
    place_since: float
    state: State = "pending"
    attempts: tuple[Attempt, ...] = ()
    next_attempt_at: float = 0.0
    closed_at: float | None = None
    # progressive: dialled for a ready agent; preview: an agent accepts it first.
    mode: Mode = "progressive"


class CallbackList:
    def __init__(self, policy: CallbackPolicy | None = None) -> None:
        self.policy = policy or CallbackPolicy()
        self._entries: dict[str, Callback] = {}

    def request(
        self,
        callback_id: str,
        call_id: str,
        number: str,
        skill_group: str,
        now: float,
        *,
        reason: Reason,
        priority: int = 0,
        place_since: float | None = None,
        waited_s: float = 0.0,
        mode: Mode = "progressive",
    ) -> Callback | None:
        """Put a caller on the list; the open callback of that number and group when there is one;
        None for an abandoned call too short to call back, or with no number to call."""
        if not number:
            return None
        if reason == "abandoned" and waited_s < self.policy.min_abandoned_wait_s:
            return None
        place = now if place_since is None else min(place_since, now)
        existing = self.open_for(number, skill_group)
        if existing is not None:
            # Asking again keeps the better of the two places and priorities.
            merged = replace(
                existing,
                place_since=min(existing.place_since, place),
                priority=max(existing.priority, priority),
            )
            self._entries[existing.callback_id] = merged
            return merged
        if callback_id in self._entries:
            raise CallbackError("callback-exists", f"callback {callback_id} exists already")
        entry = Callback(
            callback_id, call_id, number, skill_group, reason, priority, now, place, next_attempt_at=now,
            mode=mode,
        )  # fmt: skip
        self._entries[callback_id] = entry
        return entry

    def get(self, callback_id: str) -> Callback:
        entry = self._entries.get(callback_id)
        if entry is None:
            raise CallbackError("callback-not-found", f"no callback {callback_id}")
        return entry

    def open_for(self, number: str, skill_group: str) -> Callback | None:
        return next(
            (
                c
                for c in self._entries.values()
                if c.number == number and c.skill_group == skill_group and c.state in OPEN
            ),
            None,
        )

    def due(self, now: float, skill_group: str | None = None) -> list[Callback]:
        """Callbacks to dial now, in order of service: priority, then the caller's place in line."""
        ready = [
            c
            for c in self._entries.values()
            if c.state == "pending"
            and c.next_attempt_at <= now
            and (skill_group is None or c.skill_group == skill_group)
        ]
        return sorted(ready, key=lambda c: (-c.priority, c.place_since, c.callback_id))

    def next_due_at(self) -> float | None:
        times = [c.next_attempt_at for c in self._entries.values() if c.state == "pending"]
        return min(times) if times else None

    def start(self, callback_id: str, agent_code: str, now: float) -> Callback:
        """An attempt begins (preview: the agent accepted; progressive: dialled for a ready agent)."""
        entry = self._in_state(callback_id, "pending")
        if entry.next_attempt_at > now:
            raise CallbackError(
                "callback-not-due", f"callback {callback_id} is due at {entry.next_attempt_at}"
            )
        return self._put(
            replace(entry, state="dialling", attempts=(*entry.attempts, Attempt(now, agent_code)))
        )

    def finish(self, callback_id: str, outcome: Outcome, now: float) -> Callback:
        entry = self._in_state(callback_id, "dialling")
        last = replace(entry.attempts[-1], outcome=outcome, ended_at=now)
        attempts = (*entry.attempts[:-1], last)
        if outcome == "answered":
            return self._put(replace(entry, state="done", attempts=attempts, closed_at=now))
        if outcome == "agent-declined":
            # The agent passed on it (preview): not the caller's attempt, try with the next agent.
            return self._put(replace(entry, state="pending", attempts=attempts, next_attempt_at=now))
        tried = sum(1 for a in attempts if a.outcome not in (None, "agent-declined"))
        if tried >= self.policy.max_attempts:
            return self._put(replace(entry, state="failed", attempts=attempts, closed_at=now))
        return self._put(
            replace(
                entry, state="pending", attempts=attempts, next_attempt_at=now + self.policy.retry_after_s
            )
        )

    def cancel(self, callback_id: str, now: float) -> Callback:
        """The caller called in and was served, or withdrew: the callback is not needed any more."""
        entry = self.get(callback_id)
        if entry.state not in OPEN:
            raise CallbackError("callback-closed", f"callback {callback_id} is {entry.state} already")
        return self._put(replace(entry, state="cancelled", closed_at=now))

    def restore(self, entry: Callback) -> None:
        """An open callback kept before the site restarted (site_node/records/open_items.py)."""
        if entry.state not in OPEN:
            raise CallbackError("callback-closed", f"callback {entry.callback_id} is {entry.state}")
        self._entries[entry.callback_id] = entry

    def open(self) -> list[Callback]:
        return [c for c in self._entries.values() if c.state in OPEN]

    def _in_state(self, callback_id: str, state: State) -> Callback:
        entry = self.get(callback_id)
        if entry.state != state:
            raise CallbackError(
                "callback-wrong-state", f"callback {callback_id} is {entry.state}, not {state}"
            )
        return entry

    def _put(self, entry: Callback) -> Callback:
        self._entries[entry.callback_id] = entry
        return entry
