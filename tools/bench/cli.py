"""`vcc bench`: the benchmarks of SPEC §7. Each prints a table and writes JSON (`--json FILE`).

    vcc bench                 all of them, at sizes that finish in a few minutes
    vcc bench throughput      highest call rate a three-site cluster sustains, every call recorded
    vcc bench memory          site node RSS with 1,000 agents logged in and 2,000 calls waiting
    vcc bench pooling         isolated / overflow / pooled against pooled Erlang C (model engine)
    vcc bench routing         bare grpc.aio round trip vs local ACD vs cross-site decision
    vcc bench scale           a site with 5,000 agents and 10,000 calls waiting (RSS, state stream
                              bytes/s); central with 20 cities of 1,000 agents streaming (CPU);
                              the dashboard with 20 cities
    vcc bench erlang          the model engine against Erlang C and B with many calls
    vcc bench stats           call events ingested per second at central on PostgreSQL; time from
                              an event at a site to the dashboard's live stream showing it

`vcc bench pooling --plot docs/pooling.png` draws service level against offered load for the
three modes with the Erlang C curves (docs/BENCHMARKS.md). Heavy modules are imported inside the
commands so that `vcc --help` stays fast.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from vcc import eventloop

bench_app = typer.Typer(
    help="Benchmarks (SPEC §7): each prints a table and writes JSON.",
    invoke_without_command=True,
    add_completion=False,
)

JsonOpt = Annotated[Path | None, typer.Option("--json", help="Write the results here (JSON).")]


# -- machine and output ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import psutil

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _say(text: str) -> None:
    typer.echo(text, err=True)


def _console() -> Any:
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=140)


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _write_json(path: Path | None, name: str, result: Mapping[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"bench": name, "machine": machine(), **result}, indent=2), encoding="utf-8")
    _say(f"written: {path}")


# -- tables ------------------------------------------------------------------------------------------


def table_throughput(result: Mapping[str, Any]) -> Any:
    from rich.table import Table

    name = (result.get("variant") or {}).get("name", "")
    table = Table(
        title=f"throughput: {result['sites']} sites, {result['agents_per_site']} agents each"
        + (f" [{name}]" if name else "")
    )
    for col in (
        "calls/s planned",
        "achieved",
        "calls",
        "answered",
        "blocked",
        "dial→ring ms p50 / p99",
        "prompt→ring ms p50 / p99",
        "reconciliation",
        "load 1 min",
        "ok",
    ):
        table.add_column(col, justify="right")
    for step in result["steps"]:
        rec = step["reconciliation"]
        dial, prompt = step["dial_to_ringing_ms"], step.get("prompt_to_ringing_ms") or {}
        load = (step.get("load_average") or {}).get("after")
        table.add_row(
            _fmt(step["target_rate_per_s"], 0),
            _fmt(step["achieved_rate_per_s"], 1),
            str(step["offered"]),
            str(step["outcomes"].get("answered", 0)),
            str(step["outcomes"].get("blocked", 0)),
            f"{_fmt(dial['p50'], 0)} / {_fmt(dial['p99'], 0)}",
            f"{_fmt(prompt.get('p50'), 0)} / {_fmt(prompt.get('p99'), 0)}",
            f"missing {rec['missing']} dup {rec['duplicated']} mismatch {rec['mismatched']}",
            _fmt(load[0], 1) if load else "-",
            "yes" if step["ok"] else "NO: " + "; ".join(step["failures"]),
        )
    ceiling = result.get("ceiling_rate_per_s", result.get("sustained_rate_per_s"))
    table.caption = (
        f"ceiling {_fmt(ceiling, 0)} calls/s (target {result['target_rate_per_s']}), "
        f"p99 dial→ringing there {_fmt(result['p99_dial_to_ringing_ms'], 1)} ms; "
        f"all cores at the CPU per call measured: {_fmt(result.get('cores_bound_rate_per_s'), 0)} calls/s"
    )
    return table


def table_cpu(result: Mapping[str, Any]) -> Any:
    """CPU milliseconds per call of each process at each step."""
    from rich.table import Table

    steps = [s for s in result["steps"] if s.get("cpu_ms_per_call")]
    names = list(steps[0]["cpu_ms_per_call"]) if steps else []
    table = Table(title="CPU ms per call, read from each process (user + system)")
    table.add_column("calls/s", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for step in steps:
        cpu = step["cpu_ms_per_call"]
        table.add_row(_fmt(step["target_rate_per_s"], 0), *(_fmt(cpu.get(n), 2) for n in names))
    return table


_MESSAGE_KINDS = ("caller_stream", "desktop_stream", "desktop_requests", "unary_served")


def table_messages(result: Mapping[str, Any]) -> Any:
    """Messages per call at each step, counted: the caller's stream, the desktops' streams and
    requests, the unary RPCs every site and central served."""
    from rich.table import Table

    table = Table(title="messages per call, counted (gRPC messages; a batch is one)")
    for col in ("calls/s", "caller stream", "desktop stream", "desktop requests", "unary served", "all"):
        table.add_column(col, justify="right")
    for step in result["steps"]:
        m = step.get("messages_per_call") or {}
        table.add_row(
            _fmt(step["target_rate_per_s"], 0),
            *(_fmt(m.get(k), 2) for k in _MESSAGE_KINDS),
            _fmt(m.get("all_stream_messages_and_unary"), 2),
        )
    return table


def table_memory(result: Mapping[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title="memory: one site node")
    for col in (
        "agents logged in",
        "calls waiting",
        "RSS idle MiB",
        "RSS agents MiB",
        "RSS MiB",
        "target",
        "ok",
    ):
        table.add_column(col, justify="right")
    table.add_row(
        str(result["agents_logged_in"]),
        str(result["calls_waiting"]),
        _fmt(result["rss_idle_mib"], 1),
        _fmt(result["rss_agents_only_mib"], 1),
        _fmt(result["rss_mib"], 1),
        f"< {result['target_mib']} MiB",
        "yes" if result["ok"] else "NO",
    )
    return table


def table_pooling(result: Mapping[str, Any]) -> Any:
    from rich.table import Table

    load = result["load"]
    erlang = result["erlang_c_pooled"]
    table = Table(
        title=f"pooling ({result['engine']} engine): occupancy {load['occupancy']:.2f}, rates "
        + ", ".join(f"{k} {v:.2f}/s" for k, v in load["rates_per_s"].items())
    )
    for col in (
        "mode",
        "service level",
        "ratio to pooled Erlang C",
        "target",
        "p_wait",
        "ASA s",
        "overflow out",
    ):
        table.add_column(col, justify="right")
    targets = result.get("targets", {})
    for mode, row in result["modes"].items():
        if "error" in row:
            table.add_row(mode, "-", "-", _fmt(targets.get(mode)), "-", "-", row["error"])
            continue
        table.add_row(
            mode,
            _fmt(row["service_level"]),
            _fmt(row["ratio_to_pooled_erlang_c"]),
            f">= {targets[mode]}" if mode in targets else "far below",
            _fmt(row["p_wait"]),
            _fmt(row["asa_s"]),
            str(row["overflow_out"]),
        )
    table.caption = (
        f"Erlang C, all agents pooled: SL {erlang['service_level']:.3f}, p_wait {erlang['p_wait']:.3f}; "
        f"each city alone: SL {result['erlang_c_isolated_service_level']:.3f}"
    )
    return table


def table_routing(result: Mapping[str, Any]) -> Any:
    from rich.table import Table

    from tools.bench.cluster import CROSS_SITE_STEPS

    table = Table(title="routing decision latency (ms)")
    for col in ("path", "samples", "p50", "p99", "p50 / bare", "p99 / bare", "WAN floor", "p50 / floor"):
        table.add_column(col, justify="right")
    for name, row in result["rows"].items():
        table.add_row(
            name,
            str(row["count"]),
            _fmt(row["p50"]),
            _fmt(row["p99"]),
            _fmt(row["p50_ratio"], 2),
            _fmt(row["p99_ratio"], 2),
            _fmt(row.get("floor_ms"), 1) if row.get("floor_ms") else "",
            _fmt(row.get("p50_over_floor"), 2) if row.get("p50_over_floor") else "",
        )
    for name, row in result["rows"].items():
        steps = row.get("steps_ms")
        if steps:
            table.add_row(
                f"  {name} steps",
                str(int(steps.get("calls_traced") or 0)),
                " / ".join(_fmt(steps.get(k)) for k in CROSS_SITE_STEPS),
                "",
                "",
                "",
                "",
                "",
            )
    load = result.get("load_average")
    table.caption = f"goal: {result['goal']}; steps: {' / '.join(CROSS_SITE_STEPS)}" + (
        f"; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}" if load else ""
    )
    return table


def table_erlang(result: Mapping[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title="model engine vs Erlang (one skill, no abandonment)")
    for col in ("case", "calls", "measured", "95% CI ±", "Erlang", "within tolerance", "µs/call"):
        table.add_column(col, justify="right")
    for case in result["waiting"]:
        label = f"A={case['traffic_erlangs']:g} N={case['agents']}"
        table.add_row(
            f"{label} p_wait",
            str(case["calls"]),
            _fmt(case["p_wait"], 4),
            _fmt(case["p_wait_ci95"], 4),
            _fmt(case["erlang_c_p_wait"], 4),
            "yes" if case["p_wait_ok"] else "NO",
            _fmt(case["us_per_call"], 0),
        )
        table.add_row(
            f"{label} ASA s",
            str(case["calls"]),
            _fmt(case["asa_s"], 4),
            _fmt(case["asa_ci95"], 4),
            _fmt(case["erlang_c_asa_s"], 4),
            "yes" if case["asa_ok"] else "NO",
            "",
        )
    b = result["blocking"]
    table.add_row(
        "A=10 on 18 trunks: blocked",
        str(b["calls"]),
        _fmt(b["blocked_share"], 4),
        "-",
        _fmt(b["erlang_b"], 4),
        "yes" if b["ok"] else "NO",
        "",
    )
    return table


def table_stats(result: Mapping[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title="statistics: ingest at central (PostgreSQL) and site event → dashboard")
    for col in ("measure", "samples", "value", "p50", "p99", "ok"):
        table.add_column(col, justify="right")
    ing = result["ingest"]
    table.add_row(
        f"ingest: {ing['sites']} sites, {ing['batch_events']} events a batch, {ing['retries']} retried",
        str(ing["events"]),
        f"{ing['events_per_s']:.0f} events/s = {ing['calls_per_s']:.0f} calls/s",
        _fmt(ing["batch_ms"]["p50"], 1) + " ms/batch",
        _fmt(ing["batch_ms"]["p99"], 1) + " ms/batch",
        "yes" if ing["ok"] else "NO",
    )
    lat = result["dashboard_latency"]
    for key, label in (
        ("queued_to_shown_ms", "call queued at site → dashboard shows it (ms)"),
        ("hang_up_to_shown_ms", "caller hangs up → dashboard shows it (ms)"),
        ("all_ms", "both (ms)"),
    ):
        row = lat[key]
        table.add_row(label, str(row["count"]), "", _fmt(row["p50"], 0), _fmt(row["p99"], 0), "")
    return table


# -- running -----------------------------------------------------------------------------------------


BENCH_CLIENT_LOOP_ENV = "VCC_BENCH_CLIENT_LOOP"


def run_throughput(
    rates: list[float] | None = None,
    step_s: float = 8.0,
    *,
    variant: Any = None,
    max_rate: float = 1200.0,
    profile_dir: Path | None = None,
    every_step: bool = False,
) -> dict[str, Any]:
    from tools.bench.cluster import AS_SHIPPED, throughput

    # The bench client (callers and robots) shares the province's cores: on uvloop by default, its
    # own cost per call is lower (VCC_BENCH_CLIENT_LOOP=asyncio for asyncio's loop). The province's
    # processes run on the loop of their own environment (VCC_EVENT_LOOP, or the variant's).
    return eventloop.run(
        throughput(
            rates=rates or None,
            step_s=step_s,
            max_rate=max_rate,
            variant=variant or AS_SHIPPED,
            progress=_say,
            profile_dir=profile_dir,
            every_step=every_step,
        ),
        name=os.environ.get(BENCH_CLIENT_LOOP_ENV, "uvloop"),
    )


def run_comparisons(
    names: list[str],
    rates: list[float] | None = None,
    step_s: float = 8.0,
    *,
    max_rate: float = 1200.0,
    profile_dir: Path | None = None,
    every_step: bool = False,
) -> dict[str, Any]:
    """The province as shipped, then once per comparison with its one difference, in one run."""
    from tools.bench.cluster import AS_SHIPPED, COMPARISONS, side_by_side

    shipped = run_throughput(
        rates, step_s, variant=AS_SHIPPED, max_rate=max_rate, profile_dir=profile_dir, every_step=every_step
    )
    out: dict[str, Any] = {"as_shipped": shipped, "comparisons": {}}
    for name in names:
        other = run_throughput(
            rates,
            step_s,
            variant=COMPARISONS[name],
            max_rate=max_rate,
            profile_dir=profile_dir,
            every_step=every_step,
        )
        out["comparisons"][name] = {"run": other, "side_by_side": side_by_side(other, shipped)}
    return out


def run_pairs(name: str, pairs: int, rates: list[float] | None = None, step_s: float = 8.0) -> dict[str, Any]:
    """`pairs` runs of the province as shipped and of one comparison, the order alternating from
    pair to pair (shipped first, then the other first), so that a load that drifts during the
    bench weighs on both alike. Per rate and pair: the CPU per call the processes themselves
    counted, as shipped ÷ the comparison, and the medians of those ratios."""
    from tools.bench.cluster import AS_SHIPPED, COMPARISONS

    other = COMPARISONS[name]
    out: list[dict[str, Any]] = []
    for i in range(pairs):
        order = [AS_SHIPPED, other] if i % 2 == 0 else [other, AS_SHIPPED]
        runs = {v.name: run_throughput(rates, step_s, variant=v, every_step=True) for v in order}
        out.append(
            {"order": [v.name for v in order], "shipped": runs[AS_SHIPPED.name], "other": runs[other.name]}
        )
    return {"comparison": name, "names": [AS_SHIPPED.name, other.name], "pairs": out, **pair_ratios(out)}


def pair_ratios(pairs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per rate: each pair's CPU per call as shipped ÷ the other's, per process group and for the
    cluster, with the load average of the pair; and the median ratio over the pairs."""
    import statistics

    rows: dict[float, list[dict[str, Any]]] = {}
    for pair in pairs:
        others = {s["target_rate_per_s"]: s for s in pair["other"]["steps"]}
        for a in pair["shipped"]["steps"]:
            b = others.get(a["target_rate_per_s"])
            if b is None:
                continue
            cpu_a, cpu_b = a["cpu_ms_per_call"], b["cpu_ms_per_call"]
            rows.setdefault(a["target_rate_per_s"], []).append(
                {
                    "cpu_ms_per_call": [a["cluster_cpu_ms_per_call"], b["cluster_cpu_ms_per_call"]],
                    "ratio": {k: round(cpu_a[k] / cpu_b[k], 3) for k in cpu_a if cpu_b.get(k)},
                    "ok": [a["ok"], b["ok"]],
                    "load_average_1min": [a["load_average"]["after"][0], b["load_average"]["after"][0]],
                }
            )
    medians = {
        rate: {
            k: round(statistics.median(r["ratio"][k] for r in rs if k in r["ratio"]), 3)
            for k in rs[0]["ratio"]
        }
        for rate, rs in rows.items()
    }
    return {"per_rate": rows, "median_ratio": medians}


