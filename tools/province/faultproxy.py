"""Partitions on one machine: a fault-injecting TCP proxy on every link of a site, that a test cuts.

Why a proxy rather than network namespaces: it needs no root, works the same on a laptop and in
CI, cuts one site's links and nothing else, and can add latency (the kernel here has no `netem`).

How a site is partitioned:

- Every process reads the dial map `VCC_DIAL_MAP` (JSON `{"host:port": "host:port"}`) from its
  environment: `vcc.rpc.channel()` and the etcd clients dial the mapped address instead of the
  configured one (`vcc.rpc.dialled`). Nothing else in the process knows.
- For a partitionable site S the plan puts one proxy on each link that S takes part in:
  S -> central, S -> each etcd endpoint, S -> each peer site, and each peer site -> S. S's dial
  map sends its central, etcd and peer addresses to their proxies; every peer's dial map sends
  S's address to the proxy of that peer -> S link. Callers and agent desktops (the test's own
  processes) dial S directly: a partitioned site keeps its own trunks and agents, as in a real
  city cut from the provincial network.
- `cut()` aborts every open connection of the links (the peers on both ends see the stream break
  at once, so a call's leg ends on both sides together) and blackholes new ones (accepted, never
  forwarded: a connect hangs until the client's deadline, as across a dead WAN link); or refuses
  them at once with `blackhole=False`. `cut(silent=True)` leaves the open connections open but
  forwards nothing more on them, both ways (a pulled cable, a firewall dropping packets): no end
  learns anything from TCP, only its own keepalive pings going unanswered tell it. `heal()`
  resets the silenced connections (what was dropped cannot be replayed), closes the held ones and
  forwards again. `latency_s` delays every chunk in both directions.
- Distances (an emulated WAN): with `wan` given, every site's links go through a proxy, each
  delaying its chunks by the one-way delay between the two places (site ids, or "central" for
  central and etcd), plus a random jitter of up to `jitter_s`, never reordering a connection's
  bytes (TCP does not). The delays come from the scenario file (`wan:`).

One proxy process (`python -m tools.province.faultproxy serve --plan F`) hosts the proxies of a cluster;
a one-line text protocol on its control port cuts and heals a site (`cut gz`, `cut gz silent`,
`cut gz refuse`, `heal gz`, `status`). It stops by itself once the cluster's etcd (recorded in
the plan) has gone, so `vcc cluster down` needs to know nothing about it. `vcc simulate` starts
it for the sites its scenario partitions, `vcc cluster up --with-fault-proxies` for every site
(tools/province/proxied.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tools.province.netutil import free_port
from vcc.config import ProvinceConfig
from vcc.rpc import DIAL_MAP_ENV

log = logging.getLogger(__name__)

PLAN_FILE = "faultproxy.json"
CHUNK = 65_536
CONTROL_TIMEOUT_S = 5.0
START_TIMEOUT_S = 20.0
# How often the proxy process checks that its cluster still exists.
WATCH_PARENT_S = 1.0


class FaultProxyError(Exception):
    """The proxy process could not be started or reached; the message says why."""


class FaultProxy:
    """A TCP proxy on loopback from `listen` to `target` that can be cut, healed and slowed."""

    def __init__(
        self, target: str, *, name: str = "", latency_s: float = 0.0, jitter_s: float = 0.0, seed: int = 0
    ) -> None:
        self.target = target
        self.name = name or target
        self.latency_s = latency_s
        self.jitter_s = jitter_s
        self._random = random.Random(seed)
        self.address = ""
        self.cut_now = False
        self.blackhole = True
        # Open connections stay up but every byte read on them is dropped (a silent cut).
        self.silent = False
        self.connections_seen = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.Task[None]] = set()
        self._held: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        bound = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{bound}"
        return self.address

    def cut(self, *, blackhole: bool = True, silent: bool = False) -> None:
        """Drop every open connection (or, `silent`, stop forwarding on them without a word);
        hold (blackhole) or refuse new ones until heal()."""
        self.cut_now, self.blackhole, self.silent = True, blackhole, silent
        if not silent:
            for task in list(self._open):
                task.cancel()

    def heal(self) -> None:
        self.cut_now = False
        if self.silent:
            # The connections open now are the silenced ones (new ones were held, not piped).
            for task in list(self._open):
                task.cancel()
            self.silent = False
        for writer in list(self._held):
            _abort(writer)
        self._held.clear()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        self.heal()
        await asyncio.gather(*self._open, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_seen += 1
        if self.cut_now:
            if self.blackhole:
                self._held.add(writer)  # never read, never answered: the client's deadline decides
            else:
                _abort(writer)
            return
        task = asyncio.current_task()
        assert task is not None
        self._open.add(task)
        try:
            await self._pipe(reader, writer)
        except asyncio.CancelledError:
            pass  # cut(): the link went down under this connection
        finally:
            self._open.discard(task)
            _abort(writer)

    async def _pipe(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        host, _, port = self.target.rpartition(":")
        try:
            target_r, target_w = await asyncio.open_connection(host, int(port))
        except OSError:
            return  # the target is down: the client sees its connection close, as without us
        try:
            pumps = [
                asyncio.create_task(self._pump(client_r, target_w)),
                asyncio.create_task(self._pump(target_r, client_w)),
            ]
            try:
                # Either side closing ends the connection: gRPC never half-closes a TCP stream.
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
                if self.silent:
                    # A silent link carries no FIN or reset either: the other end must find out
                    # by itself. heal() (or stop()) cancels this wait and resets both ends.
                    await asyncio.get_running_loop().create_future()
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            _abort(target_w)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        pending: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(_deliver(pending, writer))
        last_due = 0.0
        try:
            while data := await reader.read(CHUNK):
                if self.silent:
                    continue  # dropped on the floor: the sender's TCP sees nothing wrong
                # Jitter delays a chunk but never lets it overtake the one before (TCP order).
                jitter = self._random.uniform(0.0, self.jitter_s) if self.jitter_s > 0 else 0.0
                last_due = max(last_due, loop.time() + self.latency_s + jitter)
                await pending.put((last_due, data))
            await pending.put((max(last_due, loop.time() + self.latency_s), b""))
            await sender
        except (ConnectionError, OSError):
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await sender


async def _deliver(pending: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter) -> None:
    """Write chunks in order, each no earlier than its due time (the added latency)."""
    loop = asyncio.get_running_loop()
    while True:
        due, data = await pending.get()
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        if not data:
            return
        writer.write(data)
        await writer.drain()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close at once with a reset: the peer learns now, not after a keepalive timeout."""
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()


