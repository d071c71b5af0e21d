"""`vcc cluster up --database postgresql` with two central replicas behind fault proxies: the
cluster starts its own PostgreSQL, `vcc chaos stop-database|start-database` break and mend it,
`vcc cluster down` stops it with the rest."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from unittest import mock

import pytest
import yaml
from typer.testing import CliRunner

from tests.integration.support import password_hash
from tests.integration.test_virtual_center import write_province
from tools.cli import app
from tools.province.cluster import DATABASE_STATE_FILE
from tools.province.generate import SiteSpec, generate_province
from tools.province.netutil import free_port

pytestmark = pytest.mark.cluster


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _vcc(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def _until(check: object, what: str, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        code, out = check()  # type: ignore[operator]
        if code == 0:
            return str(out)
        last = out
        time.sleep(0.5)
    raise AssertionError(f"{what} not reached in {timeout_s}s: {last}")


def test_a_cluster_with_its_own_postgresql_and_two_replicas(tmp_path: Path) -> None:
    # The commands run in this process adopt the cluster's tool identity (VCC_TLS_*) as a real
    # `vcc` process would for its own lifetime: give the tests after this one their environment back.
    with mock.patch.dict(os.environ):
        _cluster_with_its_own_postgresql(tmp_path)


def _cluster_with_its_own_postgresql(tmp_path: Path) -> None:
    config = generate_province(
        [SiteSpec("gz", "gz", 4, {"general": 1})],
        etcd_endpoint="127.0.0.1:2379",
        central_listen=f"127.0.0.1:{free_port()}",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}",
        password_hash=password_hash(),
        outbox_dir=tmp_path / "outbox",
        lease_ttl_s=2,
    )
    path = write_province(config, tmp_path)
    run = tmp_path / "run"
    code, out = _vcc(
        "cluster", "up", "--config", str(path), "--run-dir", str(run), "--fresh-ports",
        "--seed-customers", "0", "--central-replicas", "2", "--with-fault-proxies",
        "--database", "postgresql",
    )  # fmt: skip
    assert code == 0, out
    try:
        saved = json.loads((run / DATABASE_STATE_FILE).read_text())
        port = int(saved["port"])
        province = yaml.safe_load((run / "province.yaml").read_text())
        assert province["central"]["database_url"].startswith("cockroachdb+asyncpg://")
        assert f":{port}/" in province["central"]["database_url"]
        run_config = str(run / "province.yaml")
        # Central reads its database (the audit log) through the cluster's PostgreSQL.
        _until(lambda: _vcc("audit", "--config", run_config, "--json"), "audit log read")

        code, out = _vcc("chaos", "stop-database", "--run-dir", str(run))
        assert code == 0 and f"stopped PostgreSQL on port {port}" in out, out
        assert not _accepts(port)
        code, out = _vcc("audit", "--config", run_config, "--json")
        assert code != 0, out  # central cannot read what is not there

        code, out = _vcc("chaos", "start-database", "--run-dir", str(run))
        assert code == 0 and "started PostgreSQL" in out, out
        assert _accepts(port)
        # Central's pool reconnects: the audit log is readable again, nothing restarted.
        _until(lambda: _vcc("audit", "--config", run_config, "--json"), "audit log after the restart")
    finally:
        code, out = _vcc("cluster", "down", "--run-dir", str(run))
    assert code == 0 and "postgresql" in out, out
    assert not _accepts(port)
    assert not (run / DATABASE_STATE_FILE).exists()
    assert not Path(saved["root"]).exists()
