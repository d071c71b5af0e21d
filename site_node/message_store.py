"""The site's messages kept on disk (SPEC F22): one SQLite file beside the outbox
(`<outbox>-messages.db`), one row per message, read back at start so that a restart forgets
nothing. Only the newest MAX_KEPT are read back (each agent shows its last 100 anyway)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from site_node.messaging import Message

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    sender TEXT NOT NULL,
    recipients TEXT NOT NULL,
    text TEXT NOT NULL,
    broadcast INTEGER NOT NULL
)
"""
MAX_KEPT = 20_000


def messages_path(outbox_path: Path) -> Path:
    return outbox_path.with_name(f"{outbox_path.stem}-messages.db")


class MessageStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(SCHEMA)
        return conn

    def load(self) -> list[Message]:
        """At start, before the desktop serves (blocking is fine then); oldest first."""
        conn = self._connect()
        try:
            rows = conn.execute(
                "SELECT id, at, sender, recipients, text, broadcast FROM messages ORDER BY id DESC LIMIT ?",
                (MAX_KEPT,),
            ).fetchall()
        finally:
            conn.close()
        return [Message(r[0], r[1], r[2], tuple(json.loads(r[3])), r[4], bool(r[5])) for r in reversed(rows)]

    async def save(self, m: Message) -> None:
        def write() -> None:
            conn = self._connect()
            try:
                with conn:
                    conn.execute(
                        "INSERT OR REPLACE INTO messages VALUES (?, ?, ?, ?, ?, ?)",
                        (m.id, m.at, m.sender, json.dumps(list(m.to)), m.text, int(m.broadcast)),
                    )
            finally:
                conn.close()

        async with self._lock:
            await asyncio.to_thread(write)
