"""A local province on one machine: etcd, central and one site node per city, as separate processes.

Everything lives in a run folder:

    run/cluster/
      province.yaml   the province config the processes read (etcd.endpoints set to our etcd)
      cluster.json    where to reach central and each site (SPEC §6: {"central": {"address",
                      "dashboard"}, "sites": {id: {"address"}}}), for scripts; and the processes
                      (pids, start times, logs), so `vcc cluster down` can stop them later
      etcd/           etcd's data
      logs/           one log file per process (etcd.log, central.log, central-<n>.log, site-<id>.log)

Each process runs in its own session, so a signal reaches it (and only it) and Ctrl-C at the
terminal that launched the cluster does not. `Cluster` is the Python face used by the demo and tests.

Central may run as several replicas (`central_replicas`): replica 1 on `central.listen`, the others
on free ports; etcd elects the leader (central.leadership), and `central_leader()` asks etcd which.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aetcd
import psutil
import yaml

from tools.province.certs import ClusterTls, central_stem, cluster_tls, site_stem
from tools.province.etcd_roles import EtcdRolesError, enable_roles
from tools.province.etcd_server import EtcdServer
from tools.province.netutil import free_port
from tools.province.prompts import build_prompts
from tools.province.sip import free_udp_port
from vcc.config import ConfigError, ProvinceConfig, load_province, parse_province
from vcc.digits import is_digits
from vcc.https import web_url
from vcc.membership import LeaderInfo, central_leader_key, decode_leader
from vcc.rpc import wait_serving
from vcc.tls import TlsFiles, etcd_client

log = logging.getLogger(__name__)

DEFAULT_RUN_DIR = Path("run/cluster")
STATE_FILE = "cluster.json"
CONFIG_FILE = "province.yaml"
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
POLL_S = 0.05
MAX_CENTRAL_REPLICAS = 9


class ClusterError(Exception):
    """The cluster could not be started or driven; the message says which process and why."""


@dataclass
class ManagedProcess:
    """One child process of the cluster: how to start it, where it logs, how to reach it."""

    name: str
    cmd: list[str]
    log_path: Path
    cwd: Path
    address: str = ""
    # Its Prometheus endpoint (URL), when it has one.
    metrics: str = ""
    pid: int = 0
    # Guards against signalling a recycled pid after the process is long gone.
    create_time: float = 0.0
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    # A signal was sent to it (a stop, a kill of a chaos test): its exit was asked for.
    signalled: bool = field(default=False, repr=False)

    def spawn(self, env: Mapping[str, str] | None = None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            started = time.strftime("%Y-%m-%dT%H:%M:%S")
            log.write(f"=== {started} starting {self.name}: {' '.join(self.cmd)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        self.adopt(self.popen)

    def adopt(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.signalled = False
        try:
            self.create_time = psutil.Process(popen.pid).create_time()
        except psutil.Error:
            self.create_time = 0.0

    def alive(self) -> bool:
        if self.pid == 0:
            return False
        if self.popen is not None:
            return self.popen.poll() is None
        try:
            proc = psutil.Process(self.pid)
            if self.create_time and abs(proc.create_time() - self.create_time) > 1.0:
                return False
            return proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    @property
    def exit_code(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def send(self, sig: signal.Signals) -> None:
        if not self.alive():
            return
        self.signalled = True
        # Own session: the process group id is the pid; children of the process get it too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def wait_exit(self, timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.alive():
            if loop.time() > deadline:
                return False
            await asyncio.sleep(POLL_S)
        return True

    async def terminate(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM (graceful stop), then SIGKILL if it is still there after `grace_s`."""
        self.send(signal.SIGTERM)
        if not await self.wait_exit(grace_s):
            await self.kill()

    async def kill(self) -> None:
        self.send(signal.SIGKILL)
        await self.wait_exit(STOP_GRACE_S)

    def exited_by_itself(self) -> str | None:
        """How it ended, with the last lines of its log, if it has exited without a signal from this
        cluster (a crash; or a stop by another process, such as `vcc chaos kill-site`)."""
        if self.pid == 0 or self.signalled or self.alive():
            return None
        tail = self.log_tail()
        return f"{self.name} exited unasked (code {self.exit_code}); last lines of {self.log_path}:\n{tail}"

    def log_tail(self, lines: int = 25) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 16_384))
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cmd": self.cmd,
            "log": str(self.log_path),
            "cwd": str(self.cwd),
            "address": self.address,
            "metrics": self.metrics,
            "pid": self.pid,
            "create_time": self.create_time,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ManagedProcess:
        return cls(
            name=str(data["name"]),
            cmd=[str(c) for c in data["cmd"]],
            log_path=Path(data["log"]),
            cwd=Path(data["cwd"]),
            address=str(data.get("address", "")),
            metrics=str(data.get("metrics", "")),
            pid=int(data.get("pid", 0)),
            create_time=float(data.get("create_time", 0.0)),
        )


