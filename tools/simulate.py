"""`vcc simulate SCENARIO.yaml --report REPORT.json`: a scenario on a real local cluster (SPEC §6).

The runner builds the scenario's province (one site node process per site, central on SQLite in the
run folder or on a temporary PostgreSQL server), starts it with etcd, logs robot agents in at every
site, offers Poisson traffic at every site's trunk, applies the fault events at their times, and
measures everything from the callers' side (tools/report.py), reconciled with central's records.

Fault attribution (from the callers' views and the moments the runner took a site down and up):
- lost_on_failed_site: a call whose stream broke, entering at a site that went down while the call
  was up (offered before the site was gone, broken after the kill began);
- refused_by_failed_site: a call that never reached its site (no call id) because the site was
  down, or because the trunk's connection to it was still reconnecting shortly after it came back;
- every other lost or failed call is lost_elsewhere, and makes the run unclean (exit code 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import itertools
import json
import logging
import math
import shutil
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tools import invariants
from tools.chaos import start_with_fault_proxies
from tools.cluster import Cluster, ClusterError, read_state
from tools.demo import list_call_records
from tools.faultproxy import FaultProxyError, ProxyProcess
from tools.netutil import free_port
from tools.postgres_server import PostgresServer, create_database, start_temporary
from tools.province_gen import DEFAULT_PASSWORD, SiteSpec, agent_codes, generate_province, write_province
from tools.report import build_report, render_table
from tools.robots import RobotPolicy, RobotStats, run_robots
from tools.scenario import EventSpec, Scenario
from tools.status import site_summaries
from tools.traffic import CallerView, SiteLoad, TrafficPlan, run_traffic
from vcc.config import ConfigError
from vcc.v1 import central_pb2

MARKER = ".vcc-simulate"
DEFAULT_RUN_DIR = Path("run/simulate")
SEED_CUSTOMERS = 100
# Callers ring from this many known customer phones: the sites' screen-pop look-ups then hit their
# cache after the first calls (the warm-up), so that a look-up at central does not hold a call back
# from ringing a free agent and the measured waiting is the queue's, comparable with Erlang C.
CALLER_PHONES = 20
READY_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 30.0
OUTBOX_TIMEOUT_S = 30.0
RECORDS_TIMEOUT_S = 15.0
# After a site is back, the trunk's gRPC connection may still be in its reconnect back-off: calls
# that could not reach the site in this window are refused by the failed site, not lost elsewhere.
RECONNECT_GRACE_S = 10.0
# After the central leader is killed, how long another replica may take to lead.
LEADER_TIMEOUT_S = 30.0
PROGRESS_EVERY_S = 0.25
_ENDED = frozenset({"answered", "abandoned", "blocked", "failed"})


class SimulationError(Exception):
    """The simulation could not be run (cluster, database, run folder); the message says why."""


@dataclass
class Outage:
    """One time a site was taken down by the scenario (unix times; `up` None: never came back)."""

    site_id: str
    began: float  # the signal was about to be sent
    gone: float  # the process had exited
    up: float | None = None


@dataclass
class AppliedEvent:
    spec: EventSpec
    at: float  # unix time the runner applied it
    error: str = ""
    # kill_central_leader: seconds from the kill until etcd named a new leader.
    takeover_s: float | None = None


@dataclass
class SimulationResult:
    report: dict[str, object]
    problems: list[str]

    @property
    def clean(self) -> bool:
        return not self.problems


@dataclass
class _Run:
    scenario: Scenario
    cluster: Cluster
    raw: dict[str, Any]
    database: PostgresServer | None
    proxies: ProxyProcess | None = None
    views: list[CallerView] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    applied: list[AppliedEvent] = field(default_factory=list)


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


# -- the run ----------------------------------------------------------------------------------------


async def simulate(
    scenario: Scenario,
    run_dir: Path = DEFAULT_RUN_DIR,
    *,
    console: Console | None = None,
    before_stop: Callable[[SimulationResult], Awaitable[None]] | None = None,
) -> SimulationResult:
    """Run the scenario on a real local cluster; the report and the reasons it is not clean.

    `before_stop` is awaited with the result while the cluster still runs (every outbox drained):
    to read central's dashboard (`report["dashboard_url"]`), for instance.
    """
    run = await asyncio.to_thread(prepare_run_dir, run_dir)
    say = _sayer(console)
    with _log_to(run / "simulate.log" if console is not None else None):
        return await _simulate(scenario, run, console, say, before_stop)


@contextlib.contextmanager
def _log_to(path: Path | None) -> Iterator[None]:
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


async def _simulate(
    scenario: Scenario,
    run: Path,
    console: Console | None,
    say: Callable[[str], None],
    before_stop: Callable[[SimulationResult], Awaitable[None]] | None = None,
) -> SimulationResult:
    async with central_database(scenario, run) as (database_url, pg):
        # The password hash is deliberately slow: off the event loop.
        raw = await asyncio.to_thread(province_for, scenario, run, database_url)
        config_path = await asyncio.to_thread(write_province, raw, run / "scenario-province.yaml")
        say(
            f"starting etcd, central ({scenario.central.database}) and {len(scenario.sites)} site(s) in {run}"
        )
        proxies: ProxyProcess | None = None
        try:
            partitioned = scenario.partitioned_sites()
            if partitioned:
                # The sites a scenario cuts dial the province through fault proxies (tools/faultproxy.py).
                say(f"fault proxies on every link of {', '.join(partitioned)}")
                cluster, proxies = await start_with_fault_proxies(
                    config_path, run, partitionable=partitioned, seed_customers=SEED_CUSTOMERS
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
                state = _Run(scenario, cluster, raw, pg, proxies)
                result = await _drive(state, console, say)
                if before_stop is not None:
                    await before_stop(result)
                return result
        finally:
            if proxies is not None:
                await proxies.stop()


async def _drive(state: _Run, console: Console | None, say: Callable[[str], None]) -> SimulationResult:
    scenario, cluster = state.scenario, state.cluster
    sites = cluster.addresses.sites
    robots_stop = asyncio.Event()
    robots = start_robots(state, sites, robots_stop)
    records: list[central_pb2.CallRecord] | None = None
    try:
        await _wait_agents_ready(sites, scenario.agents_per_site())
        agents = sum(scenario.agents_per_site().values())
        say(f"{agents} robot agents ready; traffic for {scenario.traffic_s:g}s")
        traffic_start = time.time()
        events = asyncio.create_task(_apply_events(state, traffic_start))
        try:
            await _with_progress(_offer_traffic(state), state, traffic_start, console)
        finally:
            if not events.done():
                events.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await events
        say(f"{len(state.views)} calls ended; waiting for the sites' outboxes and central's records")
        await _wait_outboxes(sites, [s for s in sites if cluster.site_alive(s)])
        records = await _fetch_records(cluster.addresses.central, state.views)
    finally:
        robots_stop.set()
        stats = await _stop_robots(robots)
    return _result(state, traffic_start, records, stats)


async def _wait_agents_ready(sites: Mapping[str, str], agents: Mapping[str, int]) -> None:
    """Until every robot is READY, so that the first calls meet the full team (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT_S
    while True:
        summaries = await site_summaries(sites, deadline_s=2.0)
        ready = {
            s: (0 if isinstance(v, str) else int(v.agents_by_state.get("READY", 0)))
            for s, v in summaries.items()
        }
        if all(ready[s] >= agents[s] for s in sites):
            return
        if loop.time() > deadline:
            raise SimulationError(
                f"robot agents not ready after {READY_TIMEOUT_S:.0f}s: ready {ready}, want {dict(agents)}"
            )
        await asyncio.sleep(0.2)


def _digits(raw: Mapping[str, Any], site_id: str, agents: Mapping[str, int]) -> list[tuple[str, float]]:
    """Callers press each skill group's digit in proportion to the site's agents of that group."""
    site = next(s for s in raw["sites"] if s["id"] == site_id)
    by_group = {c["skill_group"]: c["digit"] for c in site["ivr"]["choices"]}
    weighted = [(by_group[g], float(n)) for g, n in agents.items() if g in by_group and n > 0]
    return weighted or [(site["ivr"]["choices"][0]["digit"], 1.0)]


async def _offer_traffic(state: _Run) -> None:
    """One caller generator per site (each with its own IVR digits), all started together."""
    scenario, cluster = state.scenario, state.cluster
    plans = [
        TrafficPlan(
            [SiteLoad(s.id, cluster.addresses.sites[s.id], s.arrival_rate_per_s)],
            scenario.traffic_s,
            seed=scenario.seed,
            dnis=cluster.config.province.service_number,
            digits=_digits(state.raw, s.id, s.agents),
            patience_mean_s=scenario.patience.mean_s if scenario.patience else None,
            patience_distribution=scenario.patience.distribution if scenario.patience else "exponential",
            customers=CALLER_PHONES,
            unknown_caller_share=0.0,
            # The exchange asks central where to deliver a call whose city is down (pre-routing):
            # a killed site's new callers are served elsewhere, not refused until it is back.
            central_address=cluster.config.central.listen,
        )
        for s in scenario.sites
    ]
    # One journal per site in the run folder: every caller's view, for a look after the run.
    await asyncio.gather(
        *(
            run_traffic(
                plan,
                journal=cluster.run_dir / f"calls-{plan.loads[0].site_id}.jsonl",
                on_call=state.views.append,
                drain_timeout_s=DRAIN_TIMEOUT_S,
            )
            for plan in plans
        )
    )


async def _with_progress(work: Any, state: _Run, traffic_start: float, console: Console | None) -> None:
    """Await `work` under a progress bar of traffic time (on stderr; none without a console)."""
    if console is None:
        await work
        return
    total = state.scenario.traffic_s
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:>6.1f}/{task.total:g}s"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[calls]}"),
    )
    task_work = asyncio.ensure_future(work)
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("traffic", total=total, calls="")
        while not task_work.done():
            elapsed = min(total, time.time() - traffic_start)
            ended = len(state.views)
            lost = sum(1 for v in state.views if v.outcome in ("lost", "failed"))
            label = "traffic" if elapsed < total else "draining"
            events = len(state.scenario.events)
            bar.update(
                task,
                completed=elapsed,
                description=label,
                calls=f"calls ended {ended}, lost {lost}, events {len(state.applied)}/{events}",
            )
            await asyncio.wait({task_work}, timeout=PROGRESS_EVERY_S)
        bar.update(task, completed=total, description="done")
    task_work.result()


