"""Deadlines kept by the call control: each part arms its own kind and handles it when due.

Time is an argument: `next_deadline()` tells the adapter when to call the facade's `tick(now)`.
Deadlines due at the same moment fire in the order they were armed.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from site_node.callcontrol.effects import Effects

# (subject, token, when, effects): a stale token means the deadline no longer applies.
Handler = Callable[[str, str, float, Effects], None]


class Timers:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, str, str]] = []
        self._seq = 0
        self._handlers: dict[str, Handler] = {}

    def on(self, kind: str, handler: Handler) -> None:
        if kind in self._handlers:
            raise ValueError(f"timer kind {kind!r} already has a handler")
        self._handlers[kind] = handler

    def arm(self, when: float, kind: str, subject: str, token: str = "") -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, kind, subject, token))

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def fire_due(self, now: float, fx: Effects) -> None:
        while self._heap and self._heap[0][0] <= now:
            when, _, kind, subject, token = heapq.heappop(self._heap)
            self._handlers[kind](subject, token, when, fx)
