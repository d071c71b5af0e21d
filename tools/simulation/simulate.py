"""`vcc simulate SCENARIO.yaml --report REPORT.json`: a scenario on a real local cluster (SPEC §6).

The runner (tools/simulation/runner.py) builds the scenario's province (one site node process per
site, central on SQLite in the run folder or on a temporary PostgreSQL server), starts it with
etcd, logs robot agents in at every site, offers Poisson traffic at every site's trunk and applies
the fault events at their times. Everything is measured from the callers' side
(tools/simulation/report.py), reconciled with central's records, held to the invariants
(tools/simulation/invariants.py); lost calls are attributed to the faults and the run judged by
tools/simulation/faults.py: a call lost elsewhere makes the run unclean (exit code 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tools.simulation import invariants
from tools.simulation.faults import (
    central_notice_s,
    classify_faults,
    event_rows,
    misrouted_to_dead_city,
    question_outcomes,
    verdict,
)
from tools.simulation.report import build_report, render_table
from tools.simulation.robots import RobotStats
from tools.simulation.runner import ScenarioRun, SimulationError, open_run
from tools.simulation.scenario import Scenario
from vcc.https import province_ca, web_url
from vcc.v1 import central_pb2

DEFAULT_RUN_DIR = Path("run/simulate")
PROGRESS_EVERY_S = 0.25


@dataclass
class SimulationResult:
    report: dict[str, object]
    problems: list[str]

    @property
    def clean(self) -> bool:
        return not self.problems


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
    say = say_to(console)
    say(
        f"starting etcd, central ({scenario.central.database}) and {len(scenario.sites)} site(s) in {run_dir}"
    )
    async with open_run(scenario, run_dir, log_file="simulate.log" if console is not None else None) as run:
        await run.start_robots()
        agents = sum(scenario.agents_per_site().values())
        say(f"{agents} robot agents ready; traffic for {scenario.traffic_s:g}s")
        run.begin_traffic()
        events = asyncio.create_task(run.apply_events())
        try:
            await _with_progress(run.offer_traffic(), run, console)
        finally:
            if not events.done():
                events.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await events
        say(f"{len(run.views)} calls ended; waiting for the sites' outboxes and central's records")
        records, stats = await run.collect()
        result = build_result(run, records, stats)
        if before_stop is not None:
            await before_stop(result)
        return result


async def _with_progress(work: Any, state: ScenarioRun, console: Console | None) -> None:
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
            elapsed = min(total, time.time() - state.traffic_start)
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


def build_result(
    state: ScenarioRun,
    records: list[central_pb2.CallRecord] | None,
    stats: Mapping[str, RobotStats],
) -> SimulationResult:
    """The report of a run that has ended (SPEC §6) and the reasons it is not clean."""
    scenario, traffic_start = state.scenario, state.traffic_start
    traffic_end = traffic_start + scenario.traffic_s
    notice_s = central_notice_s(state.cluster.config.etcd.lease_ttl_s)
    on_failed, refused = classify_faults(state.views, state.outages, time.time(), central_notice_s=notice_s)
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
    report["dashboard_url"] = web_url(state.cluster.config, dashboard) if dashboard else None
    # The CA the dashboard's certificate is checked with (None: no tls, plain HTTP).
    report["web_ca_file"] = province_ca(state.cluster.config)
    # Calls the exchange delivered to another city than the caller's (its city was down), by city.
    report["pre_routed"] = dict(
        sorted(Counter(v.home_site_id for v in state.views if v.home_site_id != v.entry_site_id).items())
    )
    # Of those, the ones an agent answered there: the city's callers served elsewhere.
    report["pre_routed_answered"] = dict(
        sorted(
            Counter(
                v.home_site_id
                for v in state.views
                if v.home_site_id != v.entry_site_id and v.outcome == "answered"
            ).items()
        )
    )
    misrouted = misrouted_to_dead_city(state.views, state.outages, central_notice_s=notice_s)
    report["pre_routed_to_dead_city"] = len(misrouted)
    report["site_claims"] = question_outcomes(
        state.views,
        trunk_channels={s.id: s.trunk_channels for s in scenario.sites},
        robots_answered={site_id: s.answered for site_id, s in stats.items()},
    )
    # The calls lost elsewhere, to look into: when (from the start of traffic), where, how.
    report["lost_elsewhere_calls"] = [
        {
            "offered_s": round(v.offered_at - traffic_start, 3),
            "ended_s": round(v.ended_at - traffic_start, 3) if v.ended_at is not None else None,
            "entry_site_id": v.entry_site_id,
            "home_site_id": v.home_site_id,
            "call_id": v.call_id,
            "outcome": v.outcome,
            "error": v.error or v.reason,
            "heard": [kind for kind, _, _ in v.progress],
        }
        for v in state.views
        if v.outcome in ("lost", "failed") and v.key not in on_failed | refused
    ][:20]
    report["outages"] = [
        {
            "site_id": o.site_id,
            "began_s": round(o.began - traffic_start, 3),
            "gone_s": round(o.gone - traffic_start, 3),
            "up_s": round(o.up - traffic_start, 3) if o.up is not None else None,
            "restarting_s": round(o.restarting - traffic_start, 3) if o.restarting is not None else None,
        }
        for o in state.outages
    ]
    problems = verdict(report, state.views, on_failed | refused, state.applied)
    if records is not None:
        kept = invariants.check(state.views, records)
        report["invariants"] = kept
        problems += invariants.broken(kept)
    report["clean"] = not problems
    report["problems"] = problems
    return SimulationResult(report, problems)


# -- entry point ------------------------------------------------------------------------------------


def say_to(console: Console | None) -> Callable[[str], None]:
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
        if engine != "model" and scenario.ivr is not None:
            raise SimulationError("ivr: flows run in --engine model only (on a cluster: vcc ivr push)")
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
    """`tools.simulation.model_engine.run_model` (virtual time), if it is installed."""
    try:
        module = importlib.import_module("tools.simulation.model_engine")
    except ModuleNotFoundError as exc:
        if exc.name != "tools.simulation.model_engine":
            raise
        raise SimulationError(
            "the model engine (tools/simulation/model_engine.py) is not part of this installation yet"
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
    """Why a model engine run is not clean: calls lost elsewhere, or none answered at all."""
    totals = report.get("totals")
    lost = totals.get("lost_elsewhere") if isinstance(totals, Mapping) else None
    everything = report.get("all_calls")
    answered = everything.get("answered") if isinstance(everything, Mapping) else None
    problems = [f"{lost} calls lost elsewhere"] if lost else []
    if not answered:
        problems.append("no call answered")
    return problems
