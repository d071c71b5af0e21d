"""A scenario on a real local cluster, step by step: the public API of the simulation runner.

`vcc simulate` (tools/simulation/simulate.py) and the soak (tools/chaos/soak.py) are both made of
these steps:

    async with open_run(scenario, run_dir) as run:   # run folder, database, province, cluster
        await run.start_robots()                     # one robot per agent, all READY
        run.begin_traffic()
        await run.offer_traffic()                    # every site's callers, to the end
        await run.apply(spec)                        # a fault event, now (or run.apply_events())
        records = await run.central_records(views)   # what central recorded
        records, stats = await run.collect()         # outboxes drained, records, robots stopped

What the callers saw is `run.views`; the faults the runner applied are `run.applied` and the times
it took sites down and up `run.outages` (tools/simulation/faults.py attributes the lost calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from tools.province.cluster import Cluster, ClusterError, read_state
from tools.province.faultproxy import FaultProxyError, ProxyProcess
from tools.province.generate import (
    DEFAULT_PASSWORD,
    SiteSpec,
    agent_codes,
    generate_province,
    write_province,
)
from tools.province.netutil import free_port
from tools.province.postgres_server import PostgresServer, create_database, start_temporary
from tools.province.proxied import start_with_fault_proxies
from tools.province.status import site_summaries
from tools.simulation.demo import list_call_records
from tools.simulation.robots import RobotPolicy, RobotStats, run_robots
from tools.simulation.scenario import EventSpec, Scenario
from tools.simulation.traffic import CallerView, SiteLoad, TrafficPlan, run_traffic
from vcc.config import ConfigError
from vcc.v1 import central_pb2

MARKER = ".vcc-simulate"
SEED_CUSTOMERS = 100
# Callers ring from this many known customer phones: the sites' screen-pop look-ups then hit their
# cache after the first calls (the warm-up), so that a look-up at central does not hold a call back
# from ringing a free agent and the measured waiting is the queue's, comparable with Erlang C.
CALLER_PHONES = 20
READY_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 30.0
OUTBOX_TIMEOUT_S = 30.0
RECORDS_TIMEOUT_S = 15.0
ROBOTS_STOP_S = 15.0
# After the central leader is killed, how long another replica may take to lead.
LEADER_TIMEOUT_S = 30.0
ENDED = frozenset({"answered", "abandoned", "blocked", "failed"})


class SimulationError(Exception):
    """The simulation could not be run (cluster, database, run folder); the message says why."""


@dataclass
class Outage:
    """One time a site was taken down by the scenario (unix times; `up` None: never came back)."""

    site_id: str
    began: float  # the signal was about to be sent
    gone: float  # the process had exited
    up: float | None = None  # serving again (the runner's health check saw it)
    # The restart began (the new process spawned): it registers, and central may route to it,
    # a little before the runner's health check sees it serving.
    restarting: float | None = None


@dataclass
class AppliedEvent:
    spec: EventSpec
    at: float  # unix time the runner applied it
    error: str = ""
    # kill_central_leader: seconds from the kill until etcd named a new leader.
    takeover_s: float | None = None


# -- the run folder and the province -----------------------------------------------------------------


def prepare_run_dir(run_dir: Path) -> Path:
    """A clean run folder; refuse to wipe one `vcc simulate` did not make, or one whose cluster runs."""
    run = run_dir.resolve()
    if run.exists():
        running = [p.name for p in read_state(run) if p.alive()]
        if running:
            raise SimulationError(f"a cluster still runs in {run}: `vcc cluster down --run-dir {run}` first")
        if any(run.iterdir()) and not (run / MARKER).exists():
            raise SimulationError(
                f"{run} is not empty and was not made by `vcc simulate`: choose another --run-dir"
            )
        shutil.rmtree(run)
    run.mkdir(parents=True)
    (run / MARKER).write_text("made by vcc simulate; wiped at each start\n", encoding="utf-8")
    (run / "outbox").mkdir()
    return run


def province_for(scenario: Scenario, run: Path, database_url: str) -> dict[str, Any]:
    """The province config dict of a scenario (routing passed through to the sites)."""
    specs = [
        SiteSpec(
            s.id, s.id, trunk_channels=s.trunk_channels, agents=dict(s.agents), tie_channels=s.tie_channels
        )
        for s in scenario.sites
    ]
    raw = generate_province(
        specs,
        etcd_endpoint="127.0.0.1:2379",  # replaced by the cluster's own etcd
        central_listen=f"127.0.0.1:{free_port()}",
        database_url=database_url,
        outbox_dir=run / "outbox",
        password=DEFAULT_PASSWORD,
        wrap_up_s=scenario.wrap_up_s,
        # Robots answer after ring_delay_s: the ring timeout must leave them room to.
        ring_timeout_s=max(5.0, 3.0 * scenario.ring_delay_s + 1.0),
        # Central's operations dashboard, to watch the run (its URL is in the report).
        dashboard_listen=f"127.0.0.1:{free_port()}",
    )
    routing: dict[str, Any] = {"mode": scenario.routing.mode}
    if scenario.routing.after_s is not None:
        routing["overflow_after_s"] = scenario.routing.after_s
    raw["routing"] = routing
    return raw


@contextlib.asynccontextmanager
async def central_database(scenario: Scenario, run: Path) -> AsyncIterator[tuple[str, PostgresServer | None]]:
    """The database URL for central: SQLite in the run folder, or a temporary PostgreSQL server."""
    if scenario.central.database == "sqlite":
        yield f"sqlite+aiosqlite:///{run / 'central.db'}", None
        return
    try:
        server = await asyncio.to_thread(start_temporary)
    except (RuntimeError, OSError) as exc:
        raise SimulationError(f"central.database postgresql: the server did not start: {exc}") from None
    try:
        url = await create_database(server, prefix="vcc_sim")
        yield url, server
    finally:
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(shutil.rmtree, server.root.parent, True)


@contextlib.contextmanager
def log_to(path: Path | None) -> Iterator[None]:
    """On the command line, our own warnings (robots, callers) go to a file, not under the progress bar."""
    if path is None:
        yield
        return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        handler.close()


@contextlib.asynccontextmanager
async def open_run(
    scenario: Scenario,
    run_dir: Path,
    *,
    partitionable: Sequence[str] | None = None,
    log_file: str | None = None,
) -> AsyncIterator[ScenarioRun]:
    """The scenario's cluster, running in a fresh `run_dir`; stopped (robots, proxies, processes,
    database) on the way out.

    `partitionable`: the sites that dial the province through fault proxies (default: those the
    scenario partitions). `log_file`: our own log records go to that file of the run folder.
    """
    run = await asyncio.to_thread(prepare_run_dir, run_dir)
    with log_to(run / log_file if log_file else None):
        async with central_database(scenario, run) as (database_url, pg):
            # The password hash is deliberately slow: off the event loop.
            raw = await asyncio.to_thread(province_for, scenario, run, database_url)
            config_path = await asyncio.to_thread(write_province, raw, run / "scenario-province.yaml")
            cut = list(partitionable) if partitionable is not None else scenario.partitioned_sites()
            proxies: ProxyProcess | None = None
            wan = scenario.wan.to_wan() if scenario.wan is not None else None
            try:
                if cut or wan is not None:
                    cluster, proxies = await start_with_fault_proxies(
                        config_path,
                        run,
                        partitionable=cut,
                        seed_customers=SEED_CUSTOMERS,
                        central_replicas=scenario.central.replicas,
                        wan=wan,
                    )
                else:
                    cluster = await Cluster.start(
                        config_path,
                        run,
                        seed_customers=SEED_CUSTOMERS,
                        central_replicas=scenario.central.replicas,
                    )
            except (ClusterError, ConfigError) as exc:
                raise SimulationError(str(exc)) from None
            try:
                async with cluster:
                    scenario_run = ScenarioRun(scenario, cluster, raw, pg, proxies)
                    try:
                        yield scenario_run
                    finally:
                        await scenario_run.stop_robots()
            finally:
                if proxies is not None:
                    await proxies.stop()


# -- the run ----------------------------------------------------------------------------------------


class ScenarioRun:
    """A scenario on its running cluster: robots, callers, fault events, and what each side saw."""

    def __init__(
        self,
        scenario: Scenario,
        cluster: Cluster,
        raw: Mapping[str, Any],
        database: PostgresServer | None = None,
        proxies: ProxyProcess | None = None,
    ) -> None:
        self.scenario = scenario
        self.cluster = cluster
        self.raw = raw
        self.database = database
        self.proxies = proxies
        self.views: list[CallerView] = []
        self.outages: list[Outage] = []
        self.applied: list[AppliedEvent] = []
        self.traffic_start = 0.0
        self._robots_stop = asyncio.Event()
        self._robots: dict[str, asyncio.Task[RobotStats]] = {}
        self._robot_stats: dict[str, RobotStats] | None = None

    @property
    def sites(self) -> Mapping[str, str]:
        return self.cluster.addresses.sites

    # -- robots and callers

    async def start_robots(self) -> None:
        """One robot per agent of every site, as the scenario says; returns once all are READY."""
        scenario = self.scenario
        policy = RobotPolicy(
            answer_delay_s=scenario.ring_delay_s,
            handle_time_mean_s=scenario.handle_time.mean_s,
            handle_distribution=scenario.handle_time.distribution,
            wrap_up="site_timer",  # the site's wrap_up_s timer returns the agent to READY
            seed=scenario.seed,
        )
        self._robots = {
            site_id: asyncio.create_task(
                run_robots(
                    address,
                    [(c, DEFAULT_PASSWORD) for c in agent_codes(self.raw, site_id)],
                    _with_transfers(policy, scenario, site_id),
                    self._robots_stop,
                    site_id=site_id,
                )
            )
            for site_id, address in self.sites.items()
        }
        await self._wait_agents_ready()

    async def _wait_agents_ready(self) -> None:
        """Until every robot is READY, so that the first calls meet the full team (bounded)."""
        agents = self.scenario.agents_per_site()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_S
        while True:
            summaries = await site_summaries(self.sites, deadline_s=2.0)
            ready = {
                s: (0 if isinstance(v, str) else int(v.agents_by_state.get("READY", 0)))
                for s, v in summaries.items()
            }
            if all(ready[s] >= agents[s] for s in self.sites):
                return
            if loop.time() > deadline:
                raise SimulationError(
                    f"robot agents not ready after {READY_TIMEOUT_S:.0f}s: ready {ready}, want {dict(agents)}"
                )
            await asyncio.sleep(0.2)

    def begin_traffic(self) -> float:
        """The moment traffic starts (event times count from it); returned and kept."""
        self.traffic_start = time.time()
        return self.traffic_start

    async def offer_traffic(self) -> None:
        """One caller generator per site (each with its own IVR digits), all started together; every
        caller's view is appended to `views` as its call ends."""
        scenario, cluster = self.scenario, self.cluster
        plans = [
            TrafficPlan(
                [SiteLoad(s.id, cluster.addresses.sites[s.id], s.arrival_rate_per_s)],
                scenario.traffic_s,
                seed=scenario.seed,
                dnis=cluster.config.province.service_number,
                digits=_digits(self.raw, s.id, s.agents),
                patience_mean_s=scenario.patience.mean_s if scenario.patience else None,
                patience_distribution=scenario.patience.distribution if scenario.patience else "exponential",
                customers=CALLER_PHONES,
                unknown_caller_share=0.0,
                # The exchange asks central where to deliver a call whose city is down (pre-routing):
                # a killed site's new callers are served elsewhere, not refused until it is back.
                central_address=cluster.config.central.listen,
                central_addresses=tuple(
                    cluster.replica_address(str(n)) for n in range(1, cluster.central_replicas + 1)
                ),
            )
            for s in scenario.sites
        ]
        # One journal per site in the run folder: every caller's view, for a look after the run.
        await asyncio.gather(
            *(
                run_traffic(
                    plan,
                    journal=cluster.run_dir / f"calls-{plan.loads[0].site_id}.jsonl",
                    on_call=self.views.append,
                    drain_timeout_s=DRAIN_TIMEOUT_S,
                )
                for plan in plans
            )
        )

    # -- fault events

    async def apply_events(self) -> None:
        """The scenario's events, each at its time after `begin_traffic`, one after the other."""
        for spec in sorted(self.scenario.events, key=lambda e: e.at_s):
            delay = self.traffic_start + spec.at_s - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.apply(spec)

    async def apply(self, spec: EventSpec) -> AppliedEvent:
        """Apply one event now; it is recorded in `applied`, with the error if it failed."""
        applied = AppliedEvent(spec, time.time())
        self.applied.append(applied)
        try:
            await self._apply(spec, applied)
        except (ClusterError, ConfigError, RuntimeError, OSError) as exc:
            applied.error = str(exc)
        return applied

    async def _apply(self, spec: EventSpec, applied: AppliedEvent) -> None:
        cluster = self.cluster
        if spec.action == "kill_site":
            assert spec.site is not None
            began = time.time()
            await cluster.kill_site(spec.site)
            self.outages.append(Outage(spec.site, began, time.time()))
        elif spec.action == "restart_site":
            assert spec.site is not None
            outage = next((o for o in self.outages if o.site_id == spec.site and o.up is None), None)
            if outage is None:  # restarting a live site: a graceful stop, then a start
                began = time.time()
                await cluster.stop_site(spec.site)
                outage = Outage(spec.site, began, time.time())
                self.outages.append(outage)
            outage.restarting = time.time()
            await cluster.start_site(spec.site)
            outage.up = time.time()
        elif spec.action == "kill_central_leader":
            old = await cluster.kill_central_leader()
            killed = time.time()
            new = await cluster.wait_central_leader(newer_than=old.epoch, timeout_s=LEADER_TIMEOUT_S)
            applied.takeover_s = round(time.time() - killed, 3)
            logging.getLogger(__name__).info(
                "central leader %s killed; replica %s leads (epoch %d)",
                old.replica_id,
                new.replica_id,
                new.epoch,
            )
        elif spec.action == "stop_database":
            assert self.database is not None  # validation refuses database events without PostgreSQL
            await asyncio.to_thread(self.database.stop)
        elif spec.action == "start_database":
            assert self.database is not None
            await asyncio.to_thread(self.database.start)
        elif spec.action in ("partition_site", "heal_site"):
            assert spec.site is not None and self.proxies is not None  # proxies for every cut site
            try:
                if spec.action == "partition_site":
                    await self.proxies.cut(spec.site, silent=spec.cut == "silent")
                else:
                    await self.proxies.heal(spec.site)
            except FaultProxyError as exc:
                raise RuntimeError(str(exc)) from None
        else:  # validation refuses the others; never silently skip one
            raise RuntimeError(f"{spec.action}: not supported yet")

    # -- what central recorded

    async def wait_outboxes(self) -> None:
        """Until every live site has shipped its records to central (bounded)."""
        wanted = {s: a for s, a in self.sites.items() if self.cluster.site_alive(s)}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + OUTBOX_TIMEOUT_S
        while loop.time() < deadline and wanted:
            summaries = await site_summaries(wanted, deadline_s=2.0)
            if all(not isinstance(v, str) and v.outbox_pending == 0 for v in summaries.values()):
                return
            await asyncio.sleep(0.5)

    async def central_records(
        self, views: Sequence[CallerView] | None = None
    ) -> list[central_pb2.CallRecord] | None:
        """Central's records (None: unreadable), fetched again for a short while if a call of
        `views` (default: all) that ended is not there yet."""
        wanted = self.views if views is None else views
        ended = {v.call_id for v in wanted if v.outcome in ENDED and v.call_id}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECORDS_TIMEOUT_S
        records: list[central_pb2.CallRecord] | None = None
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                records = await list_call_records(self.cluster.addresses.central)
            if records is not None and ended <= {r.call_id for r in records if r.outcome}:
                return records
            if loop.time() > deadline:
                return records
            await asyncio.sleep(1.0)

    async def stop_robots(self) -> dict[str, RobotStats]:
        """Stop the robots (once); each site's robot counts (a site whose robots failed has none)."""
        if self._robot_stats is not None:
            return self._robot_stats
        self._robots_stop.set()
        robots = self._robots
        done, pending = (
            await asyncio.wait(robots.values(), timeout=ROBOTS_STOP_S) if robots else (set(), set())
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._robot_stats = {
            site_id: task.result()
            for site_id, task in robots.items()
            if task in done and not task.cancelled() and task.exception() is None
        }
        return self._robot_stats

    async def collect(self) -> tuple[list[central_pb2.CallRecord] | None, dict[str, RobotStats]]:
        """At the end: every live outbox drained, central's records, then the robots stopped."""
        try:
            await self.wait_outboxes()
            records = await self.central_records()
        finally:
            stats = await self.stop_robots()
        return records, stats


def _digits(raw: Mapping[str, Any], site_id: str, agents: Mapping[str, int]) -> list[tuple[str, float]]:
    """Callers press each skill group's digit in proportion to the site's agents of that group."""
    site = next(s for s in raw["sites"] if s["id"] == site_id)
    by_group = {c["skill_group"]: c["digit"] for c in site["ivr"]["choices"]}
    weighted = [(by_group[g], float(n)) for g, n in agents.items() if g in by_group and n > 0]
    return weighted or [(site["ivr"]["choices"][0]["digit"], 1.0)]


def _with_transfers(policy: RobotPolicy, scenario: Scenario, site_id: str) -> RobotPolicy:
    """The scenario's `transfers`: to a skill group here (local) or at another city (remote)."""
    spec = scenario.transfers
    if spec.probability <= 0:
        return policy
    if spec.to == "local":
        own = next(s for s in scenario.sites if s.id == site_id)
        targets = tuple((skill, "") for skill in own.agents)
    else:
        targets = tuple((skill, s.id) for s in scenario.sites if s.id != site_id for skill in s.agents)
    return dataclasses.replace(
        policy, transfer_probability=spec.probability, transfer_kind=spec.kind, transfer_targets=targets
    )