def run_observability_cost(rates: list[float] | None = None, step_s: float = 8.0) -> dict[str, Any]:
    """The same steps twice in one run: traces and metrics off, then on (scraped every 2 s)."""
    from tools.bench.cluster import AS_SHIPPED, COMPARISONS, side_by_side

    off = run_throughput(rates, step_s, variant=COMPARISONS["observability"])
    on = run_throughput(rates, step_s, variant=AS_SHIPPED)
    compared = side_by_side(off, on)
    rows = [{**row, "cpu_ratio_on_off": row["cpu_ratio_after_before"]} for row in compared["rows"]]
    return {"off": off, "on": on, "side_by_side": rows}


def table_pairs(result: Mapping[str, Any]) -> Any:
    from rich.table import Table

    shipped, other = result["names"]
    table = Table(title=f"CPU per call, {shipped} ÷ {other}: pairs of runs, the order alternating")
    for col in ("calls/s", "pair", "cluster CPU ms/call", "ratio cluster", "ratio all", "ok", "load 1 min"):
        table.add_column(col, justify="right")
    for rate, rows in result["per_rate"].items():
        for i, row in enumerate(rows, 1):
            table.add_row(
                _fmt(rate, 0),
                str(i),
                " | ".join(_fmt(v, 2) for v in row["cpu_ms_per_call"]),
                _fmt(row["ratio"].get("cluster (sites + central)"), 3),
                _fmt(row["ratio"].get("all"), 3),
                " | ".join("pass" if ok else "FAIL" for ok in row["ok"]),
                " | ".join(_fmt(v, 1) for v in row["load_average_1min"]),
            )
        median = result["median_ratio"][rate]
        table.add_row(
            _fmt(rate, 0),
            "median",
            "",
            _fmt(median.get("cluster (sites + central)"), 3),
            _fmt(median.get("all"), 3),
            "",
            "",
        )
    return table


