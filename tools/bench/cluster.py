"""Benchmarks on a real local cluster: throughput, memory, routing latency.

Everything runs on this machine: etcd, central (SQLite) and the site nodes as separate processes
(tools/cluster.Cluster), robot agents (tools/robots) and callers (tools/traffic) as asyncio tasks
of this process. The bench client competes with the cluster for the same cores: the figures are
the platform plus its load generator, which is what "on this machine" means.

Agents get a deliberately cheap argon2id hash (the PHC string carries its own cost), so that
logging in hundreds of robot agents does not take minutes of CPU before the measurement starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import psutil
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from tools.bench.threads import thread_cpu_ms_per_call, thread_cpu_s, thread_names
from tools.province.cluster import Cluster
from tools.province.generate import DEFAULT_PASSWORD, SiteSpec, generate_province, write_province
from tools.province.netutil import free_port
from tools.province.spans import SpanRow, read_spans
from tools.province.status import site_summaries
from tools.simulation.report import percentiles_ms, reconcile_detailed
from tools.simulation.robots import RobotPolicy, RobotStats, run_robots
from tools.simulation.traffic import CallerView, SiteLoad, TrafficPlan, run_traffic
from vcc import rpc
from vcc.tls import CA_ENV, CERT_ENV, DESKTOP, DIR_ENV, KEY_ENV, TRUNK, central_server, site_server
from vcc.v1 import central_pb2, central_pb2_grpc, common_pb2, cti_pb2, cti_pb2_grpc, trunk_pb2, trunk_pb2_grpc

Progress = Callable[[str], None]
RPC_DEADLINE_S = 10.0
SEED_CUSTOMERS = 1000
THROUGHPUT_SITES = ("gz", "sz", "fs")
CALLERS_PER_CHANNEL = 90
# Time a bench channel's connection attempt may take (see `memory`).
CONNECT_MS = 20_000
# Callers the memory and scale benches start each second, at most ...
WAITING_CALLERS_PER_S = 250
# ... and callers between dialling and waiting in the queue at once: arrivals follow the pace at
# which the site sets calls up. gRPC core holds a new stream the server's loop has not taken yet
# for at most 30 s (`grpc.server_max_unrequested_time_in_server`), then cancels it: callers
# offered faster than a loaded site takes them failed CANCELLED (or INTERNAL "Internal error from
# Core", when the reset beat the offer's write) after 30 s, never having reached the call control.
CALLERS_IN_SETUP = 100


def cheap_password_hash(password: str = DEFAULT_PASSWORD) -> str:
    """An argon2id hash with minimal cost: for benchmark fixtures only, never for a real site."""
    from argon2 import PasswordHasher

    return PasswordHasher(time_cost=1, memory_cost=64, parallelism=1).hash(password)


def _province(
    specs: Sequence[SiteSpec],
    run_dir: Path,
    *,
    wrap_up_s: float = 0.0,
    mode: str = "isolated",
    observability: bool = True,
    push_targets: bool = True,
    dashboard: bool = False,
    trace_sample_ratio: float = 1.0,
    site_settings: Mapping[str, Any] | None = None,
    per_call_streams: Sequence[str] = (),
) -> Path:
    raw = generate_province(
        specs,
        etcd_endpoint="127.0.0.1:2379",
        central_listen=f"127.0.0.1:{free_port()}",
        database_url=f"sqlite+aiosqlite:///{run_dir / 'central.db'}",
        outbox_dir=run_dir / "outbox",
        password_hash=cheap_password_hash(),
        wrap_up_s=wrap_up_s,
        ring_timeout_s=5.0,
        # With its demo operator: nobody sees the dashboard without a login.
        dashboard_listen=f"127.0.0.1:{free_port()}" if dashboard else "",
    )
    raw["routing"] = {"mode": mode, "push_targets": push_targets}
    for site in raw["sites"]:
        site.update(site_settings or {})
        if site["id"] in per_call_streams:
            site["peer_stream"] = "per-call"
    if trace_sample_ratio < 1.0:
        raw["tracing"] = {"sample_ratio": trace_sample_ratio}
    if not observability:
        # No spans and no metrics endpoint anywhere (an explicit "" keeps the cluster from
        # giving each process one).
        raw["tracing"] = {"enabled": False}
        raw.setdefault("central", {})["metrics_listen"] = ""
        for site in raw["sites"]:
            site["metrics_listen"] = ""
    (run_dir / "outbox").mkdir(parents=True, exist_ok=True)
    return write_province(raw, run_dir / "province.yaml")


async def list_records(central: str, page_size: int = 1000) -> list[central_pb2.CallRecord]:
    records: list[central_pb2.CallRecord] = []
    token = ""
    async with rpc.channel(central, expect=central_server()) as ch:
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


async def wait_outboxes(sites: Mapping[str, str], timeout_s: float = 60.0) -> bool:
    """Until every site has shipped its records to central (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        summaries = await site_summaries(sites, deadline_s=3.0)
        if all(not isinstance(s, str) and s.outbox_pending == 0 for s in summaries.values()):
            return True
        await asyncio.sleep(0.3)
    return False


# -- throughput ------------------------------------------------------------------------------------

# The automatic ladder of province-wide call rates; it stops at the first step that fails (and
# tries once halfway between the last pass and the failure), so its last pass is the ceiling.
LADDER = (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 800, 1000, 1200, 1500)
# A step fails when callers do not hear `ringing` within this long of dialling at p99 ...
PROMPT_RING_S = 1.0
# ... or when more than this share of its calls is blocked (the trunks are sized so that only a
# platform falling behind blocks: calls then last longer and hold their channels).
MAX_BLOCKED_SHARE = 0.001
PROFILE_RATE_HZ = 100


@dataclass(frozen=True)
class Variant:
    """How the province of one throughput run is set up: environment of its processes (switches
    of the optimisations, the event loop), traces and metrics, mutual TLS."""

    name: str
    env: Mapping[str, str] = field(default_factory=dict)
    observability: bool = True
    tls: bool = True
    # tracing.sample_ratio of the province (a call is traced whole or not at all).
    trace_sample_ratio: float = 1.0
    # How often the bench scrapes every process's /metrics (None: the bench's own default).
    scrape_every_s: float | None = None
    # The robots log in with auto-answer (the site answers their offers: no Answer request).
    auto_answer: bool = True
    # Callers and robots take their streams' messages in batches (CallOffer.batched,
    # StreamEventsRequest.batched).
    batched: bool = True
    # The callers of each site share one trunk link (a Signalling stream, wave 8); False: a
    # PlaceCall stream per call.
    trunk_link: bool = True
    # Fields of every site's province config (SiteConfig), on top of the generated ones.
    site_settings: Mapping[str, Any] = field(default_factory=dict)


AS_SHIPPED = Variant("as shipped")
# `vcc bench throughput --compare NAME`: the province as shipped but for one thing, run in the same
# bench run as the province as shipped, so that the two are measured side by side.
COMPARISONS: dict[str, Variant] = {
    "loop": Variant("uvloop", {"VCC_EVENT_LOOP": "uvloop"}),
    "tls": Variant("plaintext (bench only)", tls=False),
    "observability": Variant("traces and metrics off", observability=False),
    "linger": Variant("shipper linger 0.1 s", {"VCC_SHIPPER_LINGER_S": "0.1"}),
    "edge": Variant("the chain of four interceptors", {"VCC_RPC_EDGE": "chain"}),
    "journeys": Variant("central reads each call's events back", {"VCC_INGEST_JOURNEYS": "0"}),
    # What tracing every call costs against a tenth of them (an operator's setting).
    "sampled": Variant("a tenth of the calls traced (tracing.sample_ratio 0.1)", trace_sample_ratio=0.1),
    # The bench scrapes every 2 s; a Prometheus of a province would rather every 15 s.
    "scrape15": Variant("metrics scraped every 15 s", scrape_every_s=15.0),
    # What the line per transition costs (an operator's switch, not an optimisation).
    "logs": Variant("transition lines off (VCC_LOG_LEVEL=WARNING)", {"VCC_LOG_LEVEL": "WARNING"}),
    # Messages per call (wave 5): the robots answer with an Answer request of their own ...
    "answer": Variant("robots send Answer (no auto-answer)", auto_answer=False),
    # ... and each state change of an agent is a state_changed of its own on the desktop stream.
    "fold": Variant(
        "a state_changed of its own per change (desk_states_in_call_events: false)",
        site_settings={"desk_states_in_call_events": False},
    ),
    # ... and callers and desktops take one message per step.
    "batch": Variant("one stream message per step (no batches)", batched=False),
    # Wave 8: the trunk's calls on one signalling link per site, against a stream per call.
    "per-call-trunk": Variant("a PlaceCall stream per call (no trunk link)", trunk_link=False),
}
# Python's cyclic collector run less often in every process of the province (VCC_GC_GEN0).
COMPARISONS["gc"] = Variant("young collections every 50,000 allocations", {"VCC_GC_GEN0": "50000"})
# Nothing changed: the province as shipped once more, after the others. A variant always runs
# after the province as shipped, when the bench's own runs have warmed the machine up: this one
# says how much of a ratio that order alone makes.
COMPARISONS["again"] = Variant("as shipped, run again")
# Every one of wave 5's cuts of messages per call turned back: `--compare messages`.
COMPARISONS["messages"] = Variant(
    "before wave 5's cuts of messages per call",
    site_settings=dict(COMPARISONS["fold"].site_settings),
    auto_answer=False,
    batched=False,
)
# Wave 8, central's CPU per call: every screen pop reads the database (no leader's memory) ...
COMPARISONS["popmemory"] = Variant("every screen pop reads the database", {"VCC_CUSTOMER_CACHE": "0"})
# ... the store's ON CONFLICT statements compiled at every execute ...
COMPARISONS["compiled"] = Variant(
    "the store's ON CONFLICT statements compiled at every execute", {"VCC_INGEST_COMPILED": "0"}
)
# ... and all of wave 8's switches at central turned back at once (with `journeys`, which now also
# stands for a new call's events read back).
COMPARISONS["before8"] = Variant(
    "central before wave 8",
    {k: v for c in ("popmemory", "compiled", "journeys") for k, v in COMPARISONS[c].env.items()},
)
# The screen pops of a turn's calls in one LookupCustomers turned back (wave 8).
COMPARISONS["poplookups"] = Variant(
    "one screen-pop look-up per call (VCC_SCREEN_POP_BATCH=0)", {"VCC_SCREEN_POP_BATCH": "0"}
)
# The screen pops' 10 ms wait for others to share their request turned off (one request per turn).
COMPARISONS["poplinger"] = Variant(
    "screen pops sent each turn (VCC_SCREEN_POP_LINGER_S=0)", {"VCC_SCREEN_POP_LINGER_S": "0"}
)
# The shipper parsing every stored event back and serializing the request again (wave 8).
COMPARISONS["reparse"] = Variant(
    "the shipper parses the events again (VCC_SHIPPER_RAW=0)", {"VCC_SHIPPER_RAW": "0"}
)
# Both of wave 8's switches of a site's CPU per call turned back at once: `--compare site8`.
COMPARISONS["site8"] = Variant(
    "before wave 8's site changes (look-ups per call, events parsed again)",
    {k: v for c in ("poplookups", "reparse") for k, v in COMPARISONS[c].env.items()},
)
# Every wave 8 switch of central and the sites turned back at once: `--compare wave8`.
COMPARISONS["wave8"] = Variant(
    "before wave 8 (central and sites)",
    {**COMPARISONS["before8"].env, **COMPARISONS["site8"].env},
)
# Wave 10: a step's line per transition and spans made inside the step, before its messages go.
COMPARISONS["instep"] = Variant(
    "lines and spans inside the step (VCC_OBSERVE_AFTER_STEP=0)", {"VCC_OBSERVE_AFTER_STEP": "0"}
)
# Every switch of issue 16's optimisations turned back at once: `--compare before16`.
COMPARISONS["before16"] = Variant(
    "before issue 16's changes", {k: v for c in ("edge", "journeys") for k, v in COMPARISONS[c].env.items()}
)


@contextlib.contextmanager
def _environment(env: Mapping[str, str | None]) -> Iterator[None]:
    """`env` in this process's environment (which the cluster's children inherit; None: unset),
    then restored."""
    saved = {k: os.environ.get(k) for k in env}
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _dial_to_ringing_s(view: CallerView) -> float | None:
    for kind, at, _ in view.progress:
        if kind == "ringing":
            return at - view.offered_at
    return None


def _prompt_to_ringing_s(view: CallerView) -> float | None:
    """From the menu's prompt reaching the caller (who answers it at once) to `ringing`."""
    prompt = next((at for kind, at, _ in view.progress if kind == "prompt"), None)
    ring = next((at for kind, at, _ in view.progress if kind == "ringing"), None)
    return ring - prompt if prompt is not None and ring is not None else None


def _step_verdict(
    views: Sequence[CallerView],
    target_rate: float,
    step_s: float,
    records: Sequence[central_pb2.CallRecord],
    *,
    prompt_ring_s: float = PROMPT_RING_S,
    max_blocked_share: float = MAX_BLOCKED_SHARE,
) -> dict[str, Any]:
    """Whether a step passes: every call answered (or blocked, within the bound), central holds
    exactly one matching record of each, the generator offered the plan, and callers heard
    `ringing` within `prompt_ring_s` of dialling at p99."""
    outcomes = Counter(v.outcome for v in views)
    ids = {v.call_id for v in views}
    mine = [r for r in records if r.call_id in ids]
    reconciliation, problems = reconcile_detailed(views, mine)
    offered = len(views)
    achieved = offered / step_s if step_s > 0 else 0.0
    # Waits at this load are the platform's: every site has agents to spare.
    waited = sum(1 for v in views if v.queued_at is not None and _dial_to_ringing_s(v) is None)
    failures = []
    blocked = outcomes["blocked"]
    others = {k: n for k, n in outcomes.items() if k not in ("answered", "blocked")}
    if others:
        failures.append("not every call answered: " + ", ".join(f"{k} {n}" for k, n in others.items()))
    blocked_share = blocked / offered if offered else 0.0
    if blocked_share > max_blocked_share:
        failures.append(f"blocked {blocked} ({blocked_share:.2%} > {max_blocked_share:.2%})")
    for key in ("missing", "duplicated", "mismatched"):
        if reconciliation[key]:
            failures.append(f"reconciliation: {key} {reconciliation[key]}")
    # A Poisson count over the step: below 90 % of the plan means the generator (or the
    # platform's acceptance of calls) fell behind.
    expected = target_rate * step_s
    if offered < expected - 3 * math.sqrt(expected) - 0.05 * expected:
        failures.append(f"only {offered} calls offered of about {expected:.0f} planned")
    dial_ring = [s for s in map(_dial_to_ringing_s, views) if s is not None]
    dial_to_ringing = percentiles_ms(dial_ring)
    p99 = dial_to_ringing["p99"]
    if not isinstance(p99, float) or p99 > prompt_ring_s * 1000.0:
        shown = f"{p99:.0f} ms" if isinstance(p99, float) else "no call rang"
        failures.append(f"p99 dial → ringing {shown} > {prompt_ring_s * 1000:.0f} ms")
    queue_ring = [
        ring - v.queued_at
        for v in views
        if v.queued_at is not None
        and (ring := next((at for k, at, _ in v.progress if k == "ringing"), None)) is not None
    ]
    return {
        "target_rate_per_s": target_rate,
        "achieved_rate_per_s": achieved,
        "offered": offered,
        "outcomes": dict(outcomes),
        "blocked_share": blocked_share,
        "never_rang": waited,
        "dial_to_ringing_ms": dial_to_ringing,
        "prompt_to_ringing_ms": percentiles_ms(s for s in map(_prompt_to_ringing_s, views) if s is not None),
        "queued_to_ringing_ms": percentiles_ms(queue_ring),
        "reconciliation": reconciliation,
        "problems": [f"{c}: {p}" for c, p in problems[:5]],
        "ok": not failures,
        "failures": failures,
    }


def ladder(rates: Sequence[float] | None, max_rate: float) -> list[float]:
    """The steps to climb: the given rates in rising order, else LADDER up to max_rate."""
    chosen = sorted(set(rates)) if rates else [r for r in LADDER if r <= max_rate]
    if not chosen:
        raise ValueError(f"no step at or below {max_rate:g} calls/s")
    return [float(r) for r in chosen]


def halfway(passed: float, failed: float) -> float | None:
    """A step between the last pass and the first failure, to narrow the ceiling (None: too close)."""
    mid = round((passed + failed) / 2 / 10) * 10
    return float(mid) if passed < mid < failed and failed - passed >= 40 else None


def _processes(cluster: Cluster) -> dict[str, psutil.Process]:
    """Every process of the run by role: the sites, central, etcd, and this bench client."""
    found: dict[str, psutil.Process] = {}
    named = [
        *((f"site {sid}", p) for sid, p in cluster.sites.items()),
        *(
            (f"central {rid}" if len(cluster.centrals) > 1 else "central", p)
            for rid, p in cluster.centrals.items()
        ),
    ]
    if cluster.etcd_process is not None:
        named.append(("etcd", cluster.etcd_process))
    for name, proc in named:
        with contextlib.suppress(psutil.Error):
            found[name] = psutil.Process(proc.pid)
    found["bench client"] = psutil.Process()
    return found


def _cpu_s(procs: Mapping[str, psutil.Process]) -> dict[str, float]:
    """CPU seconds (user + system, this process's threads included) each has spent so far."""
    out: dict[str, float] = {}
    for name, proc in procs.items():
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        out[name] = times.user + times.system
    return out


def cpu_per_call_ms(before: Mapping[str, float], after: Mapping[str, float], calls: int) -> dict[str, float]:
    """CPU milliseconds per call of each process over a step, with the cluster's (sites and central)
    and everything's totals."""
    per = {name: (after[name] - before[name]) * 1000.0 / max(1, calls) for name in after if name in before}
    cluster = sum(v for k, v in per.items() if k.startswith(("site ", "central")))
    out = {name: round(v, 3) for name, v in per.items()}
    out["cluster (sites + central)"] = round(cluster, 3)
    out["all"] = round(sum(per.values()), 3)
    return out


async def _profile(procs: Mapping[str, psutil.Process], seconds: float, folder: Path, tag: str) -> list[Path]:
    """py-spy samples of every Python process for `seconds` (collapsed stacks, one file each).

    Only the thread holding the GIL is sampled (`--gil`): the figures are where Python spends
    CPU, not where threads wait (the outbox's fsync, aiosqlite's queue, idle pools)."""
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    runs: list[tuple[asyncio.subprocess.Process, Path]] = []
    for name, proc in procs.items():
        if name == "etcd":
            continue
        out = folder / f"{tag}-{name.replace(' ', '-')}.txt"
        child = await asyncio.create_subprocess_exec(
            exe,
            "record",
            "--pid",
            str(proc.pid),
            "--duration",
            str(max(1, int(seconds))),
            "--rate",
            str(PROFILE_RATE_HZ),
            "--format",
            "raw",
            "--nonblocking",
            "--gil",
            "--output",
            str(out),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        runs.append((child, out))
    written = []
    for child, out in runs:
        try:
            await asyncio.wait_for(child.wait(), seconds + 30.0)
        except TimeoutError:
            child.kill()
            await child.wait()
        if out.exists():
            written.append(out)
    return written


def top_functions(collapsed: str, n: int = 12) -> dict[str, list[tuple[str, float]]]:
    """From py-spy's collapsed stacks ("frame;frame;... count" lines): the functions with the
    most samples of their own (self) and under them (inclusive), as shares of all samples."""
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [_frame_name(f) for f in stack.split(";") if "(" in f]
        if frames:
            own[frames[-1]] += samples
        for name in set(frames):
            under[name] += samples
    if not total:
        return {"self": [], "inclusive": []}
    return {
        "self": [(name, round(c / total, 4)) for name, c in own.most_common(n)],
        "inclusive": [(name, round(c / total, 4)) for name, c in under.most_common(n)],
    }


def _frame_name(frame: str) -> str:
    """ "func (path/to/file.py:12)" -> "func (file.py)"."""
    func, _, where = frame.partition(" (")
    return f"{func} ({where.rsplit(':', 1)[0].rsplit('/', 1)[-1]})"


async def throughput(
    *,
    rates: Sequence[float] | None = None,
    max_rate: float = 1200.0,
    step_s: float = 8.0,
    handle_s: float = 0.5,
    variant: Variant = AS_SHIPPED,
    run_dir: Path | None = None,
    progress: Progress = lambda _: None,
    scrape_every_s: float = 2.0,
    prompt_ring_s: float = PROMPT_RING_S,
    max_blocked_share: float = MAX_BLOCKED_SHARE,
    refine: bool = True,
    every_step: bool = False,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """Raise the province-wide call rate (split evenly over three cities) step by step until a
    step fails; the last step that passed is the ceiling.

    `variant` says how the province is set up (see Variant). With observability on, every
    process's metrics are scraped every `scrape_every_s` (as Prometheus would). The CPU each
    process spends per call is read from the processes themselves (psutil) over each step, the
    bench client (robots and callers) included. `profile_dir`: py-spy profiles of each step.
    `every_step`: run every step of the ladder even after one failed (the ceiling is still the
    highest that passed)."""
    steps_planned = ladder(rates, max_rate)
    top = max(steps_planned)
    # Agents for the highest step with room to spare (constant handle time, no wrap-up, and the
    # ring itself): staffing is never the limit, the platform is.
    agents_per_site = max(10, math.ceil(top * (handle_s + 0.3) / len(THROUGHPUT_SITES) * 1.5))
    trunks = max(200, agents_per_site * 3)
    env: dict[str, str | None] = dict(variant.env)
    if not variant.tls:
        # A plaintext province: this process must not dial it with an identity it was given.
        env.update(dict.fromkeys((CA_ENV, CERT_ENV, KEY_ENV, DIR_ENV)))
    with tempfile.TemporaryDirectory(prefix="vcc-bench-") as tmp, _environment(env):
        run = run_dir or Path(tmp)
        specs = [
            SiteSpec(s, s, trunk_channels=trunks, agents={"general": agents_per_site})
            for s in THROUGHPUT_SITES
        ]
        config_path = await asyncio.to_thread(
            _province,
            specs,
            run,
            observability=variant.observability,
            trace_sample_ratio=variant.trace_sample_ratio,
            site_settings=variant.site_settings,
        )
        progress(
            f"throughput [{variant.name}]: starting etcd, central and {len(specs)} sites "
            f"({agents_per_site} agents each)"
        )
        async with await Cluster.start(
            config_path, run / "cluster", seed_customers=SEED_CUSTOMERS, bench_plaintext=not variant.tls
        ) as cluster:
            raw_codes = {s.id: [a.code for a in s.agents] for s in cluster.config.sites}
            policy = RobotPolicy(
                handle_time_mean_s=handle_s,
                handle_distribution="constant",
                wrap_up="immediate",
                seed=1,
                auto_answer=variant.auto_answer,
                batched_events=variant.batched,
            )
            stop = asyncio.Event()
            robot_stats = [RobotStats() for _ in cluster.config.sites]
            robots = [
                asyncio.create_task(
                    run_robots(
                        site.listen,
                        [(c, DEFAULT_PASSWORD) for c in raw_codes[site.id]],
                        policy,
                        stop,
                        stats=stats,
                    )
                )
                for site, stats in zip(cluster.config.sites, robot_stats, strict=True)
            ]
            steps: list[dict[str, Any]] = []
            every_s = variant.scrape_every_s or scrape_every_s
            scraper = asyncio.create_task(_scrape(cluster, every_s)) if variant.observability else None
            procs = _processes(cluster)
            try:
                await _wait_ready_agents(cluster.addresses.sites, agents_per_site)
                queue = list(steps_planned)
                last_pass: float | None = None
                refined = not refine
                while queue:
                    rate = queue.pop(0)
                    step = await _one_step(
                        cluster,
                        procs,
                        rate,
                        len(steps),
                        step_s,
                        progress,
                        prompt_ring_s=prompt_ring_s,
                        max_blocked_share=max_blocked_share,
                        profile_dir=profile_dir,
                        variant=variant,
                        robot_stats=robot_stats,
                    )
                    steps.append(step)
                    if step["ok"]:
                        last_pass = rate
                        continue
                    if every_step:
                        # Comparisons want every rate measured in both runs: no stop, no step between.
                        continue
                    mid = halfway(last_pass, rate) if last_pass is not None and not refined else None
                    refined = True
                    queue = [mid] if mid is not None else []
            finally:
                if scraper is not None:
                    scraper.cancel()
                    await asyncio.gather(scraper, return_exceptions=True)
                stop.set()
                _, pending = await asyncio.wait(robots, timeout=20.0)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*robots, return_exceptions=True)
    return summarise(
        steps,
        variant=variant,
        agents_per_site=agents_per_site,
        trunks=trunks,
        handle_s=handle_s,
        step_s=step_s,
        prompt_ring_s=prompt_ring_s,
        max_blocked_share=max_blocked_share,
    )


async def _one_step(
    cluster: Cluster,
    procs: Mapping[str, psutil.Process],
    rate: float,
    index: int,
    step_s: float,
    progress: Progress,
    *,
    prompt_ring_s: float,
    max_blocked_share: float,
    profile_dir: Path | None,
    variant: Variant,
    robot_stats: Sequence[RobotStats] = (),
) -> dict[str, Any]:
    progress(f"throughput [{variant.name}]: {rate:g} calls/s for {step_s:g}s")
    sites = cluster.addresses.sites
    loads = [SiteLoad(s, addr, rate / len(sites)) for s, addr in sites.items()]
    plan = TrafficPlan(
        loads,
        step_s,
        seed=1000 + index,
        dnis=cluster.config.province.service_number,
        customers=SEED_CUSTOMERS,
        batched=variant.batched,
        trunk_link=variant.trunk_link,
    )
    load_before = os.getloadavg()
    desk_before = _desk_messages(robot_stats)
    rpcs_before = await _rpcs_served(cluster) if variant.observability else None
    cpu_before = _cpu_s(procs)
    # With profiles, each site's and central's CPU by thread too (py-spy sees only the GIL's).
    by_thread = {n: p for n, p in procs.items() if n.startswith(("site ", "central"))} if profile_dir else {}
    threads_before = {n: thread_cpu_s(p) for n, p in by_thread.items()}
    profiling = (
        asyncio.create_task(
            _profile(procs, step_s, profile_dir, f"{variant.name}-{rate:g}".replace(" ", "-"))
        )
        if profile_dir is not None
        else None
    )
    started = time.perf_counter()
    views = await run_traffic(plan, drain_timeout_s=30.0)
    wall = time.perf_counter() - started
    # Central's ingest of the step belongs to its cost: counted once the outboxes are empty.
    await wait_outboxes(sites)
    cpu_after = _cpu_s(procs)
    threads_after = {n: thread_cpu_s(p) for n, p in by_thread.items()}
    load_after = os.getloadavg()
    desk_after = _desk_messages(robot_stats)
    rpcs_after = await _rpcs_served(cluster) if variant.observability else None
    profiles = await profiling if profiling is not None else []
    records = await list_records(cluster.addresses.central)
    step = _step_verdict(
        views, rate, step_s, records, prompt_ring_s=prompt_ring_s, max_blocked_share=max_blocked_share
    )
    step["wall_s"] = round(wall, 2)
    step["cpu_ms_per_call"] = cpu_per_call_ms(cpu_before, cpu_after, step["offered"])
    step["cluster_cpu_ms_per_call"] = step["cpu_ms_per_call"]["cluster (sites + central)"]
    step["cores_bound_rate_per_s"] = cores_bound_rate(step["cpu_ms_per_call"]["all"])
    step["load_average"] = {"before": load_before, "after": load_after}
    step["messages_per_call"] = messages_per_call(
        views, desk_before, desk_after, rpcs_before, rpcs_after, step["offered"]
    )
    if by_thread:
        step["thread_cpu_ms_per_call"] = {
            n: thread_cpu_ms_per_call(
                threads_before[n], threads_after[n], await thread_names(p.pid), step["offered"]
            )
            for n, p in by_thread.items()
        }
    if profiles:
        step["profiles"] = {
            p.stem: top_functions(p.read_text(encoding="utf-8", errors="replace")) for p in profiles
        }
    dial = step["dial_to_ringing_ms"]
    progress(
        f"  {'ok' if step['ok'] else 'FAILED'}: {step['offered']} calls, p50/p99 dial->ringing "
        f"{_ms(dial['p50'])}/{_ms(dial['p99'])} ms, "
        f"cluster CPU {step['cluster_cpu_ms_per_call']:.2f} ms/call, "
        f"load {load_after[0]:.1f}" + ("; " + "; ".join(step["failures"]) if step["failures"] else "")
    )
    return step


def _desk_messages(stats: Sequence[RobotStats]) -> tuple[int, int]:
    return sum(s.messages_in for s in stats), sum(s.requests for s in stats)


RPC_COUNT = "vcc_rpc_server_duration_seconds_count"


async def _rpcs_served(cluster: Cluster) -> Counter[str]:
    """Unary RPCs served so far by every site and central, by method (their histograms' counts)."""
    counts: Counter[str] = Counter()
    urls = [p.metrics for p in [*cluster.sites.values(), *cluster.centrals.values()] if p.metrics]
    for url in urls:
        with contextlib.suppress(OSError, TimeoutError):
            page = (await asyncio.wait_for(_http_get(url), 5.0)).decode(errors="replace")
            counts.update(parse_rpc_counts(page))
    return counts


def parse_rpc_counts(page: str) -> Counter[str]:
    """`method` -> count from a /metrics page's RPC server histogram (every status code)."""
    counts: Counter[str] = Counter()
    for line in page.splitlines():
        if not line.startswith(RPC_COUNT + "{"):
            continue
        labels, _, value = line[len(RPC_COUNT) + 1 :].rpartition("} ")
        fields = dict(part.split("=", 1) for part in labels.split(",") if "=" in part)
        counts[fields.get("method", "?").strip('"')] += int(float(value))
    return counts


def messages_per_call(
    views: Sequence[CallerView],
    desk_before: tuple[int, int],
    desk_after: tuple[int, int],
    rpcs_before: Counter[str] | None,
    rpcs_after: Counter[str] | None,
    calls: int,
) -> dict[str, Any]:
    """What a call cost in messages over one step, counted (not timed): the caller's stream
    (read and written), the desktops' streams (read) and their requests, and the unary RPCs
    every site and central served (by method; None without metrics)."""
    n = max(calls, 1)
    caller = sum(v.messages_in + v.messages_out for v in views)
    desk_in = desk_after[0] - desk_before[0]
    desk_requests = desk_after[1] - desk_before[1]
    out: dict[str, Any] = {
        "caller_stream": round(caller / n, 2),
        "desktop_stream": round(desk_in / n, 2),
        "desktop_requests": round(desk_requests / n, 2),
    }
    if rpcs_before is not None and rpcs_after is not None:
        served = {m: c - rpcs_before.get(m, 0) for m, c in rpcs_after.items() if c > rpcs_before.get(m, 0)}
        out["unary_served"] = round(sum(served.values()) / n, 2)
        out["unary_served_by_method"] = {m: round(c / n, 3) for m, c in sorted(served.items())}
    out["all_stream_messages_and_unary"] = round(
        out["caller_stream"] + out["desktop_stream"] + out.get("unary_served", out["desktop_requests"]), 2
    )
    return out


def cores_bound_rate(all_ms_per_call: float, cores: int | None = None) -> float | None:
    """The rate at which every process of the run together (bench client included) would use all
    of this machine's cores at this CPU per call: what an idle machine could reach at best, and a
    figure the other users of a shared machine do not move much (CPU per call is read from the
    processes, not from the wall clock)."""
    n = cores or os.cpu_count() or 1
    return round(n * 1000.0 / all_ms_per_call, 1) if all_ms_per_call > 0 else None


def _ms(value: object) -> str:
    return f"{value:.0f}" if isinstance(value, float) else "-"


def summarise(
    steps: Sequence[Mapping[str, Any]],
    *,
    variant: Variant,
    agents_per_site: int,
    trunks: int,
    handle_s: float,
    step_s: float,
    prompt_ring_s: float = PROMPT_RING_S,
    max_blocked_share: float = MAX_BLOCKED_SHARE,
) -> dict[str, Any]:
    """The run's figures: the ceiling is the highest rate of a step that passed."""
    passed = [s for s in steps if s["ok"]]
    best = max(passed, key=lambda s: s["target_rate_per_s"]) if passed else None
    return {
        "variant": {
            "name": variant.name,
            "env": dict(variant.env),
            "site_settings": dict(variant.site_settings),
            "observability": variant.observability,
            "tls": variant.tls,
        },
        "observability": variant.observability,
        "load_average": os.getloadavg(),
        "sites": len(THROUGHPUT_SITES),
        "agents_per_site": agents_per_site,
        "trunk_channels_per_site": trunks,
        "handle_s": handle_s,
        "step_s": step_s,
        "pass_rule": {
            "p99_dial_to_ringing_ms_at_most": prompt_ring_s * 1000.0,
            "blocked_share_at_most": max_blocked_share,
            "every_other_call_answered": True,
            "records_exact": True,
        },
        "steps": list(steps),
        "ceiling_rate_per_s": best["target_rate_per_s"] if best else 0.0,
        # Kept under its old names: with p99 ringing in the pass rule, sustained is prompt.
        "sustained_rate_per_s": best["target_rate_per_s"] if best else 0.0,
        "prompt_rate_per_s": best["target_rate_per_s"] if best else 0.0,
        "p99_dial_to_ringing_ms": best["dial_to_ringing_ms"]["p99"] if best else None,
        "p99_queued_to_ringing_ms": best["queued_to_ringing_ms"]["p99"] if best else None,
        "cpu_ms_per_call_at_ceiling": best.get("cpu_ms_per_call") if best else None,
        # The highest step's CPU per call spread over every core: the load-independent bound.
        "cores_bound_rate_per_s": max(
            (s["cores_bound_rate_per_s"] for s in steps if s.get("cores_bound_rate_per_s")), default=None
        ),
        "first_failure": next((s for s in steps if not s["ok"]), None),
        "target_rate_per_s": 1000,
    }


def side_by_side(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """Two runs compared: ceilings, and per rate both ran, latency and CPU per call of each."""
    rows = []
    by_rate = {s["target_rate_per_s"]: s for s in after["steps"]}
    for a in before["steps"]:
        b = by_rate.get(a["target_rate_per_s"])
        if b is None:
            continue
        cpu_a, cpu_b = a.get("cluster_cpu_ms_per_call"), b.get("cluster_cpu_ms_per_call")
        all_a = (a.get("cpu_ms_per_call") or {}).get("all")
        all_b = (b.get("cpu_ms_per_call") or {}).get("all")
        rows.append(
            {
                "target_rate_per_s": a["target_rate_per_s"],
                "ok": [a["ok"], b["ok"]],
                "p50_dial_to_ringing_ms": [a["dial_to_ringing_ms"]["p50"], b["dial_to_ringing_ms"]["p50"]],
                "p99_dial_to_ringing_ms": [a["dial_to_ringing_ms"]["p99"], b["dial_to_ringing_ms"]["p99"]],
                "cluster_cpu_ms_per_call": [cpu_a, cpu_b],
                "cpu_ratio_after_before": round(cpu_b / cpu_a, 3) if cpu_a and cpu_b else None,
                "all_cpu_ms_per_call": [all_a, all_b],
                "load_average_1min": [
                    (a.get("load_average") or {}).get("after", [None])[0],
                    (b.get("load_average") or {}).get("after", [None])[0],
                ],
            }
        )
    ceil_a, ceil_b = before["ceiling_rate_per_s"], after["ceiling_rate_per_s"]
    return {
        "names": [before["variant"]["name"], after["variant"]["name"]],
        "ceiling_rate_per_s": [ceil_a, ceil_b],
        "ceiling_ratio_after_before": round(ceil_b / ceil_a, 3) if ceil_a else None,
        "rows": rows,
    }


async def _scrape(cluster: Cluster, every_s: float) -> None:
    """Scrape every process's /metrics as Prometheus would (its cost belongs to the figures)."""
    urls = [p.metrics for p in [*cluster.sites.values(), *cluster.centrals.values()] if p.metrics]
    while True:
        for url in urls:
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(_http_get(url), 5.0)
        await asyncio.sleep(every_s)


async def _http_get(url: str) -> bytes:
    """GET http://host:port/path, the whole answer (HTTP/1.0: the server closes when done)."""
    host_port, _, path = url.removeprefix("http://").partition("/")
    host, port = host_port.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET /{path} HTTP/1.0\r\nHost: {host_port}\r\n\r\n".encode())
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()


async def _wait_ready_agents(sites: Mapping[str, str], per_site: int, timeout_s: float = 120.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        summaries = await site_summaries(sites, deadline_s=3.0)
        if all(
            not isinstance(s, str) and s.agents_by_state.get("READY", 0) >= per_site
            for s in summaries.values()
        ):
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"robot agents not all READY after {timeout_s:.0f}s")


# -- memory ----------------------------------------------------------------------------------------


async def _login_all(address: str, site_id: str, codes: Sequence[str], concurrency: int = 50) -> list[str]:
    tokens: list[str] = []
    gate = asyncio.Semaphore(concurrency)
    async with rpc.channel(address, persona=DESKTOP, expect=site_server(site_id)) as ch:
        stub = cti_pb2_grpc.AgentDesktopServiceStub(ch)

        async def one(code: str) -> None:
            async with gate:
                reply = await stub.Login(
                    cti_pb2.LoginRequest(
                        idempotency_key=uuid.uuid4().hex, agent_code=code, password=DEFAULT_PASSWORD
                    ),
                    timeout=RPC_DEADLINE_S,
                )
                tokens.append(reply.session_token)

        await asyncio.gather(*(one(c) for c in codes))
    return tokens


def _callers(counts: Counter[str]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if not k.startswith("failed-on-channel-")}


# A trunk offers a call again, with the same idempotency key, when its stream broke before the site
# said anything (CANCELLED, INTERNAL or UNAVAILABLE): the site makes one call of a key however often
# it is offered. At most this many offers per caller.
OFFER_ATTEMPTS = 4
_OFFER_TRANSIENT = (grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE)


class _Unanswered(Exception):
    """The offer's stream broke before the site's first answer: the trunk may offer it again."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        super().__init__(error.code().name)
        self.error = error


async def _offer_until_queued(
    stub: trunk_pb2_grpc.TrunkIngressServiceAsyncStub,
    offer: trunk_pb2.CallOffer,
    n: int,
    counts: Counter[str],
    call_ids: dict[int, str],
) -> tuple[Any, bool]:
    """One offer on a new stream, answering the menu, until the caller waits in the queue: (its
    stream, whether it waits). Raises _Unanswered when the stream broke before any answer."""
    call = stub.PlaceCall(timeout=600.0)
    answered = False
    try:
        await call.write(trunk_pb2.PlaceCallRequest(offer=offer))
        while True:
            response = await call.read()
            if not isinstance(response, trunk_pb2.PlaceCallResponse):
                counts["eof"] += 1
                call.cancel()
                return call, False
            answered = True
            if response.call_id:
                call_ids[n] = response.call_id
            kind = response.WhichOneof("progress")
            if kind == "prompt":
                await call.write(trunk_pb2.PlaceCallRequest(digits=trunk_pb2.CallerDigits(digits="1")))
            elif kind == "queued":
                return call, True
            elif kind == "ended":
                counts[f"ended-{common_pb2.CallOutcome.Name(response.ended.outcome)}"] += 1
                call.cancel()
                return call, False
    except grpc.aio.AioRpcError as exc:
        call.cancel()
        if not answered and exc.code() in _OFFER_TRANSIENT:
            raise _Unanswered(exc) from exc
        raise
    except BaseException:
        call.cancel()
        raise


async def _waiting_caller(
    stub: trunk_pb2_grpc.TrunkIngressServiceAsyncStub,
    dnis: str,
    n: int,
    *,
    queued: asyncio.Event,
    release: asyncio.Event,
    counts: Counter[str],
    setup: asyncio.Semaphore,
    call_ids: dict[int, str],
    failed_after_s: list[float],
) -> None:
    """One caller that dials, answers the menu and waits in the queue until `release`. It holds
    one of `setup`'s places from dialling until it waits (or fails); `call_ids[n]` is its call."""
    offer = trunk_pb2.CallOffer(idempotency_key=uuid.uuid4().hex, ani=f"1380000{n % 1000:04d}", dnis=dnis)

    def again(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, _Unanswered):
            # Counted with gRPC's words: how often, and why, an offer had to be made again.
            counts["offers-again"] += 1
            counts[f"again-{error.error.code().name}: {(error.error.details() or '')[:120]}"] += 1
            failed_after_s.append(time.monotonic() - dialled)

    call = None
    dialled = 0.0
    async with setup:
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(_Unanswered),
                wait=wait_exponential(multiplier=0.2, max=2.0),
                stop=stop_after_attempt(OFFER_ATTEMPTS),
                before_sleep=again,
                reraise=True,
            ):
                with attempt:
                    dialled = time.monotonic()
                    call, waiting = await _offer_until_queued(stub, offer, n, counts, call_ids)
        except (grpc.aio.AioRpcError, _Unanswered) as exc:
            error = exc.error if isinstance(exc, _Unanswered) else exc
            # Counted, so that the figures say why a caller never waited (and gRPC's words for it).
            counts[f"error-{error.code().name}"] += 1
            # Callers failing by whole channels point at the connection (the transport), not the call.
            counts[f"failed-on-channel-{n // CALLERS_PER_CHANNEL}"] += 1
            counts[f"why-{error.code().name}: {(error.details() or '')[:240]}"] += 1
            failed_after_s.append(time.monotonic() - dialled)
            return
        except asyncio.CancelledError:
            if dialled and n not in call_ids:
                # Hung up (the measurement is over) before the site's first answer.
                counts["hung-up-unanswered"] += 1
            raise
    if not waiting or call is None:
        return
    counts["queued"] += 1
    if counts["queued"] >= counts["wanted"]:
        queued.set()
    try:
        # Waits until the measurement is done; cancelling the stream then counts as a hang-up.
        await release.wait()
    finally:
        call.cancel()


async def memory(
    *,
    agents: int = 1000,
    calls: int = 2000,
    run_dir: Path | None = None,
    progress: Progress = lambda _: None,
    after: Callable[[str], Awaitable[None]] | None = None,
    in_setup: int = CALLERS_IN_SETUP,
) -> dict[str, Any]:
    """Resident memory of a site node with `agents` logged in (not ready) and `calls` waiting.
    `after(metrics_url)` is awaited while the calls still wait (more figures of the same site);
    `in_setup`: callers between dialling and waiting at once."""
    import psutil

    with tempfile.TemporaryDirectory(prefix="vcc-bench-") as tmp:
        run = run_dir or Path(tmp)
        trunks = calls + 100
        spec = SiteSpec("gz", "gz", trunk_channels=trunks, agents={"general": agents}, ivr_ports=trunks)
        config_path = await asyncio.to_thread(_province, [spec], run)
        progress("memory: starting etcd, central and one site")
        async with await Cluster.start(
            config_path, run / "cluster", seed_customers=SEED_CUSTOMERS
        ) as cluster:
            site = cluster.config.sites[0]
            proc = psutil.Process(cluster.sites[site.id].pid)
            rss_idle = proc.memory_info().rss
            progress(f"memory: logging in {agents} agents")
            await _login_all(site.listen, site.id, [a.code for a in site.agents])
            rss_logged_in = proc.memory_info().rss
            progress(f"memory: placing {calls} calls that wait")
            queued, release = asyncio.Event(), asyncio.Event()
            counts: Counter[str] = Counter(wanted=calls)
            setup = asyncio.Semaphore(in_setup)
            call_ids: dict[int, str] = {}
            failed_after_s: list[float] = []
            # Many streams per HTTP/2 connection queue behind its concurrent-stream limit: one
            # channel per CALLERS_PER_CHANNEL callers.
            # (Channels with equal arguments share one connection: a local subchannel pool each.)
            # gRPC core gives a connection attempt (TCP, TLS, HTTP/2 settings) no more than
            # `grpc.min_reconnect_backoff_ms`, 100 ms on every vcc channel: a hundred TLS
            # handshakes at once on a loaded machine take longer, and each stream waiting on a
            # channel whose attempt failed ended UNAVAILABLE ("connection attempt timed out before
            # receiving SETTINGS frame", "Handshake read failed"): the scale bench's stall. Its
            # channels get a connect timeout of their own and are connected before any call.
            connect = [("grpc.use_local_subchannel_pool", 1), ("grpc.min_reconnect_backoff_ms", CONNECT_MS)]
            channels = [
                rpc.channel(site.listen, persona=TRUNK, expect=site_server(site.id), options=connect)
                for _ in range(math.ceil(calls / CALLERS_PER_CHANNEL))
            ]
            await asyncio.wait_for(asyncio.gather(*(ch.channel_ready() for ch in channels)), 120.0)
            stubs: list[trunk_pb2_grpc.TrunkIngressServiceAsyncStub] = [
                trunk_pb2_grpc.TrunkIngressServiceStub(ch) for ch in channels
            ]
            callers: list[asyncio.Task[None]] = []
            placing = time.perf_counter()
            try:
                # At a trunk's pace, not all at once: ten thousand streams opened in one instant
                # kept the site's loop from reading their offers within the offer timeout (10 s:
                # INVALID_ARGUMENT "the first message of PlaceCall must be an offer", and INTERNAL).
                for n in range(calls):
                    callers.append(
                        asyncio.create_task(
                            _waiting_caller(
                                stubs[n // CALLERS_PER_CHANNEL],
                                cluster.config.province.service_number,
                                n,
                                queued=queued,
                                release=release,
                                counts=counts,
                                setup=setup,
                                call_ids=call_ids,
                                failed_after_s=failed_after_s,
                            )
                        )
                    )
                    if n % WAITING_CALLERS_PER_S == WAITING_CALLERS_PER_S - 1:
                        await asyncio.sleep(1.0)
                        progress(f"memory: callers {_callers(counts)}")
                loop = asyncio.get_running_loop()
                # Callers arrive at the pace the site sets calls up (CALLERS_IN_SETUP): on a loaded
                # machine 50 to 100 a second, so 10,000 take minutes.
                deadline = loop.time() + 900.0
                stalled_since, last = loop.time(), -1
                while not queued.is_set():
                    if counts["queued"] != last:
                        stalled_since, last = loop.time(), counts["queued"]
                    given_up = counts["eof"] + sum(
                        v for k, v in counts.items() if k.startswith(("error-", "ended-"))
                    )
                    # Measure what is there rather than fail: the figures say how many waited.
                    if (
                        loop.time() > deadline
                        or loop.time() - stalled_since > 30.0
                        or counts["queued"] + given_up >= calls
                    ):
                        progress(f"memory: not every caller queued ({_callers(counts)}); measuring anyway")
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(queued.wait(), timeout=5.0)
                    progress(f"memory: callers {_callers(counts)}")
                filled_s = time.perf_counter() - placing
                # A loaded site answers slowly: a generous deadline, not a missing figure.
                summaries = await site_summaries({site.id: site.listen}, deadline_s=30.0)
                summary = summaries[site.id]
                rss = proc.memory_info().rss
                waiting = 0 if isinstance(summary, str) else int(summary.calls_waiting)
                by_state = {} if isinstance(summary, str) else dict(summary.agents_by_state)
                if after is not None and cluster.sites[site.id].metrics:
                    await after(cluster.sites[site.id].metrics)
            finally:
                release.set()
                for task in callers:
                    task.cancel()
                await asyncio.gather(*callers, return_exceptions=True)
                for ch in channels:
                    await ch.close()
            # Every caller hung up while waiting: central holds exactly one record of each.
            progress(f"memory: the callers hung up; waiting for {len(call_ids)} records at central")
            shipped = await wait_outboxes({site.id: site.listen}, timeout_s=600.0)
            records = await list_records(cluster.addresses.central)
            # Callers hung up before the site's first answer: their calls may exist unbeknown to them.
            unanswered = counts["hung-up-unanswered"]
    mib = 1024 * 1024
    return {
        "agents_logged_in": agents,
        "agents_by_state": by_state,
        "calls_waiting": waiting,
        "callers": {k: v for k, v in counts.items() if not k.startswith("failed-on-channel-")},
        "failed_callers_by_channel": sorted(
            (v for k, v in counts.items() if k.startswith("failed-on-channel-")), reverse=True
        ),
        "callers_per_channel": CALLERS_PER_CHANNEL,
        "callers_in_setup_at_most": in_setup,
        "failed_after_s": percentiles_ms(failed_after_s) if failed_after_s else {},
        "queue_filled_in_s": round(filled_s, 1),
        "records": records_verdict(call_ids.values(), records, shipped=shipped, unanswered=unanswered),
        "rss_mib": rss / mib,
        "rss_idle_mib": rss_idle / mib,
        "rss_agents_only_mib": rss_logged_in / mib,
        "target_mib": 200,
        "ok": rss / mib < 200 and waiting >= calls,
    }


def records_verdict(
    call_ids: Iterable[str],
    records: Sequence[central_pb2.CallRecord],
    *,
    shipped: bool,
    unanswered: int = 0,
) -> dict[str, Any]:
    """Central's records against the calls the callers were given: exactly one record of each, each
    ABANDONED (the caller hung up while waiting), and no record of a call no caller was given,
    beyond the `unanswered` callers who hung up before the site's first answer (their calls may
    exist, unbeknown to them)."""
    ids = set(call_ids)
    held = Counter(r.call_id for r in records)
    missing = sorted(ids - held.keys())
    duplicated = sorted(c for c, n in held.items() if n > 1)
    unknown = sorted(held.keys() - ids)
    not_abandoned = Counter(
        common_pb2.CallOutcome.Name(r.outcome)
        for r in records
        if r.call_id in ids and r.outcome != common_pb2.CALL_OUTCOME_ABANDONED
    )
    return {
        "calls": len(ids),
        "records": len(records),
        "outboxes_empty": shipped,
        "missing": len(missing),
        "duplicated": len(duplicated),
        "unknown": len(unknown),
        "callers_hung_up_unanswered": unanswered,
        "not_abandoned": dict(not_abandoned),
        "examples": (missing + duplicated + unknown)[:5],
        "exact": shipped
        and not missing
        and not duplicated
        and len(unknown) <= unanswered
        and not not_abandoned,
    }


# -- routing latency ---------------------------------------------------------------------------------


async def bare_round_trip(
    samples: int = 2000, *, tls: bool = True, authorized: bool = False
) -> dict[str, Any]:
    """A grpc.aio unary round trip on this machine: the health check of an empty vcc server, over
    mutual TLS like every vcc link (tls=False: plaintext, to show what TLS costs; authorized: with
    the authorization table's interceptor too, as every vcc server has it: what that costs)."""

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from tools.province.certs import issue, make_ca
    from vcc.authz import Authorizer
    from vcc.tls import TlsFiles

    folder = Path(tempfile.mkdtemp(prefix="vcc-bench-certs-"))
    server_files = client_files = None
    if tls:
        make_ca(folder, "bench")
        issue(folder, "central", "1")
        issue(folder, "tool", "cli")
        server_files = TlsFiles(folder / "ca.crt", folder / "central-1.crt", folder / "central-1.key")
        client_files = TlsFiles(folder / "ca.crt", folder / "tool-cli.crt", folder / "tool-cli.key")
    server = rpc.Server([], tls=server_files, interceptors=[Authorizer([])] if tls and authorized else [])
    port = await server.start("127.0.0.1:0")
    try:
        async with rpc.channel(f"127.0.0.1:{port}", tls=client_files, expect=central_server()) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            for _ in range(50):  # warm the channel up
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=RPC_DEADLINE_S)
            times = []
            for _ in range(samples):
                t0 = time.perf_counter()
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=RPC_DEADLINE_S)
                times.append(time.perf_counter() - t0)
    finally:
        await server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return percentiles_ms(times)


def local_decision_in_process(samples: int = 5000) -> dict[str, Any]:
    """The site code alone: a caller's digits to the `ringing` effect (queue + ACD match), no I/O."""
    from site_node.callcontrol import Switchboard
    from site_node.callcontrol.domain import ToCaller
    from tools.simulation.model_engine import ModelPlan, ModelSite, province_for

    plan = ModelPlan(sites=[ModelSite("gz", samples + 10, {"general": 20}, 1.0)], duration_s=1.0)
    province = province_for(plan)
    board = Switchboard(province.sites[0], province.province.service_number, routing=province.routing)
    now = 0.0
    for code in board.agents:
        board.login(now, code)
        board.set_ready(now, code, True)
    times = []
    for i in range(samples):
        now += 1.0
        call_id, _ = board.offer(
            now, idempotency_key=f"k{i}", ani="13800000001", dnis=province.province.service_number
        )
        board.customer_found(now, call_id, None)
        t0 = time.perf_counter()
        effects = board.caller_digits(now, call_id, "1")
        times.append(time.perf_counter() - t0)
        assert any(isinstance(e, ToCaller) and e.kind == "ringing" for e in effects)
        code = board.calls[call_id].agent_code
        board.answer(now, code, call_id)
        board.agent_hang_up(now, code, call_id)
        board.tick(now)
    return percentiles_ms(times)


# Callers ring from a few known numbers, so the site's screen-pop cache is warm after the first
# calls: the figures are the ACD's and the router's, not the customer database's (the first
# WARM_UP calls are left out).
WARM_UP = 20


# The bench's WAN (one-way, ms): fs's overflow goes to gz (10 ms away); central is 15 ms from fs.
BENCH_WAN_MS = {
    "fs-gz": 10.0,
    "fs-sz": 20.0,
    "gz-sz": 15.0,
    "central-fs": 15.0,
    "central-gz": 5.0,
    "central-sz": 10.0,
}
# The side-by-side city of the stream comparison: fs's twin (nobody logged in, the same links),
# whose legs take a ServeCall stream each where fs's ride on its pair streams.
PER_CALL_TWIN = "fo"
TWIN_WAN_MS = {"fo-gz": 10.0, "fo-sz": 20.0, "fo-fs": 5.0, "central-fo": 15.0}
BENCH_WAN_JITTER_MS = 2.0


async def decisions_on_cluster(
    *,
    calls: int = 400,
    run_dir: Path | None = None,
    progress: Progress = lambda _: None,
    push_targets: bool = True,
    wan: Mapping[str, float] | None = None,
    local: bool = True,
    streams: bool = False,
) -> dict[str, dict[str, Any]]:
    """Over the wire, on one cluster: the caller sends its menu digit; time until it hears
    `ringing`. Local: a free agent at gz. Cross-site: nobody is logged in at fs, so the call goes
    to a free agent at gz or sz: offered at once to the target central pushed to fs
    (`push_targets`), or after asking central (RouteCall), then the site-to-site offer.
    `wan`: every inter-city link delayed so (one-way ms, "a-b" keys; tools/province/faultproxy.py).
    `streams`: fs's twin city (PER_CALL_TWIN) offers on a ServeCall stream per leg where fs uses
    its pair streams; the two take turns call by call (row `cross_site_overflow_per_call`)."""
    from tools.province.faultproxy import Wan
    from tools.province.proxied import start_with_fault_proxies

    with tempfile.TemporaryDirectory(prefix="vcc-bench-") as tmp:
        run = run_dir or Path(tmp)
        # The cross-site rows' calls, for their steps from the spans once the processes stopped.
        traced: dict[str, list[Rung]] = {}
        specs = [
            SiteSpec("gz", "gz", trunk_channels=200, agents={"general": 20}),
            SiteSpec("sz", "sz", trunk_channels=200, agents={"general": 20}, tie_channels=50),
            SiteSpec("fs", "fs", trunk_channels=200, agents={"general": 1}, tie_channels=50),
        ]
        twin = (PER_CALL_TWIN,) if streams else ()
        specs += [SiteSpec(t, t, trunk_channels=200, agents={"general": 1}, tie_channels=50) for t in twin]
        if wan and streams:
            wan = {**wan, **TWIN_WAN_MS}
        config_path = await asyncio.to_thread(
            _province, specs, run, mode="overflow", push_targets=push_targets, per_call_streams=twin
        )
        where = f", WAN {dict(wan)} ms" if wan else ""
        progress(
            f"routing: starting etcd, central and {len(specs)} sites (pushed targets {push_targets}{where})"
        )
        proxies = None
        if wan:
            delays = {frozenset(k.split("-", 1)): v / 1000 for k, v in wan.items()}
            cluster, proxies = await start_with_fault_proxies(
                config_path,
                run / "cluster",
                partitionable=[],
                seed_customers=SEED_CUSTOMERS,
                wan=Wan(delays, jitter_s=BENCH_WAN_JITTER_MS / 1000),
            )
        else:
            cluster = await Cluster.start(config_path, run / "cluster", seed_customers=SEED_CUSTOMERS)
        try:
            async with cluster:
                stop = asyncio.Event()
                policy = RobotPolicy(
                    handle_time_mean_s=0.05, handle_distribution="constant", wrap_up="immediate"
                )
                staffed = [s for s in cluster.config.sites if s.id in ("gz", "sz")]
                robots = [
                    asyncio.create_task(
                        run_robots(
                            s.listen,
                            [(a.code, DEFAULT_PASSWORD) for a in s.agents if a.role == "agent"],
                            policy,
                            stop,
                        )
                    )
                    for s in staffed
                ]
                result: dict[str, dict[str, Any]] = {}
                try:
                    await _wait_ready_agents({s.id: s.listen for s in staffed}, 20)
                    # The pushed targets follow the robots' READY states within a state period.
                    await asyncio.sleep(1.0)
                    dnis = cluster.config.province.service_number
                    # (row, whether the call leaves its city, its origins: each a row, taking turns)
                    paths: list[tuple[str, bool, tuple[str, ...]]] = (
                        [("local_acd_over_grpc", False, ("gz",))] if local else []
                    )
                    paths.append(("cross_site_overflow", True, ("fs", *twin)))
                    for name, elsewhere, origins in paths:
                        progress(f"routing: {calls} calls at {' and '.join(origins)}, one at a time ({name})")
                        taken = await _calls_taking_turns(cluster, dnis, origins, calls, elsewhere=elsewhere)
                        for origin, rung in taken.items():
                            row_name = name if origin == origins[0] else f"{name}_per_call"
                            result[row_name] = percentiles_ms([r.seconds for r in rung])
                            result[row_name]["load_average"] = os.getloadavg()
                            if elsewhere:
                                traced[row_name] = rung
                    result["cross_site_overflow"]["pushed"] = _count_pushed(cluster)
                finally:
                    stop.set()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.gather(*robots), 20.0)
        finally:
            if proxies is not None:
                await proxies.stop()
        # Once the processes stopped: every span is written.
        spans = read_spans(run) if traced else []
        for row_name, rung in traced.items():
            result[row_name]["steps_ms"] = cross_site_steps(spans, rung)
    return result


