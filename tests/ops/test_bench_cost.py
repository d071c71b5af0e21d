"""`vcc bench throughput --observability-cost`: the same steps off then on, compared row by row
(the cluster run itself is the benchmark; here its two results are faked)."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from tools.bench import cli as bench


def fake_run(rates: list[float] | None, step_s: float, *, observability: bool) -> dict[str, Any]:
    cpu = 3.0 if observability else 2.0
    name = "on" if observability else "off"
    steps = [
        {
            "target_rate_per_s": r,
            "ok": True,
            "dial_to_ringing_ms": {"p50": 20.0 + observability, "p99": 90.0},
            "cluster_cpu_ms_per_call": cpu,
            "cpu_ms_per_call": {"all": cpu + 1.0},
        }
        for r in rates or [50.0]
    ]
    return {
        "observability": observability,
        "variant": {"name": name},
        "steps": steps,
        "ceiling_rate_per_s": max(rates or [50.0]),
    }


def test_the_two_runs_are_compared_step_by_step(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []

    def run(
        rates: list[float] | None, step_s: float = 8.0, *, variant: Any = None, **_: Any
    ) -> dict[str, Any]:
        calls.append(variant.observability)
        return fake_run(rates, step_s, observability=variant.observability)

    monkeypatch.setattr(bench, "run_throughput", run)
    result = bench.run_observability_cost([50.0, 100.0], 6.0)
    assert calls == [False, True]  # off first, then on, in one run
    assert [r["target_rate_per_s"] for r in result["side_by_side"]] == [50.0, 100.0]
    row = result["side_by_side"][0]
    assert row["cluster_cpu_ms_per_call"] == [2.0, 3.0] and row["cpu_ratio_on_off"] == 1.5
    console = Console(width=200, record=True)
    console.print(bench.table_observability_cost(result))
    assert "1.500" in console.export_text()