@dataclass(frozen=True)
class ClusterAddresses:
    central: str
    etcd: str
    sites: Mapping[str, str]


async def wait_ready(
    proc: ManagedProcess, address: str, timeout_s: float = START_TIMEOUT_S, tls: TlsFiles | None = None
) -> None:
    """Wait until `proc` serves gRPC health SERVING on `address`; fail early, with its log, if it dies."""
    serving = asyncio.create_task(wait_serving(address, timeout_s, tls=tls))
    try:
        while not serving.done():
            if not proc.alive():
                raise ClusterError(
                    f"{proc.name} exited (code {proc.exit_code}) before serving on {address}; "
                    f"last lines of {proc.log_path}:\n{proc.log_tail()}"
                )
            await asyncio.wait({serving}, timeout=0.2)
        serving.result()
    except TimeoutError:
        raise ClusterError(
            f"{proc.name} not serving on {address} after {timeout_s:.0f}s; last lines of {proc.log_path}:\n"
            f"{proc.log_tail()}"
        ) from None
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await serving


def vcc_command(*args: str) -> list[str]:
    """`vcc ARGS...` run by this interpreter, so children use the same environment as we do."""
    return [sys.executable, "-m", "tools", *args]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    # A crash (SIGSEGV, SIGABRT in a C extension) leaves every thread's Python stack in the log.
    env.setdefault("PYTHONFAULTHANDLER", "1")
    return env


