"""Bring the central database to the newest schema with the Alembic migrations shipped in the package."""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import NullPool

from central.db.engine import create_engine, writer

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
# pg_advisory_xact_lock key that serialises migrations of one database (any 64-bit constant
# that nothing else uses: "vcc-migr" in ASCII).
MIGRATION_LOCK_KEY = 0x7663632D6D696772


_LOCK = sa.text("SELECT pg_advisory_lock(:key)")
_UNLOCK = sa.text("SELECT pg_advisory_unlock(:key)")


class SchemaNotCurrent(RuntimeError):
    """The database's schema is not the one this version needs: run `vcc central migrate` first."""


def alembic_config(url: str = "") -> Config:
    cfg = Config(str(MIGRATIONS / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations in {MIGRATIONS}")
    return head


async def upgrade(url: str) -> None:
    """Apply every migration not applied yet (idempotent; safe to call at each start).

    Two replicas starting on a new database take turns: the second sees the schema the first
    made. PostgreSQL has advisory locks: a session lock, held on a connection of its own around
    the migration's transaction (a lock taken inside that SERIALIZABLE transaction would come
    after its snapshot, which would still miss the first one's tables). CockroachDB has none:
    there, run `vcc central migrate` once and start replicas with central.schema_mode: require.
    """
    engine = writer(create_engine(url, poolclass=NullPool))
    try:
        async with engine.connect() as lock:
            locked = await _has_advisory_locks(lock)
            if locked:
                await lock.execute(_LOCK, {"key": MIGRATION_LOCK_KEY})
                await lock.commit()
            try:
                async with engine.begin() as conn:
                    before = await conn.run_sync(_current)
                    await conn.run_sync(_upgrade, alembic_config(url))
                    after = await conn.run_sync(_current)
            finally:
                if locked:
                    await lock.execute(
                        sa.text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY}
                    )
                    await lock.commit()
    finally:
        await engine.dispose()
    if before != after:
        log.info("database schema %s -> %s", before or "(empty)", after)


async def _has_advisory_locks(conn: AsyncConnection) -> bool:
    if conn.dialect.name == "sqlite":
        return False  # one writer at a time already (BEGIN IMMEDIATE)
    version = (await conn.execute(sa.text("SELECT version()"))).scalar_one()
    return "cockroachdb" not in str(version).lower()


async def check_current(url: str) -> None:
    """Raise SchemaNotCurrent unless the database is at the newest migration this version ships."""
    head = head_revision()
    current = await current_revision(url)
    if current != head:
        raise SchemaNotCurrent(
            f"database schema is {current or 'empty'}, this version needs {head}: "
            "run `vcc central migrate --config F` first (central.schema_mode is 'require')"
        )


async def current_revision(url: str) -> str | None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_current)
    finally:
        await engine.dispose()


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _upgrade(conn: Connection, cfg: Config) -> None:
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")
