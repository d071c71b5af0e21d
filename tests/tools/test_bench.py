"""Smoke tests of the bench plumbing (tables, JSON, CLI wiring) at tiny sizes.

The benchmarks themselves are not tests: they measure, on purpose, for minutes.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from tools.bench import cli as bench
from tools.bench.cluster import bare_round_trip, local_decision_in_process
from tools.bench.model import PoolingLoad, plot_pooling_curve, pooling, pooling_curve
from tools.cli import app


def _render(table: object) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(table)
    return console.export_text()


def test_bench_is_a_vcc_command() -> None:
    result = CliRunner().invoke(app, ["bench", "--help"])
    assert result.exit_code == 0, result.output
    for name in ("throughput", "memory", "pooling", "routing", "erlang"):
        assert name in result.output


def test_machine_says_what_it_ran_on() -> None:
    info = bench.machine()
    assert {"nproc", "cpu_model", "memory_gib", "python"} <= set(info)


def test_pooling_runs_every_mode_or_says_why_not(tmp_path: Path) -> None:
    load = PoolingLoad(agents_per_site=4, handle_mean_s=1.0)
    result = pooling(occupancy=0.7, calls=1500, load=load)
    assert set(result["modes"]) == {"isolated", "overflow", "pooled"}
    isolated = result["modes"]["isolated"]
    assert 0 < isolated["service_level"] <= 1
    assert isolated["ratio_to_pooled_erlang_c"] > 0
    for row in result["modes"].values():
        assert "error" in row or "service_level" in row
    text = _render(bench.table_pooling(result))
    assert "isolated" in text and "pooled" in text
    out = tmp_path / "pooling.json"
    bench._write_json(out, "pooling", result)
    saved = json.loads(out.read_text())
    assert saved["bench"] == "pooling" and "machine" in saved

    curve = pooling_curve([0.5, 0.8], calls=800, load=load)
    png = plot_pooling_curve(curve, tmp_path / "pooling.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_bare_round_trip_and_local_decision_measure_something() -> None:
    bare = await bare_round_trip(samples=20)
    assert bare["count"] == 20 and bare["p50"] > 0
    local = local_decision_in_process(samples=20)
    assert local["count"] == 20 and local["p99"] >= local["p50"] > 0


def test_tables_render_results() -> None:
    throughput = {
        "sites": 3,
        "agents_per_site": 10,
        "sustained_rate_per_s": 50,
        "target_rate_per_s": 300,
        "p99_dial_to_ringing_ms": 12.5,
        "steps": [
            {
                "target_rate_per_s": 50,
                "achieved_rate_per_s": 49.0,
                "offered": 392,
                "outcomes": {"answered": 392},
                "dial_to_ringing_ms": {"p50": 5.0, "p99": 12.5},
                "queued_to_ringing_ms": {"p50": 1.0, "p99": 3.0},
                "reconciliation": {"missing": 0, "duplicated": 0, "mismatched": 0},
                "ok": True,
                "failures": [],
            }
        ],
    }
    assert "392" in _render(bench.table_throughput(throughput))
    memory = {
        "agents_logged_in": 1000,
        "calls_waiting": 2000,
        "rss_idle_mib": 80.0,
        "rss_agents_only_mib": 90.0,
        "rss_mib": 120.0,
        "target_mib": 200,
        "ok": True,
    }
    assert "120.0" in _render(bench.table_memory(memory))
    row = {"count": 5, "p50": 0.3, "p99": 0.9, "p50_ratio": 1.0, "p99_ratio": 1.0}
    routing = {
        "rows": {"bare_round_trip": row, "cross_site_overflow": {**row, "p50": 1.1, "p50_ratio": 3.7}},
        "goal": "cross-site decision within 4 bare round trips at p50",
    }
    assert "cross_site_overflow" in _render(bench.table_routing(routing))


def test_the_scale_bench_records_verdict_catches_every_broken_history() -> None:
    from tools.bench.cluster import records_verdict
    from vcc.v1 import central_pb2, common_pb2

    abandoned = common_pb2.CALL_OUTCOME_ABANDONED

    def rec(call_id: str, outcome: int = abandoned) -> central_pb2.CallRecord:
        return central_pb2.CallRecord(call_id=call_id, outcome=outcome)  # type: ignore[arg-type]

    ids = ["a", "b", "c"]
    whole = [rec("a"), rec("b"), rec("c")]
    assert records_verdict(ids, whole, shipped=True)["exact"]
    broken = {
        "missing": [rec("a"), rec("b")],
        "duplicated": [*whole, rec("b")],
        "unknown": [*whole, rec("x")],
        "not_abandoned": [rec("a"), rec("b"), rec("c", common_pb2.CALL_OUTCOME_ANSWERED)],
    }
    for what, records in broken.items():
        verdict = records_verdict(ids, records, shipped=True)
        assert not verdict["exact"] and verdict[what], what
    assert not records_verdict(ids, whole, shipped=False)["exact"], "an outbox not empty yet"
    # A caller who hung up before the site's first answer may leave a call unknown to the bench.
    assert records_verdict(ids, broken["unknown"], shipped=True, unanswered=1)["exact"]
