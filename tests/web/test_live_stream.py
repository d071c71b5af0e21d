"""central.web.live_stream.LiveFeed on its own: numbered snapshots, the whole one first then changes,
each change made once for every open stream, the session's end ending the stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from central.web import live_stream
from central.web.live_delta import StreamReader
from central.web.live_stream import LiveFeed, wants_deltas
from vcc.errors import InvalidArgument, Unauthenticated


class Province:
    """Snapshots that change when told (as Dashboard.live_snapshot shares one until then)."""

    def __init__(self) -> None:
        self.waiting = 0
        self.current: dict[str, Any] = self._make()

    def _make(self) -> dict[str, Any]:
        return {"sites": [{"site_id": "gz", "live": {"calls_waiting": self.waiting}}, {"site_id": "sz"}]}

    def change(self) -> None:
        self.waiting += 1
        self.current = self._make()

    async def snapshot(self) -> dict[str, Any]:
        return self.current

    def mark(self, _now: float) -> int:
        return self.waiting


async def allowed() -> None:
    return None


async def messages(events: AsyncIterator[str], reader: StreamReader, count: int) -> list[dict[str, Any]]:
    return await asyncio.wait_for(_messages(events, reader, count), 10.0)


async def _messages(events: AsyncIterator[str], reader: StreamReader, count: int) -> list[dict[str, Any]]:
    seen = []
    async for text in events:
        for line in text.split("\n"):
            data = reader.line(line)
            if data is not None:
                seen.append(data)
        if len(seen) == count:
            return seen
    return seen


async def test_every_stream_gets_the_whole_snapshot_then_changes_made_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[int] = []
    real_diff = live_stream.diff

    def counted(old: Any, new: Any) -> Any:
        made.append(1)
        return real_diff(old, new)

    monkeypatch.setattr(live_stream, "diff", counted)
    province, closing = Province(), asyncio.Event()
    feed = LiveFeed(province.snapshot, province.mark, lambda: 0.0, 60.0, closing)
    streams = [feed.events(allowed, True) for _ in range(3)]
    readers = [StreamReader() for _ in streams]
    for s, r in zip(streams, readers, strict=True):
        assert (await messages(s, r, 1))[0] == province.current
    for _ in range(4):
        province.change()
        for s, r in zip(streams, readers, strict=True):
            assert (await messages(s, r, 1))[0] == province.current
    # Three streams, four changes: each change made once, and each stream got 1 whole + 4 changes.
    assert len(made) == 4
    assert all((r.wholes, r.deltas, r.seq) == (1, 4, 5) for r in readers)
    closing.set()
    for s in streams:
        await s.aclose()


async def test_the_whole_stream_and_the_session_end() -> None:
    province, closing = Province(), asyncio.Event()
    feed = LiveFeed(province.snapshot, province.mark, lambda: 0.0, 60.0, closing)
    whole, reader = feed.events(allowed, False), StreamReader()
    await messages(whole, reader, 1)
    province.change()
    assert (await messages(whole, reader, 1))[0] == province.current
    assert (reader.wholes, reader.deltas) == (2, 0)

    async def ended() -> None:
        raise Unauthenticated("session-expired", "the session expired")

    texts = [t async for t in feed.events(ended, True)]
    assert texts[-1] == f"event: ended\ndata: {json.dumps({'error': 'session-expired'})}\n\n"
    await whole.aclose()


def test_the_deltas_flag() -> None:
    assert wants_deltas(None) and wants_deltas("1") and not wants_deltas("0")
    for bad in ("", "yes", "2", "true"):
        with pytest.raises(InvalidArgument):
            wants_deltas(bad)