def _count_pushed(cluster: Cluster) -> dict[str, int]:
    """How central's log says the cross-site calls were decided (pushed target or RouteCall)."""
    text = ""
    for path in (cluster.run_dir / "logs").glob("central*.log"):
        with contextlib.suppress(OSError):
            text += path.read_text(encoding="utf-8", errors="replace")
    return {
        "pushed_target": text.count("(pushed target, push"),
        "route_call": text.count(" -> ") - text.count("(pushed target, push"),
    }


@dataclass(frozen=True)
class Rung:
    """One caller's digit → `ringing`: the bench's figure, and the two instants on the wall clock
    (the spans' clock) to place the cities' steps between them."""

    seconds: float
    call_id: str
    sent_at: float
    rung_at: float


async def _calls_taking_turns(
    cluster: Cluster, dnis: str, origins: Sequence[str], calls: int, *, elsewhere: bool
) -> dict[str, list[Rung]]:
    """`calls` calls at each origin, one at a time, the origins taking turns (the lead changes
    each round, so neither always follows the other); the first WARM_UP rounds left out."""
    taken: dict[str, list[Rung]] = {o: [] for o in origins}
    async with contextlib.AsyncExitStack() as stack:
        stubs: dict[str, trunk_pb2_grpc.TrunkIngressServiceAsyncStub] = {}
        for origin in origins:
            ch = await stack.enter_async_context(
                rpc.channel(cluster.config.site(origin).listen, persona=TRUNK, expect=site_server(origin))
            )
            stubs[origin] = trunk_pb2_grpc.TrunkIngressServiceStub(ch)
        for n in range(calls + WARM_UP):
            for origin in origins if n % 2 == 0 else list(reversed(origins)):
                rung = await _digits_to_ringing(stubs[origin], dnis, n, origin=origin, elsewhere=elsewhere)
                if rung is not None and n >= WARM_UP:
                    taken[origin].append(rung)
    return taken