class Cluster:
    """A running local province. Build one with `await Cluster.start(...)`; `async with` stops it."""

    def __init__(
        self, run_dir: Path, config: ProvinceConfig, seed_customers: int = 0, central_replicas: int = 1
    ) -> None:
        if not 1 <= central_replicas <= MAX_CENTRAL_REPLICAS:
            raise ClusterError(f"central replicas: 1 to {MAX_CENTRAL_REPLICAS}, not {central_replicas}")
        self.run_dir = run_dir
        self.config = config
        self.seed_customers = seed_customers
        self.etcd: EtcdServer | None = None
        self.etcd_process: ManagedProcess | None = None
        # Replica id ("1", "2"...) -> its process; replica 1 serves on central.listen.
        self.centrals: dict[str, ManagedProcess] = {}
        self.central_replicas = central_replicas
        # The other replicas' addresses, chosen once (a restarted replica comes back where it was).
        self._replica_addresses = {str(n): f"127.0.0.1:{free_port()}" for n in range(2, central_replicas + 1)}
        self._replica_metrics = {str(n): f"127.0.0.1:{free_port()}" for n in range(2, central_replicas + 1)}
        self.sites: dict[str, ManagedProcess] = {}
        self.start_timeout_s = START_TIMEOUT_S
        # Extra environment per site process (e.g. the fault proxies' dial map, tools/province/faultproxy.py).
        self.site_env: dict[str, dict[str, str]] = {}
        # Every process's certificate (mutual TLS on every link, etcd included); set by start().
        self.tls: ClusterTls | None = None

    @property
    def config_path(self) -> Path:
        return self.run_dir / CONFIG_FILE

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def central(self) -> ManagedProcess | None:
        """Replica 1 (the only one unless `central_replicas` > 1)."""
        return self.centrals.get("1")

    def central_address(self) -> str:
        """A live replica's address (replica 1's if it is alive): reads are served by any replica."""
        for replica_id, proc in self.centrals.items():
            if proc.alive():
                return self.replica_address(replica_id)
        return self.config.central.listen

    def replica_address(self, replica_id: str) -> str:
        return self.config.central.listen if replica_id == "1" else self._replica_addresses[replica_id]

    @property
    def addresses(self) -> ClusterAddresses:
        return ClusterAddresses(
            central=self.central_address(),
            etcd=self.config.etcd.endpoints[0],
            sites={s.id: s.listen for s in self.config.sites},
        )

    @property
    def processes(self) -> list[ManagedProcess]:
        procs = [*self.sites.values(), *self.centrals.values()]
        if self.etcd_process is not None:
            procs.append(self.etcd_process)
        return procs

    @classmethod
    async def start(
        cls,
        config_path: str | Path,
        run_dir: str | Path = DEFAULT_RUN_DIR,
        *,
        seed_customers: int = 0,
        central: bool = True,
        sites: Sequence[str] | None = None,
        fresh_ports: bool = False,
        timeout_s: float = START_TIMEOUT_S,
        central_replicas: int = 1,
        database_url: str | None = None,
        bench_plaintext: bool = False,
    ) -> Cluster:
        """Start etcd, then central (unless `central=False`; `central_replicas` of it, one leads),
        then the sites (all, or the ids in `sites`).

        `fresh_ports` moves central and every site to free ports (for configs with fixed ports that
        may be taken). `database_url` replaces the config's central database (a PostgreSQL the
        launcher started: `start_database`). Raises ConfigError for a bad config, ClusterError
        when a process does not come up.

        `bench_plaintext`: every link in plaintext, nobody authenticated, only so that `vcc bench
        throughput --compare tls` can say what mutual TLS costs. No command that starts a cluster
        for use offers it (`vcc cluster up`, `vcc demo`, `vcc simulate` always make certificates).
        """
        run, raw, wanted = await asyncio.to_thread(_prepare_run, Path(config_path), Path(run_dir), sites)
        certs: ClusterTls | None = None
        if bench_plaintext:
            if raw.get("tls"):
                raise ConfigError("bench_plaintext: the config names a CA; a plaintext bench needs none")
            raw.pop("tls", None)
        else:
            certs = await asyncio.to_thread(cluster_tls, run, raw, Path(config_path), central_replicas)
        etcd = EtcdServer(
            data_dir=run / "etcd", log_path=run / "logs" / "etcd.log", tls=certs.etcd() if certs else None
        )
        try:
            await asyncio.to_thread(etcd.start)
        except (RuntimeError, TimeoutError, OSError) as exc:
            await asyncio.to_thread(etcd.stop)
            raise ClusterError(f"etcd did not start: {exc}; see {etcd.log_path}") from None
        try:
            if database_url is not None:
                raw.setdefault("central", {})["database_url"] = database_url
            config = await asyncio.to_thread(_write_run_config, run, raw, etcd.endpoint, fresh_ports)
        except ConfigError:
            await asyncio.to_thread(etcd.stop)
            raise
        if certs is not None and not certs.has_etcd_root():
            # Without etcd's roles every province certificate could write every key (the leader's).
            await asyncio.to_thread(etcd.stop)
            raise ClusterError(
                f"no {certs.etcd_root().cert} beside the province CA: `vcc certs province --out DIR`"
                " (DIR: where the CA key is) makes etcd's root certificate; copy it beside ca.crt"
            )
        if certs is not None:
            try:
                # Each etcd key writable only by its owner (a site its own membership key...).
                await asyncio.to_thread(
                    enable_roles,
                    etcd.endpoint,
                    certs.etcd_root(),
                    prefix=config.etcd.prefix,
                    province_id=config.province.id,
                    site_ids=[s.id for s in config.sites],
                    central_replicas=central_replicas,
                )
            except EtcdRolesError as exc:
                await asyncio.to_thread(etcd.stop)
                raise ClusterError(f"etcd roles: {exc}") from None

        try:
            cluster = cls(run, config, seed_customers, central_replicas)
        except ClusterError:
            await asyncio.to_thread(etcd.stop)
            raise
        cluster.start_timeout_s = timeout_s
        cluster.tls = certs
        if certs is not None:
            # This process (the launcher: a tool, the simulator, a test) dials the cluster as a tool.
            certs.adopt_tool()
        cluster.etcd = etcd
        cluster.etcd_process = ManagedProcess(
            name="etcd", cmd=["etcd"], log_path=run / "logs" / "etcd.log", cwd=run, address=etcd.endpoint
        )
        assert etcd.process is not None
        cluster.etcd_process.adopt(etcd.process)
        cluster.save_state()
        try:
            if central:
                await cluster.start_central()
            await cluster._start_sites(wanted)
        except BaseException:
            await cluster.stop()
            raise
        return cluster

    async def _start_sites(self, site_ids: Sequence[str]) -> None:
        """All at once; the first failure cancels the other waits (and is the one reported)."""
        tasks = [asyncio.create_task(self.start_site(site_id)) for site_id in site_ids]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _central_process(self, replica_id: str = "1") -> ManagedProcess:
        cmd = vcc_command("central", "--config", str(self.config_path))
        if self.seed_customers:
            cmd += ["--seed-customers", str(self.seed_customers)]
        metrics = self.config.central.metrics_listen
        if replica_id != "1":
            metrics = self._replica_metrics[replica_id]
            cmd += ["--replica-id", replica_id, "--listen", self.replica_address(replica_id)]
            cmd += ["--metrics-listen", metrics]
        suffix = "" if replica_id == "1" else f"-{replica_id}"
        return ManagedProcess(
            name=f"central{suffix}",
            cmd=cmd,
            log_path=self.logs_dir / f"central{suffix}.log",
            cwd=self.run_dir,
            address=self.replica_address(replica_id),
            metrics=metrics_url(metrics),
        )

    def _site_process(self, site_id: str) -> ManagedProcess:
        site = self.config.site(site_id)
        return ManagedProcess(
            name=f"site {site_id}",
            cmd=vcc_command("site", "--config", str(self.config_path), "--site", site_id),
            log_path=self.logs_dir / f"site-{site_id}.log",
            cwd=self.run_dir,
            address=site.listen,
            metrics=metrics_url(site.metrics_listen),
        )

    async def start_central(self) -> None:
        """Every replica that is not running; one after the other (the first one migrates the
        database, and a replica is ready once it knows who leads)."""
        for n in range(1, self.central_replicas + 1):
            await self.start_central_replica(str(n))

    async def start_central_replica(self, replica_id: str) -> None:
        proc = self.centrals.get(replica_id)
        if proc is not None and proc.alive():
            return
        if not is_digits(replica_id) or not 1 <= int(replica_id) <= self.central_replicas:
            raise ClusterError(f"no central replica {replica_id!r} (replicas 1 to {self.central_replicas})")
        proc = self.centrals[replica_id] = self._central_process(replica_id)
        proc.spawn(self._env(central_stem(replica_id)))
        self.save_state()
        await wait_ready(proc, proc.address, self.start_timeout_s, self._tool_tls())

    async def stop_central(self, grace_s: float = STOP_GRACE_S) -> None:
        """Every replica (gracefully: a stopping leader hands over to the next one)."""
        for proc in self.centrals.values():
            await proc.terminate(grace_s)
        self.save_state()

    async def kill_central(self) -> None:
        await asyncio.gather(*(proc.kill() for proc in self.centrals.values()))

    async def central_leader(self, timeout_s: float = 2.0) -> LeaderInfo | None:
        """The replica that leads, as etcd says (None: no leader key at this moment)."""
        host, _, port = self.addresses.etcd.rpartition(":")
        client = etcd_client(host, int(port), timeout_s)
        try:
            current: Any = await asyncio.wait_for(
                client.get(central_leader_key(self.config.etcd.prefix, self.config.province.id).encode()),
                timeout_s,
            )
        finally:
            await client.close()
        return decode_leader(current.value, int(current.create_revision)) if current is not None else None

    async def wait_central_leader(
        self, *, newer_than: int = 0, timeout_s: float = START_TIMEOUT_S
    ) -> LeaderInfo:
        """Until a live replica leads with an epoch above `newer_than`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            with contextlib.suppress(aetcd.ClientError, TimeoutError, OSError):
                leader = await self.central_leader()
                proc = self.centrals.get(leader.replica_id) if leader is not None else None
                if leader is not None and leader.epoch > newer_than and proc is not None and proc.alive():
                    return leader
            if loop.time() > deadline:
                raise ClusterError(f"no central leader (epoch > {newer_than}) after {timeout_s:.0f}s")
            await asyncio.sleep(POLL_S)

    async def kill_central_leader(self) -> LeaderInfo:
        """SIGKILL the leading replica (found in etcd): no goodbye, its lease simply expires."""
        leader = await self.wait_central_leader(timeout_s=10.0)
        proc = self.centrals.get(leader.replica_id)
        if proc is None:
            raise ClusterError(f"the leader, replica {leader.replica_id}, was not started by this cluster")
        await proc.kill()
        self.save_state()
        return leader

    async def start_site(self, site_id: str) -> None:
        proc = self.sites.get(site_id)
        if proc is not None and proc.alive():
            return
        proc = self._site_process(site_id)
        self.sites[site_id] = proc
        proc.spawn({**self._env(site_stem(site_id)), **self.site_env.get(site_id, {})})
        self.save_state()
        await wait_ready(proc, proc.address, self.start_timeout_s, self._tool_tls())

    def _env(self, stem: str) -> dict[str, str]:
        """A child's environment: ours, with its own certificate (never the tool's)."""
        env = _child_env()
        return self.tls.child_env(env, stem) if self.tls is not None else env

    def _tool_tls(self) -> TlsFiles | None:
        return self.tls.tool() if self.tls is not None else None

    async def kill_site(self, site_id: str) -> None:
        """SIGKILL: the site gets no chance to say goodbye (its etcd lease simply expires)."""
        proc = self._site(site_id)
        await proc.kill()

    async def stop_site(self, site_id: str, grace_s: float = STOP_GRACE_S) -> None:
        await self._site(site_id).terminate(grace_s)

    async def restart_site(self, site_id: str) -> None:
        proc = self.sites.get(site_id)
        if proc is not None and proc.alive():
            await proc.terminate()
        await self.start_site(site_id)

    def _site(self, site_id: str) -> ManagedProcess:
        self.config.site(site_id)  # ConfigError naming the known sites
        proc = self.sites.get(site_id)
        if proc is None:
            raise ClusterError(f"site {site_id} was not started by this cluster")
        return proc

    def site_alive(self, site_id: str) -> bool:
        proc = self.sites.get(site_id)
        return proc is not None and proc.alive()

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Sites first (they flush to central), then central, then etcd; SIGKILL whoever lingers.
        A process that had exited unasked (exited_by_itself) is logged, with its log's last lines."""
        for proc in self.processes:
            if (how := proc.exited_by_itself()) is not None:
                log.error("%s", how)
        await asyncio.gather(*(p.terminate(grace_s) for p in self.sites.values()))
        # Followers first: the leader then has nobody to hand over to, and no election runs.
        for proc in reversed(self.centrals.values()):
            await proc.terminate(grace_s)
        if self.etcd_process is not None:
            await self.etcd_process.terminate(grace_s)
        if self.etcd is not None:
            await asyncio.to_thread(self.etcd.stop)  # reaps the etcd child
        self.save_state()
        if self.tls is not None:
            self.tls.restore()

    def save_state(self) -> None:
        write_state(
            self.run_dir, self.processes, config_path=self.config_path, endpoints=endpoints_of(self.config)
        )

    async def __aenter__(self) -> Cluster:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def _prepare_run(
    config_path: Path, run_dir: Path, sites: Sequence[str] | None
) -> tuple[Path, dict[str, Any], list[str]]:
    """The run folder (refused while a cluster runs in it), the operator's config and the sites to start."""
    run = run_dir.resolve()
    run.mkdir(parents=True, exist_ok=True)
    running = [p.name for p in read_state(run) if p.alive()]
    if running:
        raise ClusterError(
            f"a cluster already runs in {run} ({', '.join(running)}): "
            f"`vcc cluster down --run-dir {run}` first"
        )
    load_province(config_path)  # the operator's file must validate as it is (ConfigError names the key)
    raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    wanted = list(sites) if sites is not None else [s["id"] for s in raw["sites"]]
    unknown = set(wanted) - {s["id"] for s in raw["sites"]}
    if unknown:
        raise ConfigError(f"site: no site {sorted(unknown)[0]!r} in the province config")
    # etcd's data only holds leases and live state: a fresh member each time avoids stale membership.
    shutil.rmtree(run / "etcd", ignore_errors=True)
    (run / "logs").mkdir(exist_ok=True)
    return run, raw, wanted