def table_side_by_side(title: str, compared: Mapping[str, Any]) -> Any:
    from rich.table import Table

    before, after = compared["names"]
    table = Table(title=f"{title}: {before} | {after} (one run)")
    for col in (
        "calls/s",
        "ok",
        "p50 dial→ring ms",
        "p99 dial→ring ms",
        "cluster CPU ms/call",
        "CPU after/before",
        "all CPU ms/call",
        "load 1 min",
    ):
        table.add_column(col, justify="right")
    for row in compared["rows"]:
        table.add_row(
            _fmt(row["target_rate_per_s"], 0),
            " | ".join("pass" if ok else "FAIL" for ok in row["ok"]),
            " | ".join(_fmt(v, 1) for v in row["p50_dial_to_ringing_ms"]),
            " | ".join(_fmt(v, 1) for v in row["p99_dial_to_ringing_ms"]),
            " | ".join(_fmt(v, 2) for v in row["cluster_cpu_ms_per_call"]),
            _fmt(row["cpu_ratio_after_before"], 3),
            " | ".join(_fmt(v, 2) for v in row["all_cpu_ms_per_call"]),
            " | ".join(_fmt(v, 1) for v in row["load_average_1min"]),
        )
    ceilings = compared["ceiling_rate_per_s"]
    table.caption = (
        f"ceiling {_fmt(ceilings[0], 0)} | {_fmt(ceilings[1], 0)} calls/s, "
        f"ratio {_fmt(compared['ceiling_ratio_after_before'], 2)}"
    )
    return table


