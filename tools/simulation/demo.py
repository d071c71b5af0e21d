"""`vcc demo`: a local province of three (or more) cities under load, with a report at the end.

Guangzhou (gz) gets far more calls than its agents can take, the other cities are lightly
loaded. Robot agents run in this process (asyncio tasks); callers too. The cluster (etcd, central on
SQLite, one site node per city) runs as separate processes from the run folder.

Ctrl-C once: stop offering calls, let the calls in flight end, report, stop the cluster.
Ctrl-C twice: cut the waiting short (calls still up are hung up), report what there is, stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from tools.province.cluster import Cluster, ClusterError, down, read_state
from tools.province.generate import (
    CITIES,
    DEFAULT_PASSWORD,
    DEMO_OPERATOR,
    DEMO_OPERATOR_PASSWORD,
    SiteSpec,
    agent_codes,
    desk_people,
    generate_province,
    write_province,
)
from tools.province.netutil import free_port
from tools.province.sip import add_sip
from tools.province.status import one_line, site_summaries
from tools.simulation.report import build_report, render_table
from tools.simulation.robots import RobotPolicy, RobotStats, run_robots
from tools.simulation.traffic import CallerView, SiteLoad, TrafficPlan, run_traffic
from vcc.config import ConfigError
from vcc.https import web_url
from vcc.rpc import channel
from vcc.tls import central_server
from vcc.v1 import central_pb2, central_pb2_grpc

T = TypeVar("T")

# The load: every city has AGENTS agents of one skill group; robots talk HANDLE_TIME_S on average
# (exponential) and skip wrap-up, so one city takes about AGENTS / HANDLE_TIME_S calls a second.
AGENTS = 4
HANDLE_TIME_S = 2.0
OVERLOADED_RATE_PER_S = 3.0  # gz: 150% of its agents' capacity, so its queue grows
LIGHT_RATE_PER_S = 0.8  # the others: 40%
OVERFLOW_AFTER_S = 2.0
PATIENCE_MEAN_S = 10.0  # callers hang up after this on average (exponential) if nobody answered
SERVICE_LEVEL_THRESHOLD_S = 2.0
SEED_CUSTOMERS = 1000
# Traffic is offered in slices, so that Ctrl-C stops new arrivals within a slice.
SLICE_S = 5.0
STATUS_EVERY_S = 5.0
# Bounds of the end of the demo.
DRAIN_TIMEOUT_S = 20.0
OUTBOX_TIMEOUT_S = 30.0
RECORDS_TIMEOUT_S = 15.0
RPC_DEADLINE_S = 5.0
MARKER = ".vcc-demo"


@dataclass(frozen=True)
class DemoOptions:
    duration_s: float | None = None
    summary_json: Path | None = None
    run_dir: Path = Path("run/demo")
    sites: int = 3
    seed: int = 42
    status_every_s: float = STATUS_EVERY_S


@dataclass
class _Progress:
    # Seconds of arrivals offered so far (slices are back to back from the start of traffic).
    arrivals_s: float = 0.0


@dataclass
class _Signals:
    """First Ctrl-C/SIGTERM: `stop`. Second: `hurry` (cut every bounded wait short)."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    hurry: asyncio.Event = field(default_factory=asyncio.Event)

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    def _on_signal(self) -> None:
        if self.stop.is_set():
            say("interrupted again: cutting the end short")
            self.hurry.set()
        else:
            say("stopping: no new calls; waiting for the calls in flight (Ctrl-C again to cut short)")
            self.stop.set()


def say(text: str) -> None:
    print(text, flush=True)


def demo_sites(count: int) -> list[SiteSpec]:
    if not 3 <= count <= len(CITIES):
        raise ValueError(f"the demo runs 3 to {len(CITIES)} cities")
    return [
        SiteSpec(
            site_id, name, trunk_channels=30 if i == 0 else 20, agents={"general": AGENTS}, tie_channels=10
        )
        for i, (site_id, name) in enumerate(CITIES[:count])
    ]


def arrival_rates(sites: Sequence[SiteSpec]) -> dict[str, float]:
    return {s.id: OVERLOADED_RATE_PER_S if i == 0 else LIGHT_RATE_PER_S for i, s in enumerate(sites)}


def prepare_run_dir(run_dir: Path) -> Path:
    """A clean run folder; refuse to wipe a folder the demo did not make, or one whose cluster runs."""
    run = run_dir.resolve()
    if run.exists():
        running = [p.name for p in read_state(run) if p.alive()]
        if running:
            raise ClusterError(f"a cluster still runs in {run}: `vcc cluster down --run-dir {run}` first")
        if any(run.iterdir()) and not (run / MARKER).exists():
            raise ClusterError(f"{run} is not empty and was not made by `vcc demo`: choose another --run-dir")
        shutil.rmtree(run)
    run.mkdir(parents=True)
    (run / MARKER).write_text("made by vcc demo; wiped at each start\n", encoding="utf-8")
    return run


