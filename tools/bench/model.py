"""Benchmarks that run on the model engine: pooling efficiency and the Erlang check.

`pooling`: three cities under the same unbalanced load, served `isolated`, `overflow` and
`pooled`; each mode's service level as a ratio to the Erlang C service level of all agents
pooled (the best any routing could do with these agents). `erlang`: the model engine against
Erlang C and B with many calls (the full version of tests/tools/test_model_engine.py).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from routing.erlang import average_speed_of_answer, erlang_b, erlang_c, erlang_c_for_load
from tools.simulation.model_engine import ModelError, ModelPlan, ModelSite, RoutingMode, run_plan

MODES: tuple[RoutingMode, ...] = ("isolated", "overflow", "pooled")


@dataclass(frozen=True)
class PoolingLoad:
    """The unbalanced province: gz gets `skew` times the calls of each other city."""

    agents_per_site: int = 20
    sites: tuple[str, ...] = ("gz", "sz", "fs")
    skew: float = 2.0
    handle_mean_s: float = 2.0
    threshold_s: float = 0.4
    # Below the service level threshold: a call that overflows after the threshold has already
    # missed it, so overflow could never approach pooled with after_s >= threshold_s.
    overflow_after_s: float = 0.2
    trunk_channels: int = 2000

    def rates(self, occupancy: float) -> dict[str, float]:
        """Arrival rates per city for a pooled occupancy (offered Erlangs / all agents)."""
        total_erlangs = occupancy * self.agents_per_site * len(self.sites)
        weights = [self.skew] + [1.0] * (len(self.sites) - 1)
        per_weight = total_erlangs / sum(weights) / self.handle_mean_s
        return {site: w * per_weight for site, w in zip(self.sites, weights, strict=True)}

    def plan(self, occupancy: float, mode: RoutingMode, calls: int, seed: int) -> ModelPlan:
        rates = self.rates(occupancy)
        total = sum(rates.values())
        return ModelPlan(
            sites=[
                ModelSite(site, self.trunk_channels, {"general": self.agents_per_site}, rate)
                for site, rate in rates.items()
            ],
            duration_s=calls / total,
            warmup_s=20.0 * self.handle_mean_s,
            seed=seed,
            handle_mean_s=self.handle_mean_s,
            service_level_threshold_s=self.threshold_s,
            routing_mode=mode,
            overflow_after_s=self.overflow_after_s,
        )

    def pooled_erlang(self, occupancy: float) -> dict[str, float]:
        rates = self.rates(occupancy)
        result = erlang_c_for_load(
            sum(rates.values()), self.handle_mean_s, self.agents_per_site * len(self.sites), self.threshold_s
        )
        return {"p_wait": result.p_wait, "asa_s": result.asa_s, "service_level": result.service_level}

    def isolated_erlang_sl(self, occupancy: float) -> float:
        """Erlang C service level of the cities each on its own, weighted by calls (0 where unstable)."""
        rates = self.rates(occupancy)
        total = sum(rates.values())
        sl = 0.0
        for rate in rates.values():
            if rate * self.handle_mean_s >= self.agents_per_site:
                continue  # an unstable queue: the share within any threshold tends to 0
            one = erlang_c_for_load(rate, self.handle_mean_s, self.agents_per_site, self.threshold_s)
            sl += one.service_level * rate / total
        return sl


def pooling(
    *,
    occupancy: float = 0.8,
    calls: int = 60_000,
    seed: int = 42,
    load: PoolingLoad | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Service level of each mode under the same unbalanced load, and its ratio to pooled Erlang C."""
    load = load or PoolingLoad()
    erlang = load.pooled_erlang(occupancy)
    modes: dict[str, Any] = {}
    for mode in MODES:
        progress(f"pooling: {mode} at occupancy {occupancy:.2f} ({calls} calls, model engine)")
        try:
            report, stats = run_plan(load.plan(occupancy, mode, calls, seed))
        except ModelError as exc:
            modes[mode] = {"error": str(exc)}
            continue
        totals = report["totals"]
        assert isinstance(totals, dict)
        sl = totals["service_level"]
        modes[mode] = {
            "service_level": sl,
            "ratio_to_pooled_erlang_c": sl / erlang["service_level"] if sl is not None else None,
            "p_wait": totals["p_wait"],
            "asa_s": totals["asa_s"],
            "overflow_out": totals["overflow_out"],
            "calls": stats.calls,
            "sites": {
                site: {k: fig.get(k) for k in ("offered", "service_level", "p_wait", "asa_s", "overflow_out")}
                for site, fig in _mapping(report["sites"]).items()
            },
            "wall_s": stats.wall_s,
        }
    return {
        "engine": "model",
        "load": {
            "occupancy": occupancy,
            "rates_per_s": load.rates(occupancy),
            "agents_per_site": load.agents_per_site,
            "handle_mean_s": load.handle_mean_s,
            "service_level_threshold_s": load.threshold_s,
            "overflow_after_s": load.overflow_after_s,
        },
        "erlang_c_pooled": erlang,
        "erlang_c_isolated_service_level": load.isolated_erlang_sl(occupancy),
        "modes": modes,
        "targets": {"pooled": 0.95, "overflow": 0.85},
    }


def _mapping(value: object) -> dict[str, Any]:
    assert isinstance(value, dict)
    return value