def table_observability_cost(result: Mapping[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title="throughput with traces and metrics off | on (one run)")
    for col in (
        "calls/s",
        "ok off|on",
        "p50 dial→ring ms off|on",
        "p99 dial→ring ms off|on",
        "cluster CPU ms/call off|on",
        "CPU on/off",
    ):
        table.add_column(col, justify="right")
    for row in result["side_by_side"]:
        table.add_row(
            _fmt(row["target_rate_per_s"], 0),
            " | ".join("pass" if ok else "FAIL" for ok in row["ok"]),
            " | ".join(_fmt(v, 1) for v in row["p50_dial_to_ringing_ms"]),
            " | ".join(_fmt(v, 1) for v in row["p99_dial_to_ringing_ms"]),
            " | ".join(_fmt(v, 2) for v in row["cluster_cpu_ms_per_call"]),
            _fmt(row["cpu_ratio_on_off"], 3),
        )
    return table


def run_memory(agents: int = 1000, calls: int = 2000) -> dict[str, Any]:
    from tools.bench.cluster import memory

    return asyncio.run(memory(agents=agents, calls=calls, progress=_say))


def run_pooling(occupancy: float = 0.8, calls: int = 60_000) -> dict[str, Any]:
    from tools.bench.model import pooling

    return pooling(occupancy=occupancy, calls=calls, progress=_say)


def run_routing(
    calls: int = 400, wan: bool = True, streams: bool = True, asking: bool = True, compare: Sequence[str] = ()
) -> dict[str, Any]:
    from tools.bench.cluster import routing

    return asyncio.run(
        routing(calls=calls, progress=_say, wan=wan, streams=streams, asking=asking, compare=compare)
    )


def run_erlang(calls: int = 100_000, replications: int = 5) -> dict[str, Any]:
    from tools.bench.model import erlang_check

    return erlang_check(calls=calls, replications=replications, progress=_say)


def run_stats(
    sites: int = 4, calls_per_site: int = 1500, batch_events: int = 200, samples: int = 100
) -> dict[str, Any]:
    from tools.bench.stats import stats_bench

    return asyncio.run(
        stats_bench(
            sites=sites,
            calls_per_site=calls_per_site,
            batch_events=batch_events,
            samples=samples,
            progress=_say,
        )
    )


BENCHES: dict[str, tuple[Callable[[], dict[str, Any]], Callable[[Mapping[str, Any]], Any]]] = {
    "routing": (lambda: run_routing(calls=300), table_routing),
    "memory": (run_memory, table_memory),
    "pooling": (lambda: run_pooling(calls=30_000), table_pooling),
    "throughput": (lambda: run_throughput(max_rate=500.0), table_throughput),
    "stats": (run_stats, table_stats),
}


@bench_app.callback()
def bench_all(
    ctx: typer.Context,
    json_path: JsonOpt = None,
    only: Annotated[
        list[str] | None,
        typer.Option(help="Run only these benches (routing, memory, pooling, throughput, stats)."),
    ] = None,
) -> None:
    """With no subcommand: every bench at usable sizes, one table each, one JSON for all."""
    if ctx.invoked_subcommand is not None:
        return
    results: dict[str, Any] = {"machine": machine()}
    console = _console()
    for name, (run, table) in BENCHES.items():
        if only and name not in only:
            continue
        started = time.perf_counter()
        try:
            results[name] = run()
        except Exception as exc:  # one bench failing must not hide the others' figures
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            _say(f"{name}: FAILED: {type(exc).__name__}: {exc}")
            continue
        results[name]["bench_wall_s"] = time.perf_counter() - started
        console.print(table(results[name]))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=2), encoding="utf-8")
        _say(f"written: {json_path}")