# -- fault events -----------------------------------------------------------------------------------


async def _apply_events(state: _Run, traffic_start: float) -> None:
    """Each event at its time after the start of traffic, one after the other (a restart takes a while)."""
    for spec in sorted(state.scenario.events, key=lambda e: e.at_s):
        delay = traffic_start + spec.at_s - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        applied = AppliedEvent(spec, time.time())
        state.applied.append(applied)
        try:
            await _apply(state, spec, applied)
        except (ClusterError, ConfigError, RuntimeError, OSError) as exc:
            applied.error = str(exc)


async def _apply(state: _Run, spec: EventSpec, applied: AppliedEvent | None = None) -> None:
    cluster = state.cluster
    if spec.action == "kill_site":
        assert spec.site is not None
        began = time.time()
        await cluster.kill_site(spec.site)
        state.outages.append(Outage(spec.site, began, time.time()))
    elif spec.action == "restart_site":
        assert spec.site is not None
        outage = next((o for o in state.outages if o.site_id == spec.site and o.up is None), None)
        if outage is None:  # restarting a live site: a graceful stop, then a start
            began = time.time()
            await cluster.stop_site(spec.site)
            outage = Outage(spec.site, began, time.time())
            state.outages.append(outage)
        await cluster.start_site(spec.site)
        outage.up = time.time()
    elif spec.action == "kill_central_leader":
        old = await cluster.kill_central_leader()
        killed = time.time()
        new = await cluster.wait_central_leader(newer_than=old.epoch, timeout_s=LEADER_TIMEOUT_S)
        if applied is not None:
            applied.takeover_s = round(time.time() - killed, 3)
        logging.getLogger(__name__).info(
            "central leader %s killed; replica %s leads (epoch %d)", old.replica_id, new.replica_id, new.epoch
        )
    elif spec.action == "stop_database":
        assert state.database is not None  # validation refuses database events without PostgreSQL
        await asyncio.to_thread(state.database.stop)
    elif spec.action == "start_database":
        assert state.database is not None
        await asyncio.to_thread(state.database.start)
    elif spec.action in ("partition_site", "heal_site"):
        assert spec.site is not None and state.proxies is not None  # proxies for every cut site
        try:
            if spec.action == "partition_site":
                await state.proxies.cut(spec.site, silent=spec.cut == "silent")
            else:
                await state.proxies.heal(spec.site)
        except FaultProxyError as exc:
            raise RuntimeError(str(exc)) from None
    else:  # validation refuses the others; never silently skip one
        raise RuntimeError(f"{spec.action}: not supported yet")