def _write_run_config(
    run: Path, raw: dict[str, Any], etcd_endpoint: str, fresh_ports: bool
) -> ProvinceConfig:
    """The province config the processes read: the operator's, pointed at our etcd (and free ports)."""
    raw.setdefault("etcd", {})["endpoints"] = [etcd_endpoint]
    central = raw.setdefault("central", {})
    if fresh_ports:
        central["listen"] = f"127.0.0.1:{free_port()}"
        if central.get("dashboard_listen"):
            central["dashboard_listen"] = f"127.0.0.1:{free_port()}"
        for site in raw["sites"]:
            site["listen"] = f"127.0.0.1:{free_port()}"
            if site.get("desktop_listen"):
                site["desktop_listen"] = f"127.0.0.1:{free_port()}"
            if site.get("sip"):
                site["sip"]["listen"] = f"127.0.0.1:{free_udp_port()}"
    # Every process of a local cluster has a Prometheus endpoint, on a free port unless the
    # operator's config names one (fresh ports move that one too).
    # An explicit "" turns a process's endpoint off.
    for part in (central, *raw["sites"]):
        if "metrics_listen" not in part or (fresh_ports and part["metrics_listen"]):
            part["metrics_listen"] = f"127.0.0.1:{free_port()}"
    config_file = run / CONFIG_FILE
    config = parse_province(raw, str(config_file))
    config_file.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    # The SIP sites' prompts, made offline from text (relative prompt folders are in the run folder).
    build_prompts(config, base=run)
    return config