def _pooling_curve(calls: int = 20_000) -> dict[str, Any]:
    from tools.bench.model import pooling_curve

    return pooling_curve([0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95], calls=calls, progress=_say)


@bench_app.command("throughput")
def throughput_cmd(
    json_path: JsonOpt = None,
    rate: Annotated[
        list[float] | None,
        typer.Option(help="Calls per second of each step (repeat); default: the ladder up to --max-rate."),
    ] = None,
    max_rate: Annotated[float, typer.Option(min=10, help="Top of the automatic ladder (calls/s).")] = 1200.0,
    step: Annotated[float, typer.Option(min=1, help="Seconds of arrivals per step.")] = 8.0,
    compare: Annotated[
        list[str] | None,
        typer.Option(
            help="Also run the province with one thing changed, side by side in this run (repeat): "
            "loop (uvloop instead of asyncio's own loop), tls (plaintext, bench only), "
            "observability (traces and metrics off), linger (the shipper's old 0.1 s linger), "
            "edge (the old chain of server interceptors), journeys (central reads events back), "
            "before16 (edge and journeys), logs (the line per transition off), "
            "sampled (tracing.sample_ratio 0.1), scrape15 (metrics scraped every 15 s, not 2 s), "
            "answer (robots send Answer, no auto-answer), fold (a state_changed of its own per "
            "agent state change), batch (one stream message per step), messages (answer, fold "
            "and batch), gc (VCC_GC_GEN0=50000: the cyclic collector less often), again (the "
            "province as shipped a second time: what running later in the bench alone changes), "
            "popmemory (every screen pop reads central's database), compiled (central's ON "
            "CONFLICT statements compiled at every execute), before8 (popmemory, compiled and "
            "journeys), poplookups (one screen-pop look-up per call, VCC_SCREEN_POP_BATCH=0), "
            "reparse (the shipper parses the stored events again, VCC_SHIPPER_RAW=0), poplinger "
            "(screen pops sent each turn, VCC_SCREEN_POP_LINGER_S=0), site8 (poplookups and "
            "reparse), wave8 (before8 and site8), per-call-trunk (a PlaceCall stream per call instead "
            "of the site's one trunk link)."
        ),
    ] = None,
    profile: Annotated[
        Path | None,
        typer.Option(help="py-spy profiles of every Python process, each step, into this folder."),
    ] = None,
    *,
    every_step: Annotated[
        bool,
        typer.Option(
            help="Run every step even after one failed (for --compare: the same rates in each run)."
        ),
    ] = False,
    observability_cost: Annotated[
        bool,
        typer.Option(help="Run the steps twice, traces and metrics off then on, and compare them."),
    ] = False,
    pairs: Annotated[
        int,
        typer.Option(
            min=0,
            help="With one --compare: this many pairs of runs, the order alternating, and the median "
            "ratio of CPU per call (as shipped ÷ the comparison) over the pairs.",
        ),
    ] = 0,
) -> None:
    """The highest call rate three sites sustain: every call recorded once, ringing within 1 s at p99."""
    from tools.bench.cluster import COMPARISONS

    if observability_cost:
        cost = run_observability_cost(rate, step)
        _console().print(table_throughput(cost["off"]))
        _console().print(table_throughput(cost["on"]))
        _console().print(table_observability_cost(cost))
        _write_json(json_path, "throughput-observability", cost)
        return
    unknown = [c for c in compare or [] if c not in COMPARISONS]
    if unknown:
        raise typer.BadParameter(f"{unknown[0]!r}: one of {', '.join(COMPARISONS)}", param_hint="--compare")
    if pairs and compare:
        if len(compare) != 1:
            raise typer.BadParameter("--pairs takes one --compare", param_hint="--pairs")
        result = run_pairs(compare[0], pairs, rate, step)
        _console().print(table_pairs(result))
        _write_json(json_path, "throughput-pairs", result)
        return
    if compare:
        both = run_comparisons(
            list(compare), rate, step, max_rate=max_rate, profile_dir=profile, every_step=every_step
        )
        console = _console()
        console.print(table_throughput(both["as_shipped"]))
        console.print(table_cpu(both["as_shipped"]))
        console.print(table_messages(both["as_shipped"]))
        for name, item in both["comparisons"].items():
            console.print(table_throughput(item["run"]))
            console.print(table_cpu(item["run"]))
            console.print(table_messages(item["run"]))
            console.print(table_side_by_side(name, item["side_by_side"]))
        _write_json(json_path, "throughput", both)
        return
    result = run_throughput(rate, step, max_rate=max_rate, profile_dir=profile, every_step=every_step)
    _console().print(table_throughput(result))
    _console().print(table_cpu(result))
    _console().print(table_messages(result))
    _write_json(json_path, "throughput", result)


