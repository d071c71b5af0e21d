"""Bring the central database to the newest schema with the Alembic migrations shipped in the package."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from central.db.engine import create_engine, writer

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


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
    """Apply every migration not applied yet (idempotent; safe to call at each start)."""
    engine = writer(create_engine(url, poolclass=NullPool))
    try:
        async with engine.begin() as conn:
            before = await conn.run_sync(_current)
            await conn.run_sync(_upgrade, alembic_config(url))
            after = await conn.run_sync(_current)
    finally:
        await engine.dispose()
    if before != after:
        log.info("database schema %s -> %s", before or "(empty)", after)


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
