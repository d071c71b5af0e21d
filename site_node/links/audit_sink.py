"""A site's audit entries on their way to central's audit log (AuditService.RecordAudit).

Entries wait in a bounded queue and go in batches to the central leader; a batch central did
not acknowledge is sent again (entry ids make that idempotent). If central stays away long
enough for the queue to fill, the oldest entries are dropped and the drop is logged as an error
(the entries stay in this site's log). With a store (`AuditStore`, a SQLite file beside the
outbox) the queue is on disk too: written before each send (the loop wakes at once for a new
entry), removed once central acknowledged, read back at start, so a site that crashes or restarts
sends what it had not sent yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from site_node.links.leader_channel import LeaderChannel
from vcc import rpc
from vcc.v1 import audit_pb2, audit_pb2_grpc

log = logging.getLogger(__name__)

BATCH = 200
MAX_PENDING = 10_000
SEND_DEADLINE_S = 5.0
IDLE_S = 1.0
RETRY_S = 2.0


def audit_path(outbox_path: Path) -> Path:
    return outbox_path.with_name(f"{outbox_path.stem}-audit.db")


class AuditStore:
    """The entries not yet acknowledged by central, on disk (blocking calls: run in a thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS pending (seq INTEGER PRIMARY KEY, entry_id TEXT UNIQUE, entry BLOB)"
        )
        return conn

    def load(self, limit: int) -> list[audit_pb2.AuditEntry]:
        conn = self._connect()
        try:
            rows = conn.execute("SELECT entry FROM pending ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        finally:
            conn.close()
        return [audit_pb2.AuditEntry.FromString(r[0]) for r in reversed(rows)]

    def save(self, entries: Sequence[audit_pb2.AuditEntry]) -> None:
        conn = self._connect()
        try:
            with conn:
                conn.executemany(
                    "INSERT OR IGNORE INTO pending (entry_id, entry) VALUES (?, ?)",
                    [(e.entry_id, e.SerializeToString()) for e in entries],
                )
        finally:
            conn.close()

    def remove(self, entry_ids: Sequence[str]) -> None:
        conn = self._connect()
        try:
            with conn:
                conn.executemany("DELETE FROM pending WHERE entry_id = ?", [(i,) for i in entry_ids])
        finally:
            conn.close()


class AuditSink:
    def __init__(
        self,
        site_id: str,
        central_address: Callable[[], str | None],
        clock: Callable[[], float] = time.time,
        max_pending: int = MAX_PENDING,
        store: AuditStore | None = None,
    ) -> None:
        self._site_id = site_id
        self._address = central_address
        self._clock = clock
        self._pending: deque[audit_pb2.AuditEntry] = deque()
        self._max = max_pending
        self._wake = asyncio.Event()
        # Set (and cleared again) whenever central acknowledged a batch: `delivered` waits on it.
        self._acked = asyncio.Event()
        self._central = LeaderChannel()
        self.dropped = 0
        self.sent = 0
        self._store = store
        # Recorded but not on disk yet; dropped from the queue but still on disk.
        self._unsaved: list[audit_pb2.AuditEntry] = []
        self._dropped_ids: list[str] = []
        self.restored = 0
        if store is not None:
            # At start, before the site serves: what a previous run had not sent.
            self._pending.extend(store.load(max_pending))
            self.restored = len(self._pending)

    def record(
        self,
        actor: str,
        action: str,
        *,
        target: str = "",
        source: str = "",
        outcome: str = "ok",
        detail: dict[str, str] | None = None,
    ) -> None:
        entry = audit_pb2.AuditEntry(
            entry_id=uuid.uuid4().hex,
            at=rpc.timestamp(self._clock()),
            actor=actor,
            action=action,
            target=target,
            source=source,
            outcome=outcome,
            site_id=self._site_id,
            detail=detail or {},
        )
        log.info("audit: %s %s %s from %s: %s", actor, action, target, source, outcome)
        if len(self._pending) >= self._max:
            self._dropped_ids.append(self._pending.popleft().entry_id)
            self.dropped += 1
            log.error("audit: queue full (central away), oldest entry dropped (%d so far)", self.dropped)
        self._pending.append(entry)
        if self._store is not None:
            self._unsaved.append(entry)
        self._wake.set()

    async def delivered(self, timeout_s: float) -> bool:
        """Whether central acknowledged every entry recorded so far, waiting `timeout_s` at most."""
        if not self._pending:
            return True
        if self._address() is None:
            return False  # no central known: nothing to wait for (the entries wait on disk)
        last = self._pending[-1].entry_id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self._wake.set()
        while any(e.entry_id == last for e in self._pending):
            left = deadline - loop.time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._acked.wait()
        return True

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def persist(self) -> None:
        """What was recorded since, on disk (and what was dropped, off it)."""
        if self._store is None or not (self._unsaved or self._dropped_ids):
            return
        unsaved, self._unsaved = self._unsaved, []
        dropped, self._dropped_ids = self._dropped_ids, []
        await asyncio.to_thread(self._store.save, unsaved)
        if dropped:
            await asyncio.to_thread(self._store.remove, dropped)

    async def run(self) -> None:
        while True:
            await self.persist()
            if not self._pending:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(IDLE_S):
                        await self._wake.wait()
                continue
            if not await self.flush_once():
                await asyncio.sleep(RETRY_S)

    async def flush_once(self) -> bool:
        """Send one batch; False when central did not take it (it stays queued)."""
        address = self._address()
        if address is None or not self._pending:
            return not self._pending
        batch = [self._pending[i] for i in range(min(BATCH, len(self._pending)))]
        try:
            await self._stub(address).RecordAudit(
                audit_pb2.RecordAuditRequest(site_id=self._site_id, entries=batch), timeout=SEND_DEADLINE_S
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("audit: %d entries wait for central: %s", len(self._pending), exc.code().name)
            return False
        # By id: entries dropped while the batch was on its way must not shift what is removed.
        sent = {e.entry_id for e in batch}
        while self._pending and self._pending[0].entry_id in sent:
            self._pending.popleft()
        self.sent += len(batch)
        self._acked.set()
        self._acked.clear()
        if self._store is not None:
            await self.persist()  # an entry recorded meanwhile is saved before the batch is removed
            await asyncio.to_thread(self._store.remove, sorted(sent))
        return True

    def _stub(self, address: str) -> audit_pb2_grpc.AuditServiceAsyncStub:
        return audit_pb2_grpc.AuditServiceStub(self._central.to(address))

    async def close(self, drain_s: float = 1.0) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_s):
                await self.persist()
                while self._pending and await self.flush_once():
                    pass
        # What central did not take in time waits on disk for the next start.
        await self.persist()
        await self._central.close()