def run_demo(options: DemoOptions) -> int:
    """The demo's exit code: 0 when every site answered calls and central holds every ended call."""
    try:
        return asyncio.run(demo(options))
    except (ClusterError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # A third Ctrl-C: make sure no process of ours outlives us.
        asyncio.run(down(options.run_dir))
        return 130


def prepare_province(options: DemoOptions) -> tuple[Path, dict[str, Any], dict[str, float], Path]:
    """The run folder, the generated province (raw and written), the arrival rate of each city."""
    run = prepare_run_dir(options.run_dir)
    specs = demo_sites(options.sites)
    say(f"generating a province of {len(specs)} cities in {run} ...")
    raw = generate_province(
        specs,
        etcd_endpoint="127.0.0.1:2379",  # replaced by the cluster's own etcd
        central_listen=f"127.0.0.1:{free_port()}",
        database_url=f"sqlite+aiosqlite:///{run / 'central.db'}",
        outbox_dir=run / "outbox",
        password=DEFAULT_PASSWORD,
        wrap_up_s=0.0,
        ring_timeout_s=5.0,
        # The overloaded city's callers are served by the others after a short wait there.
        routing={"mode": "overflow", "overflow_after_s": OVERFLOW_AFTER_S},
        dashboard_listen=f"127.0.0.1:{free_port()}",
        # A group leader and an agent per city for people at the desktop (robots leave them alone).
        people=True,
        desktop=True,
    )
    # Every city answers SIP too (its prompts are built in the run folder by the cluster).
    add_sip(raw, prompts_dir="prompts", language="zh")
    (run / "outbox").mkdir()
    return run, raw, arrival_rates(specs), write_province(raw, run / "province.yaml")


async def demo(options: DemoOptions) -> int:
    # Files and a deliberately slow password hash: off the event loop.
    run, raw, rates, config_path = await asyncio.to_thread(prepare_province, options)
    say("starting etcd, central and the site nodes ...")
    signals = _Signals()
    signals.install()
    try:
        async with await Cluster.start(config_path, run, seed_customers=SEED_CUSTOMERS) as cluster:
            _print_where_to_look(cluster, raw, rates)
            code = await _drive(cluster, raw, rates, options, signals)
            say("stopping the cluster ...")
        return code
    finally:
        signals.remove()


def _print_where_to_look(cluster: Cluster, raw: dict[str, Any], rates: dict[str, float]) -> None:
    addrs = cluster.addresses
    say("")
    say(f"province {cluster.config.province.name}, service number {cluster.config.province.service_number}")
    say(f"  run folder  {cluster.run_dir}")
    say(f"  config      {cluster.config_path}")
    say(f"  logs        {cluster.logs_dir}/ (etcd.log, central.log, site-<id>.log)")
    say(f"  etcd        {addrs.etcd}")
    say(f"  central     {addrs.central}   (SQLite {cluster.config.central.database_url})")
    dashboard = web_url(cluster.config, cluster.config.central.dashboard_listen)
    say(f"  dashboard   {dashboard}   (live, 中文/English)")
    say(f"              log in as operator {DEMO_OPERATOR}, password {DEMO_OPERATOR_PASSWORD}")
    for site in cluster.config.sites:
        codes = agent_codes(raw, site.id)
        load = rates[site.id] * HANDLE_TIME_S / max(1, len(codes))
        say(
            f"  site {site.id:<6} {site.listen:<21} {site.name}: agents {codes[0]}-{codes[-1]}, "
            f"{rates[site.id]:.1f} calls/s ({load:.0%} of its agents' capacity)"
        )
    for site in cluster.config.sites:
        if site.sip is not None:
            say(
                f"  phone {site.id:<5} baresip -f ~/.baresip-vcc -e "
                f"'/dial sip:{cluster.config.province.service_number}@{site.sip.listen}'"
                "   (SIP, its IVR answers; README: phoning the demo)"
            )
    if cluster.config.tls is not None:
        say(
            f"  web pages   HTTPS, certificates of the province CA {cluster.config.tls.ca_file}: "
            "import it in the browser as a trusted authority (README: the quick start)"
        )
    say(f"  agent password {DEFAULT_PASSWORD} (every agent; the robots are logged in as them)")
    for site in cluster.config.sites:
        if site.desktop_listen:
            people = desk_people(raw, site.id)
            base = web_url(cluster.config, site.desktop_listen, "")
            say(
                f"  desktop {site.id:<4} {base}/desk (agent {people.get('agent', '-')}), "
                f"{base}/console (group leader {people.get('group_leader', '-')}, "
                f"administrator {people.get('administrator', '-')}), {DEFAULT_PASSWORD}"
            )
    say(f"  live status: vcc status --config {cluster.config_path}")
    say("")


async def _drive(
    cluster: Cluster, raw: dict[str, Any], rates: dict[str, float], options: DemoOptions, signals: _Signals
) -> int:
    config = cluster.config
    addrs = cluster.addresses
    policy = RobotPolicy(handle_time_mean_s=HANDLE_TIME_S, wrap_up="immediate", seed=options.seed)
    robots_stop = asyncio.Event()
    robots = {
        site.id: asyncio.create_task(
            run_robots(
                site.listen,
                [(c, DEFAULT_PASSWORD) for c in agent_codes(raw, site.id)],
                policy,
                robots_stop,
                site_id=site.id,
            )
        )
        for site in config.sites
    }
    views: list[CallerView] = []
    traffic_start = time.time()
    progress = _Progress()
    duration_s = options.duration_s
    say(
        f"traffic for {duration_s:.0f}s" if duration_s is not None else "traffic until Ctrl-C",
    )
    if duration_s is not None:
        asyncio.get_running_loop().call_later(duration_s, signals.stop.set)
    slices = asyncio.create_task(
        _offer_traffic(
            config.province.service_number,
            addrs.sites,
            rates=rates,
            options=options,
            signals=signals,
            on_call=views.append,
            progress=progress,
        )
    )
    ticker = asyncio.create_task(_ticker(addrs.sites, views, traffic_start, options.status_every_s))
    try:
        await _first(slices, signals.hurry)
        arrivals_s = progress.arrivals_s
        say(f"{arrivals_s:.0f}s of arrivals; {len(views)} calls ended")
        await _wait_outboxes(addrs.sites, signals.hurry)
        records = await _fetch_records(addrs.central, views, signals.hurry)
    finally:
        ticker.cancel()
        slices.cancel()
        robots_stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        with contextlib.suppress(asyncio.CancelledError):
            await slices
        stats = await _stop_robots(robots)

    report = build_report(
        views,
        service_level_threshold_s=SERVICE_LEVEL_THRESHOLD_S,
        warmup_s=0.0,
        traffic_start=traffic_start,
        duration_s=max(arrivals_s, 1e-6),
        agents_per_site={s.id: len(agent_codes(raw, s.id)) for s in config.sites},
        mean_handle_s=HANDLE_TIME_S,
        central_records=records,
    )
    report["demo"] = {
        "sites": {
            s.id: {"name": s.name, "arrival_rate_per_s": rates[s.id], "agents": len(agent_codes(raw, s.id))}
            for s in config.sites
        },
        "robots": {site_id: dataclasses.asdict(st) for site_id, st in stats.items()},
        "run_dir": str(cluster.run_dir),
    }
    say("")
    say(render_table(report))
    if options.summary_json is not None:
        options.summary_json.parent.mkdir(parents=True, exist_ok=True)
        options.summary_json.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
        say(f"summary written to {options.summary_json}")
    return verdict(views, records, [s.id for s in config.sites])


def verdict(
    views: Sequence[CallerView], records: Sequence[central_pb2.CallRecord] | None, site_ids: Sequence[str]
) -> int:
    """0 when every site answered calls and central holds an ended record of every call that ended."""
    problems = []
    served = Counter(v.served_site_id for v in views if v.outcome == "answered")
    idle = [s for s in site_ids if served[s] == 0]
    if idle:
        problems.append(f"no call answered at {', '.join(idle)}")
    if records is None:
        problems.append("central's call records could not be read")
    else:
        at_central = {r.call_id for r in records if r.outcome}
        ended = [v.call_id for v in views if v.outcome in ("answered", "abandoned", "blocked", "failed")]
        missing = [c for c in ended if c not in at_central]
        if missing:
            problems.append(f"central has no ended record of {len(missing)} of {len(ended)} ended calls")
    lost = sum(1 for v in views if v.outcome == "lost")
    if lost:
        say(f"note: {lost} calls broke off without `ended` (see the report's lost_elsewhere)")
    for problem in problems:
        say(f"FAIL: {problem}")
    if not problems:
        say("OK: every site answered calls and central holds a record of every call that ended")
    return 1 if problems else 0


async def _first(aw: Awaitable[T], hurry: asyncio.Event) -> T | None:
    """Await `aw`, or give up on it (cancel it) when `hurry` is set first."""
    task = asyncio.ensure_future(aw)
    hurried = asyncio.create_task(hurry.wait())
    try:
        await asyncio.wait({task, hurried}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hurried.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def _offer_traffic(
    dnis: str,
    sites: Mapping[str, str],
    *,
    rates: dict[str, float],
    options: DemoOptions,
    signals: _Signals,
    on_call: Callable[[CallerView], None],
    progress: _Progress,
) -> None:
    """Back-to-back slices of Poisson arrivals until `stop`; each slice then drains its own calls."""
    loads = [SiteLoad(site_id, address, rates[site_id]) for site_id, address in sites.items()]
    loop = asyncio.get_running_loop()
    end = loop.time() + options.duration_s if options.duration_s is not None else None
    running: list[asyncio.Task[list[CallerView]]] = []
    index = 0
    while not signals.stop.is_set():
        length = SLICE_S if end is None else min(SLICE_S, end - loop.time())
        if length <= 0.05:
            break
        plan = TrafficPlan(
            loads,
            length,
            seed=options.seed * 10_000 + index,
            dnis=dnis,
            patience_mean_s=PATIENCE_MEAN_S,
            customers=SEED_CUSTOMERS,
        )
        running.append(
            asyncio.create_task(run_traffic(plan, on_call=on_call, drain_timeout_s=DRAIN_TIMEOUT_S))
        )
        progress.arrivals_s += length
        index += 1
        # The next slice starts when this one's arrivals end (its calls may still be in flight).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(signals.stop.wait(), length)
    # A slice that already started still offers its calls to its end: wait for that, then for the drain.
    await asyncio.gather(*running)


async def _ticker(sites: Mapping[str, str], views: list[CallerView], start: float, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        summaries = await site_summaries(sites, deadline_s=2.0)
        outcomes = Counter(v.outcome for v in views)
        calls = " ".join(
            f"{k} {outcomes[k]}" for k in ("answered", "abandoned", "blocked", "lost") if outcomes[k]
        )
        say(f"[{time.time() - start:5.0f}s] {one_line(summaries)} || ended {len(views)}: {calls or '-'}")


async def _wait_outboxes(sites: Mapping[str, str], hurry: asyncio.Event) -> None:
    """Until every site has shipped its records to central (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + OUTBOX_TIMEOUT_S
    pending: dict[str, int] = {}
    while loop.time() < deadline and not hurry.is_set():
        summaries = await site_summaries(sites, deadline_s=2.0)
        pending = {s: (int(v.outbox_pending) if not isinstance(v, str) else -1) for s, v in summaries.items()}
        if all(n == 0 for n in pending.values()):
            say("every site's outbox is drained to central")
            return
        await asyncio.sleep(0.5)
    if hurry.is_set():
        say("not waiting for the outboxes (interrupted)")
    else:
        say(f"outboxes not drained in {OUTBOX_TIMEOUT_S:.0f}s: {pending} (-1: site unreachable)")


async def _fetch_records(
    central: str, views: Sequence[CallerView], hurry: asyncio.Event
) -> list[central_pb2.CallRecord] | None:
    """Central's records (paged); fetched again for a short while if some ended call is not there yet."""
    ended = {v.call_id for v in views if v.outcome in ("answered", "abandoned", "blocked", "failed")}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECORDS_TIMEOUT_S
    records: list[central_pb2.CallRecord] | None = None
    while True:
        try:
            records = await list_call_records(central)
        except grpc.aio.AioRpcError as exc:
            say(f"central's records not readable: {exc.code().name} {exc.details()}")
        if records is not None and ended <= {r.call_id for r in records if r.outcome}:
            return records
        if loop.time() > deadline or hurry.is_set():
            return records
        await asyncio.sleep(1.0)


async def list_call_records(address: str, page_size: int = 500) -> list[central_pb2.CallRecord]:
    """Every call record central holds, with events, page by page."""
    records: list[central_pb2.CallRecord] = []
    token = ""
    async with channel(address, expect=central_server()) as ch:
        stub = central_pb2_grpc.CentralServiceStub(ch)
        while True:
            reply = await stub.ListCallRecords(
                central_pb2.ListCallRecordsRequest(page_size=page_size, page_token=token, with_events=True),
                timeout=RPC_DEADLINE_S,
            )
            records.extend(reply.records)
            token = reply.next_page_token
            if not token:
                return records


async def _stop_robots(robots: dict[str, asyncio.Task[RobotStats]]) -> dict[str, RobotStats]:
    """The robots log out (bounded); their counters per site."""
    done, pending = await asyncio.wait(robots.values(), timeout=15.0)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    stats: dict[str, RobotStats] = {}
    for site_id, task in robots.items():
        if task in done and not task.cancelled() and task.exception() is None:
            stats[site_id] = task.result()
    return stats