def classify_faults(
    views: Sequence[CallerView], outages: Sequence[Outage], run_end: float
) -> tuple[set[str], set[str]]:
    """(lost_on_failed_site, refused_by_failed_site): CallerView keys (see the module docstring)."""
    on_failed: set[str] = set()
    refused: set[str] = set()
    for view in views:
        if view.outcome != "lost":
            continue
        broke = view.ended_at if view.ended_at is not None else run_end
        for outage in outages:
            if outage.site_id != view.entry_site_id:
                continue
            back = (outage.up if outage.up is not None else run_end) + RECONNECT_GRACE_S
            # Accepted or still seizing its trunk when the site went: either way it was on that site.
            if view.offered_at <= outage.gone and broke >= outage.began:
                on_failed.add(view.key)
                break
            if not view.call_id and outage.began <= view.offered_at <= back:
                refused.add(view.key)
                break
    return on_failed, refused


def event_rows(
    views: Sequence[CallerView],
    applied: Sequence[AppliedEvent],
    *,
    traffic_start: float,
    traffic_end: float,
    on_failed: set[str],
    refused: set[str],
) -> list[dict[str, object]]:
    """SPEC's events[]: at_s, action, target, service_gap_s, calls_lost (plus a few diagnostics).

    service_gap_s: the longest stretch, from the event to the next one (or the end of traffic), in
    which no call of the affected site (its city's callers, wherever pre-routing delivered them;
    every call for a province-wide event) was answered.
    calls_answered: calls of the affected site answered in that same stretch (the service the
    gap is measured against: a gap with none answered runs to the end of the stretch).
    calls_lost: calls whose stream broke from this event until the next one (or the end).
    """
    rows: list[dict[str, object]] = []
    ordered = sorted(applied, key=lambda a: a.at)
    for i, event in enumerate(ordered):
        target = event.spec.site
        until = ordered[i + 1].at if i + 1 < len(ordered) else math.inf
        answers = sorted(
            v.answered_at
            for v in views
            if v.answered_at is not None
            and v.answered_at >= event.at
            and (target is None or (v.home_site_id or v.entry_site_id) == target)
        )
        # Up to the next event: what happens after it is that event's gap.
        end = min(until, traffic_end)
        marks = [event.at, *(a for a in answers if a <= end), end]
        gap = max((b - a for a, b in itertools.pairwise(marks)), default=0.0)
        broken = [
            v
            for v in views
            if v.outcome == "lost" and v.ended_at is not None and event.at <= v.ended_at < until
        ]
        rows.append(
            {
                "at_s": event.spec.at_s,
                "applied_at_s": round(event.at - traffic_start, 3),
                "action": event.spec.action,
                "target": target or ("database" if "database" in event.spec.action else "province"),
                "service_gap_s": round(max(0.0, gap), 3),
                "calls_answered": sum(1 for a in answers if a <= end),
                "calls_lost": sum(1 for v in broken if v.key not in refused),
                "calls_lost_on_failed_site": sum(1 for v in broken if v.key in on_failed),
                "calls_refused": sum(1 for v in broken if v.key in refused),
                "error": event.error,
                **({"takeover_s": event.takeover_s} if event.takeover_s is not None else {}),
            }
        )
    return rows