def cross_site_steps(spans: Sequence[SpanRow], rung: Sequence[Rung]) -> dict[str, float | None]:
    """p50 of each step of the overflowed calls, from their spans (the origin's `queue` and leg
    span, the target's `call.guest` and `ring`) and the bench's two instants."""
    by_call: dict[str, str] = {}
    for span in spans:
        call_id = span.attributes.get("vcc.call_id")
        if span.name == "call" and isinstance(call_id, str):
            by_call[call_id] = span.trace_id
    in_trace: dict[str, dict[str, SpanRow]] = {}
    for span in spans:
        in_trace.setdefault(span.trace_id, {}).setdefault(span.name, span)
    steps: dict[str, list[float]] = {k: [] for k in CROSS_SITE_STEPS}
    for r in rung:
        named = in_trace.get(by_call.get(r.call_id, ""), {})
        queue, leg, ring = named.get("queue"), named.get(SERVE_CALL_SPAN), named.get("ring")
        if queue is None or leg is None or ring is None:
            continue
        at = [r.sent_at * 1e9, queue.start_ns, leg.start_ns, ring.start_ns, r.rung_at * 1e9]
        for name, start, end in zip(CROSS_SITE_STEPS, at, at[1:], strict=False):
            steps[name].append((end - start) / 1e6)
    return {name: (statistics.median(v) if v else None) for name, v in steps.items()} | {
        "calls_traced": float(len(steps[CROSS_SITE_STEPS[0]]))
    }