# --- the state file, for `vcc cluster down|status` from another process ---------------------------


def metrics_url(listen: str) -> str:
    return f"http://{listen}/metrics" if listen else ""


def endpoints_of(config: ProvinceConfig) -> dict[str, Any]:
    """SPEC §6's part of cluster.json: how to reach central and each site, by id. A key is there once
    the feature behind it is (central's gRPC address and dashboard; each site's gRPC address, SIP
    address and agent desktop).
    """
    central: dict[str, str] = {"address": config.central.listen}
    if config.central.dashboard_listen:
        central["dashboard"] = web_url(config, config.central.dashboard_listen)
    if config.central.metrics_listen:
        central["metrics"] = metrics_url(config.central.metrics_listen)
    return {
        "central": central,
        "sites": {
            s.id: {
                "address": s.listen,
                **({"sip": s.sip.listen} if s.sip is not None else {}),
                **({"desktop": web_url(config, s.desktop_listen)} if s.desktop_listen else {}),
                **({"metrics": metrics_url(s.metrics_listen)} if s.metrics_listen else {}),
            }
            for s in config.sites
        },
        "etcd": {"endpoints": list(config.etcd.endpoints)},
    }


def write_state(
    run_dir: Path,
    processes: Sequence[ManagedProcess],
    *,
    config_path: Path,
    endpoints: Mapping[str, Any] | None = None,
) -> None:
    """cluster.json: `endpoints` (from `endpoints_of`; None keeps those already written) and the processes."""
    if endpoints is None:
        endpoints = {k: v for k, v in read_cluster_json(run_dir).items() if k in ("central", "sites", "etcd")}
    state = {
        **endpoints,
        "run_dir": str(run_dir),
        "config": str(config_path),
        "processes": [p.to_json() for p in processes],
    }
    tmp = run_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(run_dir / STATE_FILE)