@bench_app.command("memory")
def memory_cmd(
    json_path: JsonOpt = None,
    agents: Annotated[int, typer.Option(min=1, max=8000)] = 1000,
    calls: Annotated[int, typer.Option(min=1)] = 2000,
) -> None:
    """Resident memory of a site node with agents logged in (not ready) and calls waiting."""
    result = run_memory(agents, calls)
    _console().print(table_memory(result))
    _write_json(json_path, "memory", result)


@bench_app.command("pooling")
def pooling_cmd(
    json_path: JsonOpt = None,
    occupancy: Annotated[
        float, typer.Option(min=0.1, max=0.99, help="Pooled occupancy of all agents.")
    ] = 0.8,
    calls: Annotated[int, typer.Option(min=1000)] = 60_000,
    plot: Annotated[Path | None, typer.Option(help="Also plot SL against offered load to this PNG.")] = None,
) -> None:
    """Service level of isolated, overflow and pooled against the pooled Erlang C service level."""
    result = run_pooling(occupancy, calls)
    _console().print(table_pooling(result))
    if plot is not None:
        from tools.bench.model import plot_pooling_curve

        curve = _pooling_curve()
        result["curve"] = curve
        _say(f"written: {plot_pooling_curve(curve, plot)}")
    _write_json(json_path, "pooling", result)