SERVE_CALL_SPAN = "/vcc.v1.SitePeerService/ServeCall"
CROSS_SITE_STEPS = (
    "digit_to_queued",  # the caller's digit → the origin queued and decided the call
    "queued_to_leg",  # → the origin's leg to the target starts (its task's turn on the loop)
    "leg_to_ring",  # → the target serves the guest call and rings its agent
    "ring_to_caller",  # → the caller hears `ringing` (the reservation back, the origin's loop)
)


async def _digits_to_ringing(
    stub: trunk_pb2_grpc.TrunkIngressServiceAsyncStub, dnis: str, n: int, *, origin: str, elsewhere: bool
) -> Rung | None:
    call = stub.PlaceCall(timeout=30.0)
    sent = None
    sent_at = 0.0
    try:
        await call.write(
            trunk_pb2.PlaceCallRequest(
                offer=trunk_pb2.CallOffer(
                    idempotency_key=uuid.uuid4().hex, ani=f"1380000{n % 10:04d}", dnis=dnis
                )
            )
        )
        while True:
            response = await call.read()
            if not isinstance(response, trunk_pb2.PlaceCallResponse):
                return None
            kind = response.WhichOneof("progress")
            if kind == "prompt":
                sent, sent_at = time.perf_counter(), time.time()
                await call.write(trunk_pb2.PlaceCallRequest(digits=trunk_pb2.CallerDigits(digits="1")))
            elif kind == "ringing":
                if sent is None or (response.ringing.site_id != origin) != elsewhere:
                    return None
                return Rung(time.perf_counter() - sent, response.call_id, sent_at, time.time())
            elif kind == "ended":
                return None
    finally:
        # The caller goes away once it heard the ring: the robot's answer then finds no call.
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await call.write(trunk_pb2.PlaceCallRequest(hang_up=trunk_pb2.CallerHangUp()))
            while await call.read() is not grpc.aio.EOF:
                pass
        call.cancel()