def read_state(run_dir: str | Path) -> list[ManagedProcess]:
    path = Path(run_dir) / STATE_FILE
    if not path.exists():
        return []
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        return [ManagedProcess.from_json(p) for p in state.get("processes", [])]
    except (ValueError, KeyError, TypeError) as exc:
        raise ClusterError(f"{path}: unreadable cluster state: {exc}") from None


def read_cluster_json(run_dir: str | Path) -> dict[str, Any]:
    """cluster.json as scripts read it: {"central": {...}, "sites": {id: {...}}, ...} ({} if none)."""
    path = Path(run_dir) / STATE_FILE
    if not path.exists():
        return {}
    try:
        state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ClusterError(f"{path}: unreadable cluster state: {exc}") from None
    return state


def _stop_order(proc: ManagedProcess) -> int:
    return 2 if proc.name == "etcd" else 1 if proc.name.startswith("central") else 0


async def down(run_dir: str | Path = DEFAULT_RUN_DIR, grace_s: float = STOP_GRACE_S) -> list[str]:
    """Stop every live process recorded in the run folder (sites, central, etcd), then the
    cluster's own PostgreSQL if it started one; return their names."""
    procs = [p for p in read_state(run_dir) if p.alive()]
    stopped: list[str] = []
    for order in (0, 1, 2):
        batch = [p for p in procs if _stop_order(p) == order]
        await asyncio.gather(*(p.terminate(grace_s) for p in batch))
        stopped += [p.name for p in batch]
    if await asyncio.to_thread(stop_database, Path(run_dir)):
        stopped.append("postgresql")
    return stopped