@bench_app.command("routing")
def routing_cmd(
    json_path: JsonOpt = None,
    calls: Annotated[int, typer.Option(min=10)] = 400,
    wan: Annotated[bool, typer.Option(help="Also the cross-site rows on an emulated WAN.")] = True,
    streams: Annotated[
        bool,
        typer.Option(
            help="Also the pushed rows on a ServeCall stream per leg (a twin city), taking turns with "
            "the pair stream's calls in the same cluster."
        ),
    ] = True,
    asking: Annotated[bool, typer.Option(help="Also the rows asking central first (RouteCall).")] = True,
    compare: Annotated[
        list[str] | None,
        typer.Option(
            help="Also the local and pushed rows on a province with one switch of the environment "
            "changed (repeat; a --compare name of `vcc bench throughput`, e.g. instep), then as "
            "shipped again, in this run."
        ),
    ] = None,
) -> None:
    """Bare grpc.aio round trip vs local ACD decision vs cross-site overflow decision (pushed
    targets and asking central, side by side; on loopback and on an emulated WAN; the site-to-site
    legs on the pair's stream and, taking turns, on a stream per leg)."""
    from tools.bench.cluster import routing_variant

    for name in compare or []:
        try:
            routing_variant(name)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--compare") from None
    result = run_routing(calls, wan, streams, asking, compare or [])
    _console().print(table_routing(result))
    _write_json(json_path, "routing", result)


