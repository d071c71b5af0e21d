"""The durable outbox: call events journaled in a local SQLite file until central acknowledges them.

The switchboard appends without awaiting; a writer task group-commits whatever accumulated while
the previous commit ran, so one fsync covers many events. The database is used from one dedicated
thread: each operation (a whole transaction) runs there as one function, so operations never
interleave and the event loop never blocks on disk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from vcc.v1 import common_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event BLOB NOT NULL,
    UNIQUE (call_id, site_id, seq)
);
-- Callbacks and voicemail messages still open, as they are after the events beside them (one
-- transaction), and the last journal number of their calls: a restarted site rebuilds its lists
-- from them and continues those calls' numbers. Kept after central acknowledged the events.
CREATE TABLE IF NOT EXISTS open_items (
    kind TEXT NOT NULL,
    item_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, item_id)
);
CREATE TABLE IF NOT EXISTS call_seq (
    call_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
-- Calls that arrived here and have not ended here, their last journal number here and how far
-- they got ('home', 'routed' to another city, 'answered' here): a site killed mid-call ends them
-- when it restarts (its callers' dialogs died with it), so each has a final record at central.
CREATE TABLE IF NOT EXISTS live_calls (
    call_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    reached TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY,
    call_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event BLOB NOT NULL,
    reason TEXT NOT NULL,
    parked_at REAL NOT NULL
);
"""

# A commit that fails (disk full, file locked by an operator's sqlite3 shell) is retried a few
# times before the waiting appenders are told.
_COMMIT_ATTEMPTS = 5


@dataclass(frozen=True)
class KeptItem:
    """A callback or message as it is now (`body`, JSON), or closed (None): forget it."""

    kind: str
    item_id: str
    call_id: str
    body: str | None


@dataclass
class OpenItems:
    """What the last run left open, read at open: the items and their calls' last journal numbers."""

    items: list[KeptItem]
    last_seq: dict[str, int]
    # call id -> the open items of it: which calls' journal numbers are followed (outbox thread only).
    by_call: dict[str, set[tuple[str, str]]]
    # Calls the last run left up (its process killed mid-call): call id -> (last seq, how far).
    live_calls: dict[str, tuple[int, str]] = field(default_factory=dict)


class OutboxClosed(RuntimeError):
    """append() after close()."""