# --- the cluster's own PostgreSQL (`vcc cluster up --database postgresql`) -------------------------

DATABASE_STATE_FILE = "postgresql.json"


async def start_database(run_dir: Path) -> str:
    """A PostgreSQL server for the cluster (tools/province/postgres_server.py) with an empty
    database; recorded in the run folder so that `vcc cluster down` stops it and `vcc chaos
    stop-database|start-database` find it. Returns central's database URL."""
    from tools.province.postgres_server import create_database, start_temporary

    await asyncio.to_thread(stop_database, run_dir)  # a previous run's, left behind
    try:
        server = await asyncio.to_thread(start_temporary)
    except (RuntimeError, OSError) as exc:
        raise ClusterError(f"PostgreSQL did not start: {exc}") from None
    await asyncio.to_thread(_record_database, run_dir, server.root, server.port)
    try:
        return await create_database(server, prefix="vcc_cluster")
    except BaseException:
        await asyncio.to_thread(stop_database, run_dir)
        raise


def _record_database(run_dir: Path, root: Path, port: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = json.dumps({"root": str(root), "port": port})
    (run_dir / DATABASE_STATE_FILE).write_text(saved, encoding="utf-8")


def stop_database(run_dir: Path) -> bool:
    """Stop and remove the cluster's PostgreSQL, if it has one; True if there was one."""
    from tools.province.postgres_server import PostgresServer

    path = run_dir / DATABASE_STATE_FILE
    if not path.exists():
        return False
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        server = PostgresServer(Path(saved["root"]), port=int(saved["port"]), process_started=True)
    except (ValueError, KeyError, TypeError) as exc:
        raise ClusterError(f"{path}: unreadable: {exc}") from None
    if server.data_dir.exists():
        server.stop()
    shutil.rmtree(server.root.parent, ignore_errors=True)
    path.unlink()
    return True


@dataclass(frozen=True)
class ProcessStatus:
    name: str
    pid: int
    alive: bool
    address: str
    log: Path


def status(run_dir: str | Path = DEFAULT_RUN_DIR) -> list[ProcessStatus]:
    return [ProcessStatus(p.name, p.pid, p.alive(), p.address, p.log_path) for p in read_state(run_dir)]