# -- the end ----------------------------------------------------------------------------------------


async def _wait_outboxes(sites: Mapping[str, str], live: Sequence[str]) -> None:
    """Until every live site has shipped its records to central (bounded)."""
    wanted = {s: sites[s] for s in live}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + OUTBOX_TIMEOUT_S
    while loop.time() < deadline and wanted:
        summaries = await site_summaries(wanted, deadline_s=2.0)
        if all(not isinstance(v, str) and v.outbox_pending == 0 for v in summaries.values()):
            return
        await asyncio.sleep(0.5)


async def _fetch_records(central: str, views: Sequence[CallerView]) -> list[central_pb2.CallRecord] | None:
    """Central's records, fetched again for a short while if some ended call is not there yet."""
    ended = {v.call_id for v in views if v.outcome in _ENDED and v.call_id}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECORDS_TIMEOUT_S
    records: list[central_pb2.CallRecord] | None = None
    while True:
        with contextlib.suppress(grpc.aio.AioRpcError):
            records = await list_call_records(central)
        if records is not None and ended <= {r.call_id for r in records if r.outcome}:
            return records
        if loop.time() > deadline:
            return records
        await asyncio.sleep(1.0)


async def _stop_robots(robots: Mapping[str, asyncio.Task[RobotStats]]) -> dict[str, RobotStats]:
    done, pending = await asyncio.wait(robots.values(), timeout=15.0) if robots else (set(), set())
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return {
        site_id: task.result()
        for site_id, task in robots.items()
        if task in done and not task.cancelled() and task.exception() is None
    }


