"""RFC 3261's retransmission over UDP: T1 doubling up to T2, given up after 64*T1 (§17)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

T1 = 0.5
T2 = 4.0
TIMEOUT = 64 * T1


class Retransmit:
    """Calls `send` now and again at T1, 2T1, ... (capped at T2) until stopped or timed out."""

    def __init__(self, send: Callable[[], None], on_timeout: Callable[[], None] | None = None,
                 cap_s: float = T2) -> None:  # fmt: skip
        self._send = send
        self._on_timeout = on_timeout
        self._cap = cap_s
        self._interval = T1
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time() + TIMEOUT
        self._handle: asyncio.TimerHandle | None = None
        self.active = True
        send()
        self._handle = self._loop.call_later(self._interval, self._fire)

    def _fire(self) -> None:
        if not self.active:
            return
        if self._loop.time() >= self._deadline:
            self.active = False
            if self._on_timeout is not None:
                self._on_timeout()
            return
        self._send()
        self._interval = min(self._interval * 2, self._cap)
        self._handle = self._loop.call_later(self._interval, self._fire)

    def stop(self) -> None:
        self.active = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class Expiring(Generic[K, V]):
    """A bounded map whose entries go away after `ttl_s` (absorbs retransmissions, §17.2)."""

    def __init__(self, ttl_s: float = TIMEOUT, limit: int = 50_000) -> None:
        self._ttl = ttl_s
        self._limit = limit
        self._items: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] < asyncio.get_running_loop().time():
            del self._items[key]
            return None
        return item[1]

    def put(self, key: K, value: V) -> None:
        now = asyncio.get_running_loop().time()
        if len(self._items) >= self._limit:
            self._sweep(now)
            while len(self._items) >= self._limit:
                # Still full of live entries: the oldest goes (dicts keep insertion order).
                del self._items[next(iter(self._items))]
        self._items[key] = (now + self._ttl, value)

    def pop(self, key: K) -> None:
        self._items.pop(key, None)

    def _sweep(self, now: float) -> None:
        for key in [k for k, (exp, _) in self._items.items() if exp < now]:
            del self._items[key]

    def __len__(self) -> int:
        return len(self._items)
