"""The dashboard's live stream (`GET /api/stream`, server-sent events), change-driven.

Each connection gets the whole snapshot first (`event: live`, the snapshot as `/api/live` has
it), then only what changed (`event: delta`, data `{"seq": n, "base": m, "change": ...}`: the
change of central.web.live_delta that turns snapshot m into snapshot n). Every message carries
its sequence number as the event's `id`. A page whose snapshot is not `base` (it missed one)
opens the stream again and starts from a whole snapshot. `?deltas=0` sends the whole snapshot
every time (the stream as it was; the benchmark's side-by-side).

Snapshots are numbered as they are made (central.web.server.Dashboard.live_snapshot shares one
between every client until the live state changes), and each change between two numbers is
made and encoded once whatever the number of open dashboards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Any

from central.web.live_delta import diff
from vcc.errors import InvalidArgument, VccError

# How often a live stream looks for a change to push.
CHANGE_POLL_S = 0.05
# Changes kept encoded (a few: every open dashboard is at one of the last snapshots).
KEPT_CHANGES = 8


def wants_deltas(value: str | None) -> bool:
    """The `deltas` query parameter: absent or "1" (changes), "0" (the whole snapshot each time)."""
    if value in (None, "1"):
        return True
    if value == "0":
        return False
    raise InvalidArgument("bad-deltas", "deltas: 0 (whole snapshots) or 1 (changes)")


class LiveFeed:
    """Numbers the shared snapshots and writes each connection's messages."""

    def __init__(
        self,
        snapshot: Callable[[], Awaitable[dict[str, Any]]],
        mark: Callable[[float], Hashable],
        clock: Callable[[], float],
        push_interval_s: float,
        closing: asyncio.Event,
    ) -> None:
        self._snapshot = snapshot
        self._mark = mark
        self._clock = clock
        self._push_interval_s = push_interval_s
        self._closing = closing
        self._seq = 0
        self._current: dict[str, Any] | None = None
        self._changes: OrderedDict[tuple[int, int], str] = OrderedDict()

    async def numbered(self) -> tuple[int, dict[str, Any]]:
        """The current snapshot and its sequence number (a new number for each new snapshot)."""
        data = await self._snapshot()
        if data is not self._current:
            self._current = data
            self._seq += 1
        return self._seq, data

    def change(self, base: int, old: dict[str, Any], seq: int, new: dict[str, Any]) -> str:
        """The encoded delta message's data from snapshot `base` to `seq` (made once)."""
        key = (base, seq)
        text = self._changes.get(key)
        if text is None:
            text = _json({"seq": seq, "base": base, "change": diff(old, new)})
            self._changes[key] = text
            while len(self._changes) > KEPT_CHANGES:
                self._changes.popitem(last=False)
        return text

    async def events(self, still_allowed: Callable[[], Awaitable[None]], deltas: bool) -> AsyncIterator[str]:
        """One connection's messages; `still_allowed` raises when the session ended."""
        # The client reconnects by itself after this many ms if the stream breaks.
        yield "retry: 1000\n\n"
        sent: tuple[int, dict[str, Any]] | None = None
        while not self._closing.is_set():
            try:
                # A session revoked (logout) or expired ends the stream.
                await still_allowed()
            except VccError as exc:
                yield f"event: ended\ndata: {json.dumps({'error': exc.error_id})}\n\n"
                return
            # The mark before the snapshot: a change after it is never missed (at worst sent twice).
            mark, at = self._mark(self._clock()), self._clock()
            seq, data = await self.numbered()
            if sent is None or not deltas:
                yield f"id: {seq}\nevent: live\ndata: {_json(data)}\n\n"
            elif seq != sent[0]:
                yield f"id: {seq}\nevent: delta\ndata: {self.change(sent[0], sent[1], seq, data)}\n\n"
            sent = (seq, data)
            await self._until_due(mark, at)

    async def _until_due(self, sent_mark: Hashable, sent_at: float) -> None:
        """Until a site's state changes (looked at every CHANGE_POLL_S), or the push interval
        passed (so that the ages shown keep counting), or the dashboard stops."""
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CHANGE_POLL_S):
                    await self._closing.wait()
            now = self._clock()
            if self._mark(now) != sent_mark or now - sent_at >= self._push_interval_s:
                return


def _json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))
