"""`vcc chaos soak`: one long busy run that is broken again and again, checked after every cycle.

The issue's last target: 20 fault cycles in a row with no invariant broken. One cluster (three
cities behind fault proxies, two central replicas, PostgreSQL or SQLite), robots at every site and
Poisson callers for the whole run, all through the public API of `vcc simulate`'s runner
(tools/simulation/runner.py: the same province, traffic, robots and fault actions; the same
attribution and report, tools/simulation/faults.py and simulate.py). Each cycle applies one
fault, in rotation, and undoes it `fault_s` later:

- kill_site (SIGKILL) / restart_site, the cities in turn;
- kill_central_leader, then the killed replica is started again (so the next kill has a follower
  to take over);
- stop_database / start_database (PostgreSQL only: SQLite lives inside central);
- partition_site / heal_site, the cities in turn.

At the end of every cycle the calls that have ended so far (all of them, since the start) are held
to the invariants of tools/simulation/invariants.py and reconciled with central's records: missing 0,
duplicated 0, mismatched 0, every ended call exactly one record; and no call of the cycle may be
lost elsewhere (only calls on a killed site, or refused by it, are excused), and some call
offered in the cycle must have been answered. Service gaps are measured per cycle, once every
call has ended, within the cycle's own window.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from tools.simulation import invariants
from tools.simulation.faults import central_notice_s, classify_faults, event_rows
from tools.simulation.report import reconcile_detailed
from tools.simulation.runner import AppliedEvent, Outage, ScenarioRun, SimulationError, open_run
from tools.simulation.scenario import EventAction, EventSpec, Scenario, parse_scenario
from tools.simulation.simulate import build_result, say_to, write_report
from tools.simulation.traffic import CallerView

Database = Literal["postgresql", "sqlite"]
DEFAULT_RUN_DIR = Path("run/soak")
SITES = ("gz", "sz", "fs")
# The fault of each cycle, in turn, and what undoes it (None: nothing to undo but the replica).
ROTATION: dict[Database, tuple[EventAction, ...]] = {
    "postgresql": ("kill_site", "kill_central_leader", "stop_database", "partition_site"),
    "sqlite": ("kill_site", "kill_central_leader", "partition_site"),
}
UNDO: dict[str, EventAction | None] = {
    "kill_site": "restart_site",
    "kill_central_leader": None,
    "stop_database": "start_database",
    "partition_site": "heal_site",
}
WARMUP_S = 4.0
TAIL_S = 3.0
LEADER_WAIT_S = 20.0
# A call that ended this close to a check may not have reached central yet: the next check has it.
CHECK_MARGIN_S = 2.0


@dataclass
class Cycle:
    number: int
    fault: str
    target: str
    start: float  # unix time the cycle began (its fault was applied right then)
    fault_event: AppliedEvent | None = None
    undo_event: AppliedEvent | None = None
    replica_back_s: float | None = None
    # The replica that leads once the killed one is back (a leader kill hands over to the other).
    leader_after: str = ""
    # Filled by the check at the end of the cycle.
    checked_calls: int = 0
    reconciliation: dict[str, int] = field(default_factory=dict)
    invariants: dict[str, object] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def soak_scenario(cycles: int, database: Database, cycle_s: float, seed: int = 5) -> Scenario:
    """Three cities with spare agents (a dead city's callers fit in the other two), overflow routing."""
    return parse_scenario(
        {
            "seed": seed,
            "duration_s": cycles * cycle_s + TAIL_S,
            "warmup_s": WARMUP_S,
            "handle_time": {"mean_s": 1.5, "distribution": "exponential"},
            "patience": {"mean_s": 30.0, "distribution": "exponential"},
            "service_level_threshold_s": 1.0,
            "ring_delay_s": 0.2,
            "wrap_up_s": 0.3,
            "routing": {"mode": "overflow", "after_s": 1.0},
            "central": {"replicas": 2, "database": database},
            "sites": [
                {"id": s, "trunk_channels": 40, "agents": {"general": 5}, "arrival_rate_per_s": 1.2}
                for s in SITES
            ],
        },
        "soak",
    )


async def soak(
    cycles: int = 20,
    database: Database = "postgresql",
    run_dir: Path = DEFAULT_RUN_DIR,
    *,
    cycle_s: float = 16.0,
    fault_s: float = 6.0,
    console: Console | None = None,
) -> dict[str, object]:
    """Run the soak; its report (`clean`, `cycles`, `totals`, and the whole run's `run` report)."""
    if cycles < 1:
        raise SimulationError("--cycles: at least 1")
    if not 0 < fault_s < cycle_s:
        raise SimulationError(f"fault_s {fault_s:g} must be within the cycle ({cycle_s:g}s)")
    scenario = soak_scenario(cycles, database, cycle_s)
    say = say_to(console)
    say(f"starting etcd, 2 central replicas ({database}), {len(SITES)} sites behind fault proxies")
    log_file = "soak.log" if console is not None else None
    async with open_run(scenario, run_dir, partitionable=SITES, log_file=log_file) as run:
        return await _soak(run, cycles, cycle_s, fault_s, say)


async def _soak(
    run: ScenarioRun, cycles: int, cycle_s: float, fault_s: float, say: Callable[[str], None]
) -> dict[str, object]:
    await run.start_robots()
    say(f"robots ready; {cycles} cycles of {cycle_s:g}s under traffic")
    traffic_start = run.begin_traffic()
    traffic = asyncio.create_task(run.offer_traffic())
    try:
        done = await _cycles(run, traffic_start, cycles=cycles, cycle_s=cycle_s, fault_s=fault_s, say=say)
        await traffic
    finally:
        if not traffic.done():
            traffic.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await traffic
    say(f"{len(run.views)} calls ended; final reconciliation")
    records, stats = await run.collect()
    result = build_result(run, records, stats)
    return summarize(
        done,
        run.views,
        run.outages,
        result.report,
        result.problems,
        traffic_start=traffic_start,
        cycle_s=cycle_s,
        central_notice_s=central_notice_s(run.cluster.config.etcd.lease_ttl_s),
        run_end=time.time(),
    )


async def _cycles(
    state: ScenarioRun,
    traffic_start: float,
    *,
    cycles: int,
    cycle_s: float,
    fault_s: float,
    say: Callable[[str], None],
) -> list[Cycle]:
    rotation = ROTATION[state.scenario.central.database]
    done: list[Cycle] = []
    for n in range(cycles):
        fault = rotation[n % len(rotation)]
        # Each city in turn for each site fault: the n-th kill_site hits the n-th city.
        turn = n // len(rotation)
        target = SITES[turn % len(SITES)] if fault in ("kill_site", "partition_site") else ""
        begin = traffic_start + WARMUP_S + n * cycle_s
        await _sleep_until(begin)
        cycle = Cycle(n + 1, fault, target or ("database" if "database" in fault else "central"), time.time())
        cycle.fault_event = await _event(state, fault, target, traffic_start)
        if fault == "kill_central_leader":
            back = time.time()
            cycle.leader_after = await _restore_replicas(state)
            cycle.replica_back_s = round(time.time() - back, 3)
        undo = UNDO[fault]
        if undo is not None:
            await _sleep_until(begin + fault_s)
            cycle.undo_event = await _event(state, undo, target, traffic_start)
        await _sleep_until(begin + cycle_s)
        await _check(state, cycle, until=time.time() - CHECK_MARGIN_S)
        say(
            f"cycle {cycle.number:>2}/{cycles} {fault:<20} {cycle.target:<8} "
            + ("invariants kept" if not cycle.problems else "BROKEN: " + "; ".join(cycle.problems))
        )
        done.append(cycle)
    return done


async def _restore_replicas(state: ScenarioRun) -> str:
    """The killed replica back as a follower (the next kill has somebody to take over); whoever
    took over keeps leading — replica 2 as well as replica 1, so the cycles after a leader kill
    run (and the next leader kill strikes) with a leader that is not the first replica. The
    callers' network follows a follower's `not-leader` answer to the leader and, when the replica
    it asks is gone, asks the next one. Returns the replica that leads."""
    cluster = state.cluster
    for replica in range(1, cluster.central_replicas + 1):
        await cluster.start_central_replica(str(replica))
    leader = await cluster.wait_central_leader(timeout_s=LEADER_WAIT_S)
    return leader.replica_id


async def _event(state: ScenarioRun, action: EventAction, site: str, traffic_start: float) -> AppliedEvent:
    spec = EventSpec(at_s=round(time.time() - traffic_start, 3), action=action, site=site or None)
    return await state.apply(spec)


async def _check(state: ScenarioRun, cycle: Cycle, *, until: float) -> None:
    """The invariants and the reconciliation over every call that ended before `until`."""
    ended = [v for v in state.views if _ended_at(v) <= until]
    cycle.checked_calls = len(ended)
    records = await state.central_records(ended)
    if records is None:
        cycle.problems.append("central's call records could not be read")
        return
    # The callers still on the line are not in `ended`: their records are not held as phantoms.
    kept = invariants.check(ended, records, ended_before=until - CHECK_MARGIN_S)
    cycle.invariants = kept
    cycle.problems += invariants.broken(kept)
    counts, _ = reconcile_detailed(ended, records)
    cycle.reconciliation = counts
    bad = {k: counts[k] for k in ("missing", "duplicated", "mismatched") if counts.get(k)}
    if bad:
        cycle.problems.append("reconciliation: " + ", ".join(f"{k} {v}" for k, v in bad.items()))
    for event in (cycle.fault_event, cycle.undo_event):
        if event is not None and event.error:
            cycle.problems.append(f"{event.spec.action} failed: {event.error}")


def _ended_at(view: CallerView) -> float:
    if view.ended_at is not None:
        return view.ended_at
    return view.progress[-1][1] if view.progress else view.offered_at


async def _sleep_until(moment: float) -> None:
    delay = moment - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


# -- the figures ------------------------------------------------------------------------------------


def summarize(
    cycles: Sequence[Cycle],
    views: Sequence[CallerView],
    outages: Sequence[Outage],
    report: Mapping[str, object],
    run_problems: Sequence[str],
    *,
    traffic_start: float,
    cycle_s: float,
    central_notice_s: float,
    run_end: float,
) -> dict[str, object]:
    """Per cycle: gaps (in the cycle's window), calls lost, calls answered, invariants; the totals.

    A cycle is broken by its own check's problems (invariants, reconciliation, failed events), by
    a call lost elsewhere, or by no call offered in it being answered."""
    on_failed, refused = classify_faults(views, outages, run_end, central_notice_s=central_notice_s)
    rows: list[dict[str, object]] = []
    problems: list[str] = []
    for i, cycle in enumerate(cycles):
        # A cycle that began late (the previous check ran long) ends where the next one begins:
        # no call is counted in two cycles.
        end = cycle.start + cycle_s
        if i + 1 < len(cycles):
            end = min(end, cycles[i + 1].start)
        applied = [e for e in (cycle.fault_event, cycle.undo_event) if e is not None]
        gaps = event_rows(
            views, applied, traffic_start=traffic_start, traffic_end=end, on_failed=on_failed, refused=refused
        )
        mine = [v for v in views if cycle.start <= v.offered_at < end]
        # A lost call belongs to the cycle its stream broke in (it may have been offered before).
        lost = [v for v in views if v.outcome in ("lost", "failed") and cycle.start <= _ended_at(v) < end]
        elsewhere = [v for v in lost if v.key not in on_failed and v.key not in refused]
        broken = list(cycle.problems)
        if elsewhere:
            broken.append(f"{len(elsewhere)} calls lost elsewhere")
        answered = sum(1 for v in mine if v.outcome == "answered")
        if not answered:
            broken.append(f"no call answered of the {len(mine)} offered in the cycle")
        problems += [f"cycle {cycle.number}: {p}" for p in broken]
        fault_event = cycle.fault_event
        rows.append(
            {
                "cycle": cycle.number,
                "fault": cycle.fault,
                "target": cycle.target,
                "at_s": round(cycle.start - traffic_start, 3),
                "service_gap_s": gaps[0]["service_gap_s"] if gaps else None,
                "gap_after_undo_s": gaps[1]["service_gap_s"] if len(gaps) > 1 else None,
                "takeover_s": fault_event.takeover_s if fault_event is not None else None,
                "replica_back_s": cycle.replica_back_s,
                "leader_after": cycle.leader_after,
                "offered": len(mine),
                "answered": answered,
                "lost_on_failed_site": sum(1 for v in lost if v.key in on_failed),
                "refused_by_failed_site": sum(1 for v in lost if v.key in refused),
                "lost_elsewhere": len(elsewhere),
                "checked_calls": cycle.checked_calls,
                "reconciliation": cycle.reconciliation,
                "invariants_kept": not broken,
                "problems": broken,
            }
        )
    kept = sum(1 for r in rows if r["invariants_kept"])
    gaps_by_fault: dict[str, list[float]] = {}
    for row in rows:
        gap = row["service_gap_s"]
        if isinstance(gap, float | int):
            gaps_by_fault.setdefault(str(row["fault"]), []).append(float(gap))
    takeovers = [float(t) for r in rows if isinstance(t := r["takeover_s"], float | int)]
    totals: dict[str, object] = {
        "cycles": len(rows),
        "cycles_kept": kept,
        "cycles_broken": len(rows) - kept,
        "longest_run_kept": _longest_run(rows),
        "offered": len(views),
        "lost_on_failed_site": len(on_failed),
        "refused_by_failed_site": len(refused),
        "lost_elsewhere": sum(int(str(r["lost_elsewhere"])) for r in rows),
        "max_service_gap_s": {f: max(g) for f, g in gaps_by_fault.items()},
        "mean_service_gap_s": {f: round(sum(g) / len(g), 3) for f, g in gaps_by_fault.items()},
        "takeover_s": {"max": max(takeovers), "mean": round(sum(takeovers) / len(takeovers), 3)}
        if takeovers
        else None,
    }
    problems += [f"whole run: {p}" for p in run_problems]
    return {
        "clean": not problems,
        "problems": problems,
        "totals": totals,
        "cycles": rows,
        "run": dict(report),
    }


def _longest_run(rows: Sequence[Mapping[str, object]]) -> int:
    best = streak = 0
    for row in rows:
        streak = streak + 1 if row["invariants_kept"] else 0
        best = max(best, streak)
    return best


def render(summary: Mapping[str, object]) -> str:
    """The per-cycle table and the totals, as text."""
    rows: Any = summary["cycles"]
    lines = [
        f"{'cycle':>5} {'fault':<20} {'target':<8} {'gap s':>6} {'undo s':>6} {'takeover':>8} "
        f"{'offered':>7} {'lost@site':>9} {'refused':>7} {'elsewhere':>9}  invariants"
    ]
    for r in rows:
        lines.append(
            f"{r['cycle']:>5} {r['fault']:<20} {r['target']:<8} {_num(r['service_gap_s']):>6} "
            f"{_num(r['gap_after_undo_s']):>6} {_num(r['takeover_s']):>8} {r['offered']:>7} "
            f"{r['lost_on_failed_site']:>9} {r['refused_by_failed_site']:>7} {r['lost_elsewhere']:>9}  "
            + ("kept" if r["invariants_kept"] else "BROKEN: " + "; ".join(r["problems"]))
        )
    totals: Any = summary["totals"]
    lines.append(
        f"{totals['cycles_kept']}/{totals['cycles']} cycles with every invariant kept "
        f"(longest run {totals['longest_run_kept']}); offered {totals['offered']}, lost elsewhere "
        f"{totals['lost_elsewhere']}; max gap by fault {totals['max_service_gap_s']}; "
        f"takeover {totals['takeover_s']}"
    )
    return "\n".join(lines)


def _num(value: object) -> str:
    if isinstance(value, float | int) and not (isinstance(value, float) and math.isnan(value)):
        return f"{value:.2f}"
    return "-"


def run_soak(
    cycles: int, database: Database, report_path: Path | None, run_dir: Path = DEFAULT_RUN_DIR
) -> int:
    """The CLI's work: run, print the cycles, write the JSON; 0 when every cycle kept everything."""
    console = Console(stderr=True)
    try:
        summary = asyncio.run(soak(cycles, database, run_dir, console=console))
    except SimulationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(render(summary), flush=True)
    if report_path is not None:
        write_report(summary, report_path)
        print(f"report written to {report_path}", flush=True)
    problems: Any = summary["problems"]
    for problem in problems:
        print(f"NOT CLEAN: {problem}", flush=True)
    if not problems:
        print(f"clean: {cycles} fault cycles in a row, every invariant kept", flush=True)
    return 1 if problems else 0