class Outbox:
    """A journal of CallEvents not yet acknowledged by central. Build it with `await Outbox.open(path)`."""

    def __init__(
        self,
        path: Path,
        executor: ThreadPoolExecutor,
        db: sqlite3.Connection,
        pending: int,
        dead: int,
        left_open: OpenItems | None = None,
    ):
        self.path = path
        # The callbacks and messages the last run left open (the site restores them at start).
        self.left_open = left_open or OpenItems([], {}, {})
        self._kept: list[KeptItem] = []
        self._executor = executor
        self._db = db
        self._stored = pending
        self._dead = dead
        self._buffer: list[common_pb2.CallEvent] = []
        # Size of the batch being committed right now (it has left the buffer, not yet in _stored).
        self._committing = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._closing = False
        # Set after every commit that added rows; the shipper clears it before reading pending().
        self.changed = asyncio.Event()
        if pending:
            self.changed.set()
        # Transactions that appended events: lets tests see that appends coalesce.
        self.commits = 0
        self._writer = asyncio.create_task(self._write_loop(), name=f"outbox-writer:{path.name}")

    @classmethod
    async def open(cls, path: str | Path) -> Outbox:
        """Open (or create) the journal; rows left by a crash are pending again."""
        p = Path(path)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        loop = asyncio.get_running_loop()
        try:
            db, pending, dead, left_open = await loop.run_in_executor(executor, _open_db, p)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        log.info(
            "outbox %s opened: %d pending, %d dead-lettered, %d callbacks and messages open",
            p, pending, dead, len(left_open.items),
        )  # fmt: skip
        return cls(p, executor, db, pending, dead, left_open)

    @property
    def pending_count(self) -> int:
        """Events not yet acknowledged by central, including those not yet committed."""
        return self._stored + self._committing + len(self._buffer)

    @property
    def dead_letter_count(self) -> int:
        return self._dead

    def append(
        self, events: Sequence[common_pb2.CallEvent], kept: Sequence[KeptItem] = ()
    ) -> asyncio.Future[None]:
        """Buffer events (and the open items they changed) for the next group commit, one
        transaction; the future resolves once they are durable."""
        if self._closing:
            raise OutboxClosed(f"outbox {self.path} is closed")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not events and not kept:
            done.set_result(None)
            return done
        self._buffer.extend(events)
        self._kept.extend(kept)
        self._waiters.append(done)
        self._wake.set()
        return done

    async def pending(self, limit: int) -> list[tuple[int, common_pb2.CallEvent]]:
        """The oldest committed rows, in the order they were appended."""
        return await self._run(lambda: _select_pending(self._db, limit))

    async def pending_stored(self, limit: int) -> list[tuple[int, str, bytes]]:
        """The oldest committed rows as stored: (row id, call id, the event's bytes), in order.
        What the shipper sends as it is (parsing them back only to serialize them again was a
        twentieth of a site's CPU)."""
        return await self._run(lambda: _select_stored(self._db, limit))

    async def ack(self, row_ids: Sequence[int]) -> None:
        """Central stored these rows: forget them."""
        if not row_ids:
            return
        ids = list(row_ids)
        await self._run(lambda: _delete(self._db, ids), then=self._forget)

    async def park(self, row_ids: Sequence[int], reason: str) -> int:
        """Move rows central refused into the dead_letter table (kept for an operator); returns how many."""
        if not row_ids:
            return 0
        ids = list(row_ids)
        return await self._run(lambda: _park(self._db, ids, reason, time.time()), then=self._parked)

    async def dead_letters(self, limit: int = 1000) -> list[tuple[common_pb2.CallEvent, str]]:
        """Parked events with the reason central gave, oldest first."""
        return await self._run(lambda: _select_dead(self._db, limit))

    async def close(self) -> None:
        """Commit what is buffered, stop the writer, close the file."""
        if self._closing:
            await asyncio.wait({self._writer})
            return
        self._closing = True
        self._wake.set()
        await asyncio.wait({self._writer})
        await self._run(self._db.close)
        self._executor.shutdown(wait=False)
        log.info("outbox %s closed: %d pending", self.path, self._stored)

    async def _run(self, fn: Callable[[], T], then: Callable[[T], None] | None = None) -> T:
        """Run fn on the outbox thread; `then` gets its result once it committed, even if our caller
        was cancelled meanwhile (the counts must follow the file)."""
        job = self._executor.submit(fn)
        if then is not None:
            loop = asyncio.get_running_loop()

            def done(f: concurrent.futures.Future[T]) -> None:
                if not f.cancelled() and f.exception() is None:
                    loop.call_soon_threadsafe(then, f.result())

            # Registered before wrap_future's own callback: `then` runs before our caller resumes.
            job.add_done_callback(done)
        return await asyncio.wrap_future(job)

    def _forget(self, deleted: int) -> None:
        self._stored -= deleted

    def _parked(self, moved: int) -> None:
        self._stored -= moved
        self._dead += moved

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Everything appended while the previous commit ran goes in the next one.
            while self._buffer or self._kept:
                batch, kept, waiters = self._buffer, self._kept, self._waiters
                self._buffer, self._kept, self._waiters = [], [], []
                self._committing = len(batch)
                try:
                    await self._commit(batch, kept, waiters)
                finally:
                    self._committing = 0
            if self._closing:
                return

    async def _commit(
        self, batch: list[common_pb2.CallEvent], kept: list[KeptItem], waiters: list[asyncio.Future[None]]
    ) -> None:
        rows = [(e.call_id, e.site_id, e.seq, e.SerializeToString()) for e in batch]
        marks = [(e.call_id, e.seq, e.kind) for e in batch]
        followed = self.left_open.by_call
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(_COMMIT_ATTEMPTS),
                wait=wait_exponential(multiplier=0.05, max=1.0),
                retry=retry_if_exception_type(sqlite3.OperationalError),
                reraise=True,
            ):
                with attempt:
                    inserted = await self._run(lambda: _insert(self._db, rows, kept, followed, marks))
                    # Not cancellation-proof like ack(): the writer is only cancelled with the loop.
        except Exception as exc:
            # The events are lost for central: say so loudly, and tell whoever awaits them.
            log.exception("outbox %s: cannot commit %d events", self.path, len(batch))
            for w in waiters:
                if not w.done():
                    w.set_exception(exc)
            return
        self.commits += 1
        self._stored += inserted
        for w in waiters:
            if not w.done():
                w.set_result(None)
        if inserted:
            self.changed.set()


# What runs on the outbox thread: one function per transaction.


def _open_db(path: Path) -> tuple[sqlite3.Connection, int, int, OpenItems]:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed event survives a power cut, not only a process crash.
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=2000")
        db.executescript(_SCHEMA)
        pending = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        dead = db.execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0]
        left_open = _select_open(db)
    except BaseException:
        db.close()
        raise
    return db, int(pending), int(dead), left_open


def _select_open(db: sqlite3.Connection) -> OpenItems:
    # Numbers of calls with nothing open any more are not needed (nothing more is journaled there).
    db.execute("DELETE FROM call_seq WHERE call_id NOT IN (SELECT call_id FROM open_items)")
    items = [
        KeptItem(str(kind), str(item_id), str(call_id), str(body))
        for kind, item_id, call_id, body in db.execute(
            "SELECT kind, item_id, call_id, body FROM open_items ORDER BY rowid"
        )
    ]
    last_seq = {str(c): int(s) for c, s in db.execute("SELECT call_id, seq FROM call_seq")}
    by_call: dict[str, set[tuple[str, str]]] = {}
    for item in items:
        by_call.setdefault(item.call_id, set()).add((item.kind, item.item_id))
    live = {
        str(c): (int(seq), str(reached))
        for c, seq, reached in db.execute("SELECT call_id, seq, reached FROM live_calls")
    }
    return OpenItems(items, last_seq, by_call, live)


