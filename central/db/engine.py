"""The central database engine: SQLite (embedded) or CockroachDB/PostgreSQL, set up the same way.

Ingest runs in SERIALIZABLE transactions everywhere (CockroachDB has no other level; on
PostgreSQL we ask for it) so two batches of the same call cannot fold past each other: one
of them fails with SQLSTATE 40001 and is retried. SQLite has one writer at a time: a
transaction that will write starts with BEGIN IMMEDIATE so it waits for the lock up front
instead of failing when it upgrades a read lock.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# Execution option that marks a connection whose transactions write (SQLite: BEGIN IMMEDIATE).
WRITES = "vcc_writes"
# Execution option of a read that is one statement: on SQLite it runs without BEGIN (a statement
# is atomic on its own), two fewer trips to aiosqlite's thread; other databases ignore it.
ONE_STATEMENT = "vcc_one_statement"
# How long a SQLite writer waits for the lock before failing with "database is locked".
SQLITE_BUSY_TIMEOUT_S = 30.0


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(
    url: str, *, sqlite_busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S, **kwargs: Any
) -> AsyncEngine:
    """An AsyncEngine for `sqlite+aiosqlite://...` or `cockroachdb+asyncpg://...`.

    SQLite: WAL journal (readers never wait for the writer) and a busy timeout (a writer waits
    for the lock rather than failing at once with "database is locked")."""
    if is_sqlite(url):
        engine = create_async_engine(url, connect_args={"timeout": sqlite_busy_timeout_s}, **kwargs)
        _sqlite_transactions(engine)
        return engine
    return create_async_engine(url, isolation_level="SERIALIZABLE", pool_pre_ping=True, **kwargs)


def writer(engine: AsyncEngine) -> AsyncEngine:
    """The same engine and pool, for transactions that write."""
    return engine.execution_options(**{WRITES: True})


def one_statement_reader(engine: AsyncEngine) -> AsyncEngine:
    """The same engine and pool, for reads that are a single statement (see ONE_STATEMENT)."""
    return engine.execution_options(**{ONE_STATEMENT: True})


def _sqlite_transactions(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us emit BEGIN ourselves (pysqlite's own BEGIN is deferred and comes late).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL: readers do not wait for the writer.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get(ONE_STATEMENT) and not options.get(WRITES):
            return
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get(WRITES) else "BEGIN")
