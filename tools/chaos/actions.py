"""`vcc chaos ACTION --run-dir D`: break a running `vcc cluster` by hand (for demos), the way
`vcc simulate` scenarios do.

- partition / heal SITE: cut the site from central, etcd and its peers through the cluster's
  fault proxies (tools/province/faultproxy.py); the cluster must have been started with
  `vcc cluster up --with-fault-proxies`. `silent`: the open connections are not reset but
  forward nothing more (a pulled cable), so each end finds out by its keepalive.
- kill-site SITE: SIGKILL, no goodbye (its etcd lease expires). restart-site SITE: start it
  again (a graceful stop first if it still runs), with the same dial map.
- stop-database / start-database: an immediate shutdown and a restart of central's PostgreSQL,
  when that server was made by tools/province/postgres_server.py (its data folder is found from the
  listening process); SQLite lives inside central and cannot be stopped apart from it.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy.engine import make_url

from tools.province.certs import CLUSTER_CERTS_DIR, ClusterTls, site_stem
from tools.province.cluster import (
    STATE_FILE,
    ClusterError,
    ManagedProcess,
    read_cluster_json,
    read_state,
    wait_ready,
    write_state,
)
from tools.province.faultproxy import (
    FaultProxyError,
    Plan,
    command,
    load_plan,
)
from tools.province.postgres_server import PostgresServer
from vcc.config import ConfigError, load_province

ACTIONS = ("partition", "heal", "kill-site", "restart-site", "stop-database", "start-database")
DATABASE_FILE = "chaos-database.json"


class ChaosError(Exception):
    """The fault could not be applied; the message says why."""


# -- acting on a running cluster from another process ----------------------------------------------


async def chaos(action: str, run_dir: Path, site: str | None = None, *, silent: bool = False) -> str:
    """Apply one action to the cluster of `run_dir`; a line saying what was done."""
    if action not in ACTIONS:
        raise ChaosError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
    if silent and action != "partition":
        raise ChaosError(f"--silent is for partition, not {action}")
    if action in ("partition", "heal", "kill-site", "restart-site") and not site:
        raise ChaosError(f"{action} needs --site")
    state = _state(run_dir)
    if action in ("partition", "heal"):
        assert site is not None
        plan = _plan(run_dir)
        try:
            reply = await command(
                plan.control, "cut" if action == "partition" else "heal", site, silent=silent
            )
        except FaultProxyError as exc:
            raise ChaosError(str(exc)) from None
        how = " (silent: open connections dropped without a reset)" if silent else ""
        return f"{action} {site}{how}: sites cut now {reply.get('cut') or 'none'}"
    if action == "kill-site":
        assert site is not None
        proc = _site_process(run_dir, site)
        if not proc.alive():
            raise ChaosError(f"site {site} is not running")
        await proc.kill()
        return f"killed site {site} (pid {proc.pid})"
    if action == "restart-site":
        assert site is not None
        return await _restart_site(run_dir, state, site)
    return await _database(run_dir, Path(str(state["config"])), start=action == "start-database")


def _state(run_dir: Path) -> dict[str, Any]:
    """cluster.json (SPEC §6: central and the sites by id, with their addresses; the processes)."""
    try:
        state = read_cluster_json(run_dir)
    except ClusterError as exc:
        raise ChaosError(str(exc)) from None
    if not state:
        raise ChaosError(f"no cluster in {run_dir} (no {STATE_FILE}): `vcc cluster up` first")
    return state


def _plan(run_dir: Path) -> Plan:
    try:
        plan = load_plan(run_dir)
    except FaultProxyError as exc:
        raise ChaosError(str(exc)) from None
    if plan is None:
        raise ChaosError(
            f"the cluster in {run_dir} has no fault proxies: "
            "start it with `vcc cluster up --with-fault-proxies`"
        )
    return plan


def _site_process(run_dir: Path, site: str) -> ManagedProcess:
    try:
        procs = read_state(run_dir)
    except ClusterError as exc:
        raise ChaosError(str(exc)) from None
    found = [p for p in procs if p.name == f"site {site}"]
    if not found:
        names = ", ".join(p.name.removeprefix("site ") for p in procs if p.name.startswith("site "))
        raise ChaosError(f"no site {site!r} in the cluster of {run_dir} (have: {names})")
    return found[-1]


async def _restart_site(run_dir: Path, state: dict[str, Any], site: str) -> str:
    sites = state.get("sites") or {}
    if site not in sites:
        raise ChaosError(f"no site {site!r} in the cluster of {run_dir} (have: {', '.join(sites)})")
    address = str(sites[site]["address"])
    old = _site_process(run_dir, site)
    if old.alive():
        await old.terminate()
    plan = load_plan(run_dir)
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    certs = run_dir / CLUSTER_CERTS_DIR
    if certs.is_dir():
        # The site's own certificate, never this tool's (whose identity our environment carries).
        env = ClusterTls(certs).child_env(env, site_stem(site))
    if plan is not None:
        env.update(plan.site_env().get(site, {}))
    proc = ManagedProcess(old.name, old.cmd, old.log_path, old.cwd, address)
    proc.spawn(env)
    procs = [proc if p.name == old.name else p for p in read_state(run_dir)]
    write_state(run_dir, procs, config_path=Path(str(state["config"])))
    try:
        await wait_ready(proc, proc.address)
    except ClusterError as exc:
        raise ChaosError(str(exc)) from None
    return f"restarted site {site} (pid {proc.pid}) on {proc.address}"


# -- the database -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Database:
    root: Path
    port: int


async def _database(run_dir: Path, config_path: Path, *, start: bool) -> str:
    try:
        config = load_province(config_path)
    except ConfigError as exc:
        raise ChaosError(str(exc)) from None
    url = make_url(config.central.database_url)
    if url.get_backend_name() == "sqlite":
        raise ChaosError(
            "central's database is SQLite, inside central: it cannot be stopped apart from central"
        )
    saved = run_dir / DATABASE_FILE
    if start:
        if not saved.exists():
            raise ChaosError("the database was not stopped by `vcc chaos stop-database` of this run folder")
        data = json.loads(saved.read_text(encoding="utf-8"))
        server = PostgresServer(Path(data["root"]), port=int(data["port"]))
        try:
            await asyncio.to_thread(server.start)
        except (OSError, RuntimeError) as exc:
            raise ChaosError(f"PostgreSQL did not start: {exc}") from None
        saved.unlink()
        return f"started PostgreSQL on port {server.port}"
    found = await asyncio.to_thread(_find_postgres, int(url.port or 5432))
    server = PostgresServer(found.root, port=found.port, process_started=True)
    saved.write_text(json.dumps({"root": str(found.root), "port": found.port}), encoding="utf-8")
    await asyncio.to_thread(server.stop)
    return f"stopped PostgreSQL on port {found.port} (immediate shutdown); `vcc chaos start-database` to undo"


def _find_postgres(port: int) -> _Database:
    """The postmaster listening on `port`, if its data folder has the layout of
    tools/province/postgres_server.py."""
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if "postgres" not in (proc.info.get("name") or "") or "-D" not in cmdline:
            continue
        if f"-p {port}" not in " ".join(cmdline) and str(port) not in cmdline:
            continue
        data_dir = Path(cmdline[cmdline.index("-D") + 1])
        if data_dir.name == "data":
            return _Database(data_dir.parent, port)
    raise ChaosError(
        f"no PostgreSQL server made by vcc's tools listens on port {port}; stop your own server by hand"
    )