# -- the plan: which links of which sites go through a proxy ------------------------------------


@dataclass(frozen=True)
class Link:
    """One dialler -> target link through a proxy on `listen`; cut when any of `groups` is cut."""

    dialler: str  # a site id
    target: str  # the address the dialler has in its config
    listen: str  # the proxy's address
    groups: tuple[str, ...]  # the partitionable sites this link belongs to
    # The emulated WAN: one-way delay of every chunk and its random jitter (seconds).
    delay_s: float = 0.0
    jitter_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "dialler": self.dialler,
            "target": self.target,
            "listen": self.listen,
            "groups": self.groups,
            "delay_s": self.delay_s,
            "jitter_s": self.jitter_s,
        }


CENTRAL_PLACE = "central"


@dataclass(frozen=True)
class Wan:
    """One-way delays between places (site ids, and "central" for central and etcd), seconds."""

    delays: Mapping[frozenset[str], float]
    jitter_s: float = 0.0
    default_s: float = 0.0

    def delay(self, a: str, b: str) -> float:
        return self.delays.get(frozenset((a, b)), self.default_s)


@dataclass
class Plan:
    """Every proxied link of a cluster, its control port and the cluster's etcd pid (lifetime)."""

    control: str
    links: list[Link]
    watch_pid: int = 0
    watch_create_time: float = 0.0
    sites: list[str] = field(default_factory=list)

    def site_env(self) -> dict[str, dict[str, str]]:
        """Each site process's extra environment: its dial map (empty map: dial as configured)."""
        maps: dict[str, dict[str, str]] = {}
        for link in self.links:
            maps.setdefault(link.dialler, {})[link.target] = link.listen
        return {site: {DIAL_MAP_ENV: json.dumps(m, sort_keys=True)} for site, m in maps.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "control": self.control,
            "links": [link.to_json() for link in self.links],
            "watch_pid": self.watch_pid,
            "watch_create_time": self.watch_create_time,
            "sites": self.sites,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        links = [
            Link(
                str(x["dialler"]),
                str(x["target"]),
                str(x["listen"]),
                tuple(x["groups"]),
                float(x.get("delay_s", 0.0)),
                float(x.get("jitter_s", 0.0)),
            )
            for x in data["links"]
        ]
        return cls(
            str(data["control"]),
            links,
            int(data.get("watch_pid", 0)),
            float(data.get("watch_create_time", 0.0)),
            [str(s) for s in data.get("sites", [])],
        )


def plan_for(
    config: ProvinceConfig,
    partitionable: Iterable[str],
    *,
    central: Sequence[str] = (),
    wan: Wan | None = None,
) -> Plan:
    """Proxies on every link of each partitionable site (to central, etcd and peers, and back).

    `central`: every central address a site may dial (replicas); default the config's one.
    `wan`: every site's links are proxied, each with its delay (partitionable or not).
    """
    wanted = sorted(set(partitionable))
    for site_id in wanted:
        config.site(site_id)  # ConfigError naming the known sites
    centrals = list(central) or [config.central.listen]
    by_pair: dict[tuple[str, str], set[str]] = {}
    delays: dict[tuple[str, str], float] = {}
    if wan is not None:
        for site in config.sites:
            for target in [*centrals, *config.etcd.endpoints]:
                by_pair.setdefault((site.id, target), set())
                delays[(site.id, target)] = wan.delay(site.id, CENTRAL_PLACE)
            for peer in config.sites:
                if peer.id != site.id:
                    by_pair.setdefault((site.id, peer.listen), set())
                    delays[(site.id, peer.listen)] = wan.delay(site.id, peer.id)
    for site_id in wanted:
        for target in [*centrals, *config.etcd.endpoints]:
            by_pair.setdefault((site_id, target), set()).add(site_id)
        for peer in config.sites:
            if peer.id == site_id:
                continue
            by_pair.setdefault((site_id, peer.listen), set()).add(site_id)
            by_pair.setdefault((peer.id, config.site(site_id).listen), set()).add(site_id)
    jitter = wan.jitter_s if wan is not None else 0.0
    links = [
        Link(
            dialler,
            target,
            f"127.0.0.1:{free_port()}",
            tuple(sorted(groups)),
            delays.get((dialler, target), 0.0),
            jitter if (dialler, target) in delays else 0.0,
        )
        for (dialler, target), groups in sorted(by_pair.items())
    ]
    return Plan(f"127.0.0.1:{free_port()}", links, sites=wanted)


# -- the proxy process --------------------------------------------------------------------------


class ProxyHost:
    """Every proxy of a plan in one event loop, cut and healed by site."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.proxies = [
            (
                link,
                FaultProxy(
                    link.target,
                    name=f"{link.dialler}->{link.target}",
                    latency_s=link.delay_s,
                    jitter_s=link.jitter_s,
                    seed=i,
                ),
            )
            for i, link in enumerate(plan.links)
        ]
        self.cut_sites: set[str] = set()
        self.latency_s = 0.0
        self._control: asyncio.Server | None = None

    async def start(self) -> None:
        for link, proxy in self.proxies:
            await proxy.start(int(link.listen.rpartition(":")[2]))
        host, _, port = self.plan.control.rpartition(":")
        self._control = await asyncio.start_server(self._command, host, int(port))

    async def stop(self) -> None:
        if self._control is not None:
            self._control.close()
        await asyncio.gather(*(proxy.stop() for _, proxy in self.proxies))

    def apply(
        self, verb: str, site: str = "", *, blackhole: bool = True, silent: bool = False
    ) -> dict[str, Any]:
        if verb in ("cut", "heal"):
            if site not in self.plan.sites:
                raise ValueError(f"site {site!r} has no fault proxies (have: {', '.join(self.plan.sites)})")
            if verb == "cut":
                self.cut_sites.add(site)
            else:
                self.cut_sites.discard(site)
            for link, proxy in self.proxies:
                down = bool(self.cut_sites & set(link.groups))
                if down and not proxy.cut_now:
                    proxy.cut(blackhole=blackhole, silent=silent)
                elif not down and proxy.cut_now:
                    proxy.heal()
                    log.info("healed %s", proxy.name)
            how = " (silent)" if verb == "cut" and silent else ""
            log.info("%s %s%s: cut sites now %s", verb, site, how, sorted(self.cut_sites))
        elif verb == "latency":
            self.latency_s = float(site)
            for _, proxy in self.proxies:
                proxy.latency_s = self.latency_s
        elif verb != "status":
            raise ValueError(
                f"unknown command {verb!r} (cut SITE [refuse|silent], heal SITE, latency SECONDS, status)"
            )
        return {"cut": sorted(self.cut_sites), "sites": self.plan.sites, "latency_s": self.latency_s}

    async def _command(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = (await asyncio.wait_for(reader.readline(), CONTROL_TIMEOUT_S)).decode().split()
            verb, arg = [*line, "", ""][:2]
            blackhole, silent = "refuse" not in line[2:], "silent" in line[2:]
            try:
                reply: dict[str, Any] = {
                    "ok": True,
                    **self.apply(verb, arg, blackhole=blackhole, silent=silent),
                }
            except ValueError as exc:
                reply = {"ok": False, "error": str(exc)}
            writer.write((json.dumps(reply) + "\n").encode())
            await writer.drain()
        except (TimeoutError, ConnectionError, OSError):
            pass
        finally:
            writer.close()


async def serve(plan: Plan) -> None:
    """Run the proxies until SIGTERM/SIGINT or until the watched process (the cluster's etcd) exits."""
    host = ProxyHost(plan)
    await host.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("fault proxies up: %d links, control on %s", len(plan.links), plan.control)
    try:
        while not stop.is_set():
            if plan.watch_pid and not _alive(plan.watch_pid, plan.watch_create_time):
                log.info("the cluster is gone (pid %d): stopping", plan.watch_pid)
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WATCH_PARENT_S):
                    await stop.wait()
    finally:
        await host.stop()


def _alive(pid: int, create_time: float) -> bool:
    try:
        proc = psutil.Process(pid)
        if create_time and abs(proc.create_time() - create_time) > 1.0:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# -- the runner's side: start the process, send it commands -------------------------------------


async def command(
    control: str, verb: str, arg: str = "", *, refuse: bool = False, silent: bool = False
) -> dict[str, Any]:
    """Send one command to a proxy process; its reply (raises FaultProxyError when it says no)."""
    mode = (" refuse" if refuse else "") + (" silent" if silent else "")
    host, _, port = control.rpartition(":")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), CONTROL_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        raise FaultProxyError(f"fault proxy control {control} not reachable: {exc}") from None
    try:
        writer.write(f"{verb} {arg}{mode}\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), CONTROL_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        raise FaultProxyError(f"fault proxy control {control}: {exc or type(exc).__name__}") from None
    finally:
        writer.close()
    try:
        reply: dict[str, Any] = json.loads(line)
    except ValueError:
        raise FaultProxyError(f"fault proxy control {control}: no answer") from None
    if not reply.get("ok"):
        raise FaultProxyError(str(reply.get("error", "refused")))
    return reply


@dataclass
class ProxyProcess:
    """The proxy process of a cluster run folder (its plan is saved there for `vcc chaos`)."""

    plan: Plan
    popen: subprocess.Popen[bytes] | None = None

    @property
    def control(self) -> str:
        return self.plan.control

    async def cut(self, site_id: str, *, refuse: bool = False, silent: bool = False) -> None:
        await command(self.control, "cut", site_id, refuse=refuse, silent=silent)

    async def heal(self, site_id: str) -> None:
        await command(self.control, "heal", site_id)

    async def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        for _ in range(100):
            if self.popen.poll() is not None:
                return
            await asyncio.sleep(0.05)
        self.popen.kill()
        await asyncio.to_thread(self.popen.wait)


async def start_process(plan: Plan, run_dir: Path, *, watch_pid: int = 0) -> ProxyProcess:
    """Write the plan to `run_dir`, start the proxy process, wait until it answers on its control port."""
    if watch_pid:
        plan.watch_pid = watch_pid
        with contextlib.suppress(psutil.Error):
            plan.watch_create_time = psutil.Process(watch_pid).create_time()
    path = run_dir / PLAN_FILE
    path.write_text(json.dumps(plan.to_json(), indent=2), encoding="utf-8")
    log_path = run_dir / "logs" / "faultproxy.log"
    popen = await asyncio.to_thread(_spawn, path, log_path, run_dir)
    proc = ProxyProcess(plan, popen)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    while True:
        try:
            await command(plan.control, "status")
            return proc
        except FaultProxyError as exc:
            if popen.poll() is not None or loop.time() > deadline:
                await proc.stop()
                raise FaultProxyError(
                    f"the fault proxy process did not start ({exc}); see {log_path}"
                ) from None
            await asyncio.sleep(0.1)


def _spawn(plan_path: Path, log_path: Path, run_dir: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # Its own links are not proxied: it must not inherit a dial map.
    env = {k: v for k, v in os.environ.items() if k != DIAL_MAP_ENV}
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tools.province.faultproxy", "serve", "--plan", str(plan_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=run_dir,
            env=env,
            # Its own session: Ctrl-C at the terminal of `vcc cluster up` does not reach it.
            start_new_session=True,
        )


def load_plan(run_dir: Path) -> Plan | None:
    path = run_dir / PLAN_FILE
    if not path.exists():
        return None
    try:
        return Plan.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as exc:
        raise FaultProxyError(f"{path}: unreadable fault proxy plan: {exc}") from None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tools.province.faultproxy", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="what", required=True)
    run = sub.add_parser("serve", help="run the proxies of a plan (written by the cluster tooling)")
    run.add_argument("--plan", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s faultproxy: %(message)s")
    plan = Plan.from_json(json.loads(args.plan.read_text(encoding="utf-8")))
    asyncio.run(serve(plan))


if __name__ == "__main__":
    main()
