"""A real PostgreSQL server in a temporary folder, reached through the CockroachDB dialect.

Used by the test suite (tests/fixtures/postgres.py re-exports it) and by `vcc simulate` scenarios
with `central: {database: postgresql}`, which also stop and start it (`stop_database` /
`start_database` events). CI runs as root and PostgreSQL refuses to run as root, so the server
runs as `postgres` (the Debian package's user) on a data and socket folder that user owns.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tools.province.netutil import free_port


def pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _as_pg_user(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _bindir() -> Path:
    bindir = pg_bindir()
    if bindir is None:
        raise RuntimeError(
            "PostgreSQL server binaries not found (deploy/install-system-deps.sh installs them)"
        )
    return bindir


@dataclass
class PostgresServer:
    root: Path
    port: int = 0
    process_started: bool = False

    @property
    def url(self) -> str:
        """SQLAlchemy URL through the CockroachDB dialect (same wire protocol)."""
        return f"cockroachdb+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def start(self) -> PostgresServer:
        """Create the cluster on first start, then start the server (again after `stop`, same port)."""
        bindir = _bindir()
        self.port = self.port or free_port()
        if not (self.data_dir / "PG_VERSION").exists():
            self.root.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(self.root, "postgres", "postgres")
            subprocess.run(
                _as_pg_user(
                    [
                        str(bindir / "initdb"),
                        "-D",
                        str(self.data_dir),
                        "-U",
                        "postgres",
                        "-A",
                        "trust",
                        "-E",
                        "UTF8",
                    ]
                ),
                check=True,
                capture_output=True,
            )
        # fsync off: only the machine crashing could lose data, and tests never crash it. But
        # synchronous_commit stays on: `stop()` is an immediate shutdown (a crash to the clients),
        # and with it off the last transactions central acknowledged would vanish at restart.
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        subprocess.run(
            _as_pg_user(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-o",
                    opts,
                    "-l",
                    str(self.root / "pg.log"),
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        self.process_started = True
        return self

    def stop(self) -> None:
        """Immediate shutdown (no checkpoint): what a crash looks like to the clients."""
        bindir = pg_bindir()
        if bindir is None or not self.process_started:
            return
        subprocess.run(
            _as_pg_user([str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "stop"]),
            check=False,
            capture_output=True,
        )
        self.process_started = False


def start_temporary() -> PostgresServer:
    root = Path(tempfile.mkdtemp(prefix="vcc-pg-"))
    os.chmod(root, 0o755)
    return PostgresServer(root / "pg").start()


_databases = itertools.count()


async def create_database(server: PostgresServer, prefix: str = "vcc") -> str:
    """A new empty database on the server; returns its cockroachdb+asyncpg URL."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    name = f"{prefix}_{os.getpid()}_{next(_databases)}"
    admin = create_async_engine(server.url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()
    return make_url(server.url).set(database=name).render_as_string(hide_password=False)