def start_robots(
    state: _Run, sites: Mapping[str, str], stop: asyncio.Event
) -> dict[str, asyncio.Task[RobotStats]]:
    """One robot per agent of every site, behaving as the scenario says, until `stop` is set."""
    scenario = state.scenario
    policy = RobotPolicy(
        answer_delay_s=scenario.ring_delay_s,
        handle_time_mean_s=scenario.handle_time.mean_s,
        handle_distribution=scenario.handle_time.distribution,
        wrap_up="site_timer",  # the site's wrap_up_s timer returns the agent to READY
        seed=scenario.seed,
    )
    return {
        site_id: asyncio.create_task(
            run_robots(
                address,
                [(c, DEFAULT_PASSWORD) for c in agent_codes(state.raw, site_id)],
                _with_transfers(policy, scenario, site_id),
                stop,
            )
        )
        for site_id, address in sites.items()
    }


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


def _result(
    state: _Run,
    traffic_start: float,
    records: list[central_pb2.CallRecord] | None,
    stats: Mapping[str, RobotStats],
) -> SimulationResult:
    scenario = state.scenario
    traffic_end = traffic_start + scenario.traffic_s
    on_failed, refused = classify_faults(state.views, state.outages, time.time())
    report = build_report(
        state.views,
        service_level_threshold_s=scenario.service_level_threshold_s,
        warmup_s=scenario.warmup_s,
        traffic_start=traffic_start,
        duration_s=scenario.duration_s,
        agents_per_site=scenario.agents_per_site(),
        # Erlang C's handle time is what a call costs an agent: ringing, talk and wrap-up.
        mean_handle_s=scenario.handle_time.mean_s + scenario.ring_delay_s + scenario.wrap_up_s,
        central_records=records,
        events=event_rows(
            state.views,
            state.applied,
            traffic_start=traffic_start,
            traffic_end=traffic_end,
            on_failed=on_failed,
            refused=refused,
        ),
        lost_on_failed_site=on_failed,
        refused_by_failed_site=refused,
    )
    report["engine"] = "real"
    report["scenario"] = scenario.model_dump(mode="json")
    report["robots"] = {site_id: dataclasses.asdict(s) for site_id, s in stats.items()}
    report["transfers"] = {
        "attempted": sum(s.transfers_attempted for s in stats.values()),
        "completed": sum(s.transfers_completed for s in stats.values()),
        "cross_site": sum(s.transfers_cross_site for s in stats.values()),
        "failed": sum(s.transfers_failed for s in stats.values()),
    }
    report["run_dir"] = str(state.cluster.run_dir)
    dashboard = state.cluster.config.central.dashboard_listen
    report["dashboard_url"] = f"http://{dashboard}/" if dashboard else None
    # Calls the exchange delivered to another city than the caller's (its city was down), by city.
    report["pre_routed"] = dict(
        sorted(Counter(v.home_site_id for v in state.views if v.home_site_id != v.entry_site_id).items())
    )
    problems = verdict(report, state.views, on_failed | refused, state.applied)
    if records is not None:
        kept = invariants.check(state.views, records)
        report["invariants"] = kept
        problems += invariants.broken(kept)
    report["clean"] = not problems
    report["problems"] = problems
    return SimulationResult(report, problems)


