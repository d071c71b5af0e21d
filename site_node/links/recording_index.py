"""The site's recordings on their way into central's index (RecordingIndexService.IndexRecordings).

The recorder leaves one JSON entry per kept recording in `index/pending/`; they go in batches to
the central leader and move to `index/sent/` once central acknowledged them. A batch without an
answer is sent again (central keeps one row per call and site), so an entry is never lost and never
indexed twice, across restarts of the site too: whatever is still pending at start goes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import grpc

from site_node.links.leader_channel import LeaderChannel
from vcc import rpc
from vcc.v1 import recordings_pb2, recordings_pb2_grpc

log = logging.getLogger(__name__)

BATCH = 100
SEND_DEADLINE_S = 5.0
IDLE_S = 2.0
RETRY_S = 2.0


def entry_to_proto(entry: dict[str, object]) -> recordings_pb2.Recording:
    return recordings_pb2.Recording(
        call_id=str(entry["call_id"]),
        site_id=str(entry["site_id"]),
        agent_codes=[str(a) for a in entry.get("agent_codes", []) or []],  # type: ignore[attr-defined]
        caller_number=str(entry.get("caller_number", "")),
        started_at=rpc.timestamp(float(entry["started_at"])),  # type: ignore[arg-type]
        duration_s=float(entry["duration_s"]),  # type: ignore[arg-type]
        file=str(entry["file"]),
        sha256=str(entry["sha256"]),
        size_bytes=int(entry["size_bytes"]),  # type: ignore[call-overload]
    )


class RecordingIndexShipper:
    def __init__(self, site_id: str, index_dir: Path, central_address: Callable[[], str | None]) -> None:
        self._site_id = site_id
        self.pending_dir = index_dir / "pending"
        self.sent_dir = index_dir / "sent"
        self.pending_dir.mkdir(parents=True, exist_ok=True)
        self.sent_dir.mkdir(parents=True, exist_ok=True)
        self._address = central_address
        self._wake = asyncio.Event()
        self._central = LeaderChannel()
        self.sent = 0
        self.failures = 0

    def wake(self) -> None:
        self._wake.set()

    def pending(self) -> list[Path]:
        return sorted(self.pending_dir.glob("*.json"))

    async def run(self) -> None:
        while True:
            self._wake.clear()
            if not await self.flush_once():
                await asyncio.sleep(RETRY_S)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_S):
                    await self._wake.wait()

    async def flush_once(self) -> bool:
        """Send one batch; False when central did not take it (it stays pending)."""
        files = (await asyncio.to_thread(self.pending))[:BATCH]
        if not files:
            return True
        address = self._address()
        if address is None:
            return False
        batch, good = [], []
        for path in files:
            try:
                batch.append(entry_to_proto(json.loads(path.read_text(encoding="utf-8"))))
                good.append(path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # Never written whole (the recorder renames only complete files): set aside.
                log.error("recording index entry %s unreadable, set aside: %s", path.name, exc)
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".bad"))
        if not batch:
            return True
        try:
            await self._stub(address).IndexRecordings(
                recordings_pb2.IndexRecordingsRequest(site_id=self._site_id, recordings=batch),
                timeout=SEND_DEADLINE_S,
            )
        except grpc.aio.AioRpcError as exc:
            self.failures += 1
            log.warning("recordings: %d index entries wait for central: %s", len(batch), exc.code().name)
            return False
        for path in good:
            with contextlib.suppress(OSError):
                path.replace(self.sent_dir / path.name)
        self.sent += len(batch)
        return True

    def _stub(self, address: str) -> recordings_pb2_grpc.RecordingIndexServiceAsyncStub:
        return recordings_pb2_grpc.RecordingIndexServiceStub(self._central.to(address))

    async def close(self, drain_s: float = 1.0) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_s):
                while self.pending() and await self.flush_once():
                    pass
        await self._central.close()