def table_scale(result: Mapping[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title="scale")
    table.add_column("what")
    table.add_column("figure", justify="right")
    central = result.get("central") or {}
    for name, row in (central.get("rows") or {}).items():
        for key, value in row.items():
            table.add_row(f"central, {name}: {key}", _fmt(value))
    for key, value in (result.get("site") or {}).items():
        if not isinstance(value, dict):
            table.add_row(f"site: {key}", _fmt(value))
        elif key in ("records", "callers"):
            for inner, figure in value.items():
                if not isinstance(figure, (dict, list)):
                    table.add_row(f"site: {key}: {inner}", _fmt(figure))
    load = result.get("load_average")
    if load:
        table.caption = f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    return table


@bench_app.command("scale")
def scale_cmd(
    json_path: JsonOpt = None,
    site: Annotated[bool, typer.Option(help="The site with 5,000 agents and 10,000 calls waiting.")] = True,
    central: Annotated[bool, typer.Option(help="Central with 20 cities streaming; the dashboard.")] = True,
    cities: Annotated[int, typer.Option(min=1, max=40, help="Cities streaming to central.")] = 20,
    agents_per_city: Annotated[int, typer.Option(min=1, max=5000, help="Agents of each city.")] = 1000,
) -> None:
    """A site with 5,000 agents and 10,000 calls waiting (records checked at central); central with
    20 cities of 1,000 agents streaming state (change-driven and whole presence side by side); the
    dashboard with 20 cities, drawn and updating in Chromium."""
    from tools.bench.scale import scale

    result = asyncio.run(
        scale(progress=_say, site=site, central=central, cities=cities, agents_per_city=agents_per_city)
    )
    _console().print(table_scale(result))
    _write_json(json_path, "scale", result)


@bench_app.command("erlang")
def erlang_cmd(
    json_path: JsonOpt = None,
    calls: Annotated[int, typer.Option(min=1000, help="Calls per replication.")] = 100_000,
    replications: Annotated[int, typer.Option(min=2, max=10)] = 5,
) -> None:
    """The model engine against Erlang C (waiting) and Erlang B (trunk blocking)."""
    result = run_erlang(calls, replications)
    _console().print(table_erlang(result))
    _write_json(json_path, "erlang", result)


@bench_app.command("stats")
def stats_cmd(
    json_path: JsonOpt = None,
    sites: Annotated[int, typer.Option(min=1, max=6, help="Concurrent sites shipping events.")] = 4,
    calls: Annotated[int, typer.Option(min=10, help="Answered calls per site (8 events each).")] = 1500,
    batch: Annotated[int, typer.Option(min=1, max=5000, help="Events per IngestCallEvents batch.")] = 200,
    samples: Annotated[int, typer.Option(min=5, help="Calls for the dashboard latency.")] = 100,
) -> None:
    """Events ingested per second at central on PostgreSQL; site event → dashboard p50/p99."""
    result = run_stats(sites, calls, batch, samples)
    _console().print(table_stats(result))
    _write_json(json_path, "stats", result)


def table_sip(result: Mapping[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title="SIP calls with media on one site (SIPp callers, rtpengine)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, _fmt(value))
    return table


def table_measures(title: str, result: Mapping[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if key != "machine":
            table.add_row(key, _fmt(value))
    return table


@bench_app.command("sip")
def sip_cmd(
    json_path: JsonOpt = None,
    concurrent: Annotated[int, typer.Option(min=1, max=5000, help="Calls up together.")] = 200,
    rate: Annotated[float, typer.Option(min=0.1, max=500, help="New calls per second.")] = 20.0,
    steady: Annotated[float, typer.Option(min=3, help="Seconds with every call up.")] = 10.0,
    steps: Annotated[
        str, typer.Option(help="Steps 'N/R,N/R,...' (calls up / new calls per s), each on a fresh site.")
    ] = "",
    agents: Annotated[
        int, typer.Option(min=0, max=500, help="Robot agents answering on registered SIP phones (baresip).")
    ] = 20,
    run_dir: Annotated[Path, typer.Option("--run-dir")] = Path("run/bench-sip"),
) -> None:
    """New calls per second and concurrent calls with audio on one site; CPU per call, RTP loss."""
    from tools.bench.sip import bench_sip

    try:
        plan = [(int(n), float(r)) for n, r in (p.split("/") for p in steps.split(","))] if steps else []
    except ValueError:
        raise typer.BadParameter(
            f"{steps!r} is not 'N/R,N/R,...' (for example 100/10,500/50)", param_hint="--steps"
        ) from None
    if not plan:
        plan = [(concurrent, rate)]
    results = []
    for n, r in plan:
        load = os.getloadavg()[0]
        result = {
            "load_average_at_start": round(load, 2),
            **asyncio.run(bench_sip(run_dir, n, r, steady, agents)),
        }
        result["load_average_at_end"] = round(os.getloadavg()[0], 2)
        _console().print(table_sip(result))
        results.append(result)
    out = (
        {"machine": machine(), **results[0]}
        if len(results) == 1
        else {"machine": machine(), "steps": results}
    )
    _write_json(json_path, "sip", out)


@bench_app.command("bridge")
def bridge_cmd(
    json_path: JsonOpt = None,
    calls: Annotated[int, typer.Option(min=1, max=200, help="Bridged calls up together.")] = 10,
    seconds: Annotated[float, typer.Option(min=2, help="Seconds measured with every bridge up.")] = 10.0,
    run_dir: Annotated[Path, typer.Option("--run-dir")] = Path("run/bench-bridge"),
) -> None:
    """The mixing bridge of supervision and conferences: CPU per bridged call, mixed packets lost."""
    from tools.bench.bridge import bench_bridge

    result = {"machine": machine(), **asyncio.run(bench_bridge(run_dir, calls, seconds))}
    _console().print(table_measures("Mixing bridges (GStreamer audiomixer), three parties each", result))
    _write_json(json_path, "bridge", result)


@bench_app.command("desk")
def desk_cmd(
    json_path: JsonOpt = None,
    samples: Annotated[
        int, typer.Option(min=4, help="Leader's clicks (force ready / not ready in turn).")
    ] = 40,
) -> None:
    """A group leader's click to the agent's page showing it (p50, p99), beside a bare HTTP round trip."""
    from tools.bench.desk import measure

    result = asyncio.run(measure(samples))
    click, bare, ratio = result["click_to_page_ms"], result["bare_http_ms"], result["ratio"]
    typer.echo(
        f"leader's click -> agent's page ({result['samples']} clicks): p50 {click['p50']:.1f} ms, "
        f"p99 {click['p99']:.1f} ms; bare HTTP round trip p50 {bare['p50']:.2f} ms, "
        f"p99 {bare['p99']:.2f} ms; "
        f"ratio p50 {ratio['p50']:.1f}, p99 {ratio['p99']:.1f}"
    )
    _write_json(json_path, "desk", result)


def _register_servicedesk() -> None:
    from tools.bench.servicedesk import bench_command

    bench_app.command("servicedesk")(bench_command)


_register_servicedesk()