def verdict(
    report: Mapping[str, object],
    views: Sequence[CallerView],
    excused: set[str],
    applied: Sequence[AppliedEvent] = (),
) -> list[str]:
    """Why the run is not clean: calls lost elsewhere (warm-up included), reconciliation, events."""
    problems: list[str] = []
    lost = [v for v in views if v.outcome in ("lost", "failed") and v.key not in excused]
    if lost:
        errors = sorted({v.error or v.reason or v.outcome for v in lost})[:3]
        problems.append(f"{len(lost)} calls lost elsewhere (e.g. {'; '.join(errors)})")
    reconciliation = report.get("reconciliation")
    if not isinstance(reconciliation, Mapping):
        problems.append("central's call records could not be read")
    else:
        bad = {
            k: reconciliation.get(k) for k in ("missing", "duplicated", "mismatched") if reconciliation.get(k)
        }
        if bad:
            problems.append("reconciliation with central: " + ", ".join(f"{k} {v}" for k, v in bad.items()))
    problems += [f"event {a.spec.action} at {a.spec.at_s:g}s failed: {a.error}" for a in applied if a.error]
    return problems


# -- entry point ------------------------------------------------------------------------------------


def _sayer(console: Console | None) -> Callable[[str], None]:
    def say(text: str) -> None:
        if console is not None:
            console.print(text, highlight=False)

    return say


def write_report(report: Mapping[str, object], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")


def run_simulation(
    scenario: Scenario, report_path: Path | None, run_dir: Path = DEFAULT_RUN_DIR, *, engine: str = "real"
) -> int:
    """The CLI's work: run, print the table, write the JSON; 0 when clean, 1 when not."""
    console = Console(stderr=True)
    try:
        if engine == "model":
            report: dict[str, object] = dict(model_engine()(scenario))
            problems = model_problems(report)
        else:
            result = asyncio.run(simulate(scenario, run_dir, console=console))
            report, problems = result.report, result.problems
    except SimulationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(render_table(report), flush=True)
    if report_path is not None:
        write_report(report, report_path)
        print(f"report written to {report_path}", flush=True)
    for problem in problems:
        print(f"NOT CLEAN: {problem}", flush=True)
    if not problems:
        print(
            "clean: no call lost elsewhere" + (", reconciliation clean" if engine == "real" else ""),
            flush=True,
        )
    return 1 if problems else 0


def model_engine() -> Callable[[Scenario], Mapping[str, object]]:
    """`tools.model_engine.run_model` (virtual time, another engineer's work), if it is installed."""
    try:
        module = importlib.import_module("tools.model_engine")
    except ModuleNotFoundError as exc:
        if exc.name != "tools.model_engine":
            raise
        raise SimulationError(
            "the model engine (tools/model_engine.py) is not part of this installation yet"
        ) from None
    run_model: Callable[[Scenario], Mapping[str, object]] = module.run_model
    refusal: type[Exception] = getattr(module, "ModelError", SimulationError)

    def run(scenario: Scenario) -> Mapping[str, object]:
        try:
            return run_model(scenario)
        except refusal as exc:  # the scenario asks for something the model cannot do: say so
            raise SimulationError(f"--engine model: {exc}") from None

    return run


def model_problems(report: Mapping[str, object]) -> list[str]:
    totals = report.get("totals")
    lost = totals.get("lost_elsewhere") if isinstance(totals, Mapping) else None
    return [f"{lost} calls lost elsewhere"] if lost else []