def pooling_curve(
    occupancies: Sequence[float],
    *,
    calls: int = 20_000,
    seed: int = 42,
    load: PoolingLoad | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Service level against offered load for each mode (the plot's data)."""
    load = load or PoolingLoad()
    points: list[dict[str, Any]] = []
    for occ in occupancies:
        point: dict[str, Any] = {
            "occupancy": occ,
            "offered_erlangs": occ * load.agents_per_site * len(load.sites),
            "erlang_c_pooled": load.pooled_erlang(occ)["service_level"],
            "erlang_c_isolated": load.isolated_erlang_sl(occ),
        }
        for mode in MODES:
            progress(f"pooling curve: {mode} at occupancy {occ:.2f}")
            try:
                report, _ = run_plan(load.plan(occ, mode, calls, seed))
            except ModelError:
                point[mode] = None
                continue
            point[mode] = report["totals"]["service_level"]  # type: ignore[index]
        points.append(point)
    return {"points": points, "calls_per_point": calls, "load": {"agents_per_site": load.agents_per_site}}


def plot_pooling_curve(curve: Mapping[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt

    points = curve["points"]
    x = [p["offered_erlangs"] for p in points]
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    ax.plot(x, [p["erlang_c_pooled"] for p in points], "k-", label="Erlang C, all agents pooled")
    ax.plot(x, [p["erlang_c_isolated"] for p in points], "k--", label="Erlang C, each city alone")
    styles = {"isolated": "o", "overflow": "s", "pooled": "^"}
    for mode in MODES:
        ys = [p.get(mode) for p in points]
        if any(y is not None for y in ys):
            ax.plot(
                [xi for xi, y in zip(x, ys, strict=True) if y is not None],
                [y for y in ys if y is not None],
                marker=styles[mode],
                linestyle=":",
                label=f"{mode} (model engine)",
            )
    ax.set_xlabel("offered load, Erlangs (gz gets twice the calls of sz and fs)")
    ax.set_ylabel("service level")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(
        f"Service level vs offered load, {curve['load']['agents_per_site']} agents per city, 3 cities"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# -- Erlang check ----------------------------------------------------------------------------------


def _ci(samples: Sequence[float]) -> tuple[float, float]:
    # Student t 0.975 for small replication counts; normal beyond.
    t = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
    n = len(samples)
    mean = statistics.fmean(samples)
    if n < 2:
        return mean, math.inf
    return mean, t.get(n - 1, 1.96) * statistics.stdev(samples) / math.sqrt(n)


def erlang_check(
    *, calls: int = 100_000, replications: int = 5, progress: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """The issue's check: p_wait within 0.01 and ASA within 5 % of Erlang C, 95 % CI containing it;
    trunk blocking within 0.3 points of Erlang B."""
    cases: list[dict[str, Any]] = []
    for traffic, agents in ((10.0, 13), (40.0, 46)):
        p_waits, asas, wall = [], [], 0.0
        for r in range(replications):
            progress(f"erlang: A={traffic:g} N={agents} replication {r + 1}/{replications} ({calls} calls)")
            plan = ModelPlan(
                sites=[ModelSite("gz", 100_000, {"general": agents}, traffic)],
                duration_s=calls / traffic,
                warmup_s=20.0,
                seed=50_000 + 100 * agents + r,
                handle_mean_s=1.0,
            )
            report, stats = run_plan(plan)
            totals = report["totals"]
            assert isinstance(totals, dict)
            p_waits.append(float(totals["p_wait"]))
            asas.append(float(totals["asa_s"]))
            wall += stats.wall_s
        c, asa = erlang_c(traffic, agents), average_speed_of_answer(traffic, agents, 1.0)
        p_mean, p_half = _ci(p_waits)
        a_mean, a_half = _ci(asas)
        cases.append(
            {
                "traffic_erlangs": traffic,
                "agents": agents,
                "calls": calls * replications,
                "replications": replications,
                "p_wait": p_mean,
                "p_wait_ci95": p_half,
                "erlang_c_p_wait": c,
                "p_wait_ok": abs(p_mean - c) <= 0.01 and abs(p_mean - c) <= p_half,
                "asa_s": a_mean,
                "asa_ci95": a_half,
                "erlang_c_asa_s": asa,
                "asa_ok": abs(a_mean - asa) <= 0.05 * asa and abs(a_mean - asa) <= a_half,
                "wall_s": wall,
                "us_per_call": wall / (calls * replications) * 1e6,
            }
        )
    progress(f"erlang: trunk blocking A=10 on 18 channels ({calls} calls)")
    blocking_plan = ModelPlan(
        sites=[ModelSite("gz", 18, {"general": 18}, 10.0)],
        duration_s=calls / 10.0,
        warmup_s=20.0,
        seed=77,
        handle_mean_s=1.0,
    )
    report, _ = run_plan(blocking_plan)
    totals = report["totals"]
    assert isinstance(totals, dict)
    share = totals["blocked"] / totals["offered"]
    b = erlang_b(10.0, 18)
    return {
        "engine": "model",
        "waiting": cases,
        "blocking": {
            "traffic_erlangs": 10.0,
            "trunk_channels": 18,
            "calls": totals["offered"],
            "blocked_share": share,
            "erlang_b": b,
            "ok": abs(share - b) <= 0.003,
        },
    }


def with_calls(load: PoolingLoad, **changes: Any) -> PoolingLoad:
    return replace(load, **changes)