async def routing(
    *,
    calls: int = 400,
    progress: Progress = lambda _: None,
    wan: bool = True,
    streams: bool = True,
    asking: bool = True,
    compare: Sequence[str] = (),
) -> dict[str, Any]:
    """Bare round trip vs local ACD decision vs cross-site overflow decision (pushed targets and,
    side by side, asking central first; on loopback and on an emulated WAN), p50/p99 and ratios.
    `streams`: the pushed rows also on a ServeCall stream per leg, taking turns with the pair
    stream's calls in the same cluster (`*_per_call` rows). `compare`: names of COMPARISONS whose
    switches are environment only; the local and pushed rows again on a province so switched
    (`NAME:` rows), then once more as shipped (`again:` rows, set up as the `NAME:` ones: compare
    against those, not the first rows, whose cluster may hold the twin city), in this run."""
    variants = [routing_variant(name) for name in compare]
    load_before = os.getloadavg()
    progress("routing: bare grpc.aio unary round trips")
    bare = await bare_round_trip()
    plaintext = await bare_round_trip(tls=False)
    authorized = await bare_round_trip(authorized=True)
    progress("routing: local ACD decision in process")
    in_process = await asyncio.to_thread(local_decision_in_process)
    over_wire = await decisions_on_cluster(calls=calls, progress=progress, streams=streams)
    if asking:
        asked = await decisions_on_cluster(calls=calls, progress=progress, push_targets=False, local=False)
        over_wire["cross_site_asking_central"] = asked["cross_site_overflow"]
    wan_rows: dict[str, dict[str, Any]] = {}
    for push in (True, False) if wan else ():
        if not (push or asking):
            continue
        got = await decisions_on_cluster(
            calls=max(20, calls // 4),
            progress=progress,
            push_targets=push,
            wan=BENCH_WAN_MS,
            local=False,
            streams=streams and push,
        )
        # fs -> gz and back (offer, reservation); asking central first adds fs -> central and back.
        one_way = BENCH_WAN_MS["fs-gz"] + (0.0 if push else BENCH_WAN_MS["central-fs"])
        name = "wan_cross_site_" + ("pushed" if push else "asking_central")
        for suffix, row in (
            ("", got["cross_site_overflow"]),
            ("_per_call", got.get("cross_site_overflow_per_call")),
        ):
            if row is None:
                continue
            row["link_delay_ms"] = {"fs-gz": BENCH_WAN_MS["fs-gz"], "central-fs": BENCH_WAN_MS["central-fs"]}
            row["floor_ms"] = 2 * one_way
            row["p50_over_floor"] = row["p50"] / row["floor_ms"] if row.get("p50") else None
            wan_rows[name + suffix] = row

    for name, variant in (*zip(compare, variants, strict=True), ("again", AS_SHIPPED)) if compare else ():
        with _environment(variant.env):
            switched = await decisions_on_cluster(calls=calls, progress=progress)
        for row_name in ("local_acd_over_grpc", "cross_site_overflow"):
            over_wire[f"{name}: {row_name}"] = {**switched[row_name], "variant": variant.name}

    def ratio(row: Mapping[str, Any], key: str) -> float | None:
        value, base = row.get(key), bare.get(key)
        return value / base if isinstance(value, float) and isinstance(base, float) and base > 0 else None

    # The base is the mTLS round trip (every vcc link); the plaintext one shows what TLS costs.
    rows = {
        "bare_round_trip": bare,
        "bare_round_trip_plaintext": plaintext,
        "bare_round_trip_authorized": authorized,
        "local_acd_in_process": in_process,
        **over_wire,
        **wan_rows,
    }
    return {
        "rows": {
            name: {**row, "p50_ratio": ratio(row, "p50"), "p99_ratio": ratio(row, "p99")}
            for name, row in rows.items()
        },
        "wan_ms": BENCH_WAN_MS,
        "wan_jitter_ms": BENCH_WAN_JITTER_MS,
        "load_average_before": load_before,
        "load_average": os.getloadavg(),
        "goal": "cross-site decision within 3 bare round trips at p50",
    }


def routing_variant(name: str) -> Variant:
    """The comparison `name` for `vcc bench routing`: one that switches the processes'
    environment only (the routing bench sets up its province itself)."""
    variant = COMPARISONS.get(name)
    if variant is None:
        raise ValueError(f"{name!r}: one of {', '.join(COMPARISONS)}")
    if replace(variant, env={}, name=AS_SHIPPED.name) != AS_SHIPPED:
        raise ValueError(f"{name!r} changes more than the processes' environment: not for the routing bench")
    if not variant.env:
        raise ValueError(f"{name!r} switches nothing: every --compare comes with an as-shipped run again")
    return variant


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