def _transaction(db: sqlite3.Connection, body: Callable[[], int]) -> int:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = body()
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return result


def _insert(
    db: sqlite3.Connection,
    rows: list[tuple[str, str, int, bytes]],
    kept: list[KeptItem],
    followed: dict[str, set[tuple[str, str]]],
    marks: Sequence[tuple[str, int, common_pb2.CallEventKind.ValueType]],
) -> int:
    def body() -> int:
        # (call_id, site_id, seq) is unique: an event appended twice is journaled once.
        inserted = db.executemany(
            "INSERT OR IGNORE INTO outbox (call_id, site_id, seq, event) VALUES (?, ?, ?, ?)", rows
        ).rowcount
        for item in kept:
            key = (item.kind, item.item_id)
            if item.body is None:
                db.execute("DELETE FROM open_items WHERE kind = ? AND item_id = ?", key)
                followed.get(item.call_id, set()).discard(key)
            else:
                db.execute(
                    "INSERT OR REPLACE INTO open_items (kind, item_id, call_id, body) VALUES (?, ?, ?, ?)",
                    (*key, item.call_id, item.body),
                )
                followed.setdefault(item.call_id, set()).add(key)
        # The calls with open items: their last journal number, so a restart never reuses one.
        # (Idempotent if the transaction is retried: a set, a maximum.)
        db.executemany(
            "INSERT INTO call_seq (call_id, seq) VALUES (?, ?)"
            " ON CONFLICT (call_id) DO UPDATE SET seq = max(seq, excluded.seq)",
            [(call_id, seq) for call_id, _site, seq, _e in rows if followed.get(call_id)],
        )
        for call_id in [c for c, keys in followed.items() if not keys]:
            del followed[call_id]
            db.execute("DELETE FROM call_seq WHERE call_id = ?", (call_id,))
        _follow_live(db, marks)
        return inserted

    return _transaction(db, body)


_K = common_pb2.CallEventKind


def _follow_live(
    db: sqlite3.Connection, marks: Sequence[tuple[str, int, common_pb2.CallEventKind.ValueType]]
) -> None:
    """The live_calls rows after these events (idempotent: a retried transaction sets the same)."""
    for call_id, seq, kind in marks:
        if kind == _K.CALL_EVENT_KIND_ARRIVED:
            db.execute(
                "INSERT INTO live_calls (call_id, seq, reached) VALUES (?, ?, 'home')"
                " ON CONFLICT (call_id) DO UPDATE SET seq = max(seq, excluded.seq)",
                (call_id, seq),
            )
        elif kind == _K.CALL_EVENT_KIND_ENDED:
            db.execute("DELETE FROM live_calls WHERE call_id = ?", (call_id,))
        else:
            reached = {_K.CALL_EVENT_KIND_ANSWERED: "answered", _K.CALL_EVENT_KIND_ROUTED: "routed"}.get(kind)
            db.execute(
                "UPDATE live_calls SET seq = max(seq, ?),"
                " reached = CASE WHEN ? = 'answered' OR (? = 'routed' AND reached = 'home') THEN ?"
                " ELSE reached END WHERE call_id = ?",
                (seq, reached, reached, reached, call_id),
            )


def _select_pending(db: sqlite3.Connection, limit: int) -> list[tuple[int, common_pb2.CallEvent]]:
    rows = db.execute("SELECT id, event FROM outbox ORDER BY id LIMIT ?", (limit,)).fetchall()
    return [(int(row_id), common_pb2.CallEvent.FromString(raw)) for row_id, raw in rows]


def _select_stored(db: sqlite3.Connection, limit: int) -> list[tuple[int, str, bytes]]:
    rows = db.execute("SELECT id, call_id, event FROM outbox ORDER BY id LIMIT ?", (limit,)).fetchall()
    return [(int(row_id), str(call_id), bytes(raw)) for row_id, call_id, raw in rows]


def _delete(db: sqlite3.Connection, ids: list[int]) -> int:
    return _transaction(
        db, lambda: db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids]).rowcount
    )


def _park(db: sqlite3.Connection, ids: list[int], reason: str, now: float) -> int:
    def body() -> int:
        db.executemany(
            "INSERT OR REPLACE INTO dead_letter (id, call_id, site_id, seq, event, reason, parked_at)"
            " SELECT id, call_id, site_id, seq, event, ?, ? FROM outbox WHERE id = ?",
            [(reason, now, i) for i in ids],
        )
        return db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids]).rowcount

    return _transaction(db, body)


def _select_dead(db: sqlite3.Connection, limit: int) -> list[tuple[common_pb2.CallEvent, str]]:
    rows = db.execute("SELECT event, reason FROM dead_letter ORDER BY id LIMIT ?", (limit,)).fetchall()
    return [(common_pb2.CallEvent.FromString(raw), str(reason)) for raw, reason in rows]
