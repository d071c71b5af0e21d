"""Migrations as their own step: `vcc central migrate` brings a new database to the newest schema;
a central configured with `schema_mode: require` refuses a database that step has not migrated;
two migrations started at once on a new PostgreSQL database take turns (advisory lock) instead
of racing on DDL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from central.app import CentralApp
from central.db.migrate import SchemaNotCurrent, check_current, current_revision, head_revision, upgrade
from tests.fixtures.postgres import PostgresServer, create_database
from tests.integration.support import password_hash
from tools.province.generate import SiteSpec, generate_province
from tools.province.netutil import free_port
from vcc.config import parse_province


def province(tmp_path: Path, database_url: str) -> dict[str, object]:
    raw = generate_province(
        [SiteSpec("gz", "Guangzhou", trunk_channels=2, agents={"general": 1})],
        etcd_endpoint=f"127.0.0.1:{free_port()}",  # never reached: the check comes first
        central_listen=f"127.0.0.1:{free_port()}",
        database_url=database_url,
        password_hash=password_hash(),
        outbox_dir=tmp_path / "outbox",
    )
    raw["central"]["schema_mode"] = "require"  # type: ignore[index]
    return raw


async def test_a_replica_refuses_an_unmigrated_database_until_migrate_has_run(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'central.db'}"
    raw = province(tmp_path, url)
    app = CentralApp(parse_province(raw))
    with pytest.raises(SchemaNotCurrent, match="vcc central migrate"):
        await app.start()
    await app.stop()
    assert await current_revision(url) is None  # the replica ran no DDL

    config_path = tmp_path / "province.yaml"
    config_path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tools", "central", "migrate", "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"database schema at {head_revision()}"
    await check_current(url)  # what a `require` replica checks at start


@pytest.mark.postgres
async def test_two_migrations_at_once_take_turns_on_postgresql(postgres_server: PostgresServer) -> None:
    url = await create_database(postgres_server, "migrate")
    await asyncio.gather(*(upgrade(url) for _ in range(3)))
    assert await current_revision(url) == head_revision()
    await upgrade(url)  # and again later: nothing to do
