"""The model engine against queueing theory: Erlang C (waiting) and Erlang B (trunk blocking).

One skill, Poisson arrivals, exponential handle times, no abandonment: the textbook M/M/N queue,
run through the real switchboard code in virtual time.

How the counts were chosen. Measured on this code, between independent replications of 100,000
calls at A = 10, N = 13 (seeds 13000-13005): p_wait 0.277, standard deviation 0.015; the ASA's
relative standard deviation is of the same order (about 10 %). That is twice what consecutive
batches within one run suggest: waits are correlated over far longer than a batch, so batch means
understate the error and the interval here comes from independent replications only.
Standard errors shrink as 1/sqrt(replications): p_wait within 0.01 and ASA within 5 % at (nearly)
every seed need standard errors near 0.005 and 2.5 %, i.e. on the order of a million calls per
case. The engine costs about 0.15 ms of CPU per call, so that is minutes, not the suite's minute.

So the suite runs 6 replications of 20,000 calls per case (240,000 calls on two worker
processes: about 30 s on this 2-core machine when it is otherwise idle) and asserts what those
calls can honestly show: the 95 % confidence interval over the replications (Student t, 5
degrees of freedom) contains the Erlang value, and it is narrow enough for that to mean
something. `VCC_MODEL_FULL=1 pytest tests/tools/test_model_engine.py` runs the issue's point
tolerances (p_wait within 0.01, ASA within 5 %) on 10 replications of 100,000 calls per case
(2,000,000 calls: several minutes); docs/BENCHMARKS.md has the latest figures. Seeds are fixed:
every run is deterministic.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import statistics
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import pytest

from routing.erlang import average_speed_of_answer, erlang_b, erlang_c
from tools.simulation.model_engine import (
    ModelError,
    ModelPlan,
    ModelSite,
    RoutingMode,
    batch_means,
    run_model,
    run_plan,
)

FULL = os.environ.get("VCC_MODEL_FULL") == "1"
CALLS_PER_REPLICATION = 100_000 if FULL else 20_000
# (A, N) -> replications of CALLS_PER_REPLICATION calls.
REPLICATIONS = {(10.0, 13): 10, (40.0, 46): 10} if FULL else {(10.0, 13): 6, (40.0, 46): 6}
# Student t 0.975 quantiles by degrees of freedom.
T975 = {2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 9: 2.262, 11: 2.201, 29: 2.045, 59: 2.001}


def _plan(rate: float, agents: int, calls: int, seed: int, trunks: int = 100_000) -> ModelPlan:
    # Mean handle time 1 s: the offered load in Erlangs is the arrival rate per second. The warm-up
    # (20 handle times) lets the empty start settle before calls are counted.
    return ModelPlan(
        sites=[ModelSite("gz", trunks, {"general": agents}, rate)],
        duration_s=calls / rate,
        warmup_s=20.0,
        seed=seed,
        handle_mean_s=1.0,
        handle_distribution="exponential",
        patience_mean_s=None,
        service_level_threshold_s=0.2,
    )


@pytest.fixture(scope="module")
def batches() -> Iterator[dict[tuple[float, int], list[tuple[float, float, int]]]]:
    """Every case's replications (p_wait, ASA, calls), run on two worker processes."""
    jobs = [
        (case, _plan(case[0], case[1], CALLS_PER_REPLICATION, seed=1000 * case[1] + r))
        for case, reps in REPLICATIONS.items()
        for r in range(reps)
    ]
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=spawn) as pool:
        futures = [(case, pool.submit(batch_means, plan, 1)) for case, plan in jobs]
        out: dict[tuple[float, int], list[tuple[float, float, int]]] = {case: [] for case in REPLICATIONS}
        for case, future in futures:
            out[case].extend(future.result())
    yield out


def _ci(samples: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(samples)
    half = T975[len(samples) - 1] * statistics.stdev(samples) / math.sqrt(len(samples))
    return mean, half


# CPU-bound statistics, not a timing (the replications run in the first test's setup): on a busy
# machine they took 225 s of the suite's 300 s per test.
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("traffic", "agents", "erlang_c_value"),
    [(10.0, 13, 0.285270), (40.0, 46, 0.265791)],
)
def test_waiting_matches_erlang_c(
    traffic: float,
    agents: int,
    erlang_c_value: float,
    batches: dict[tuple[float, int], list[tuple[float, float, int]]],
) -> None:
    assert erlang_c(traffic, agents) == pytest.approx(erlang_c_value, abs=1e-6)
    asa_expected = average_speed_of_answer(traffic, agents, 1.0)
    case = batches[(traffic, agents)]
    assert all(calls >= 0.95 * CALLS_PER_REPLICATION for _, _, calls in case)
    p_mean, p_half = _ci([p for p, _, _ in case])
    asa_mean, asa_half = _ci([a for _, a, _ in case])
    detail = (
        f"{len(case)} replications: p_wait {p_mean:.4f} ± {p_half:.4f} (Erlang C {erlang_c_value:.4f}), "
        f"ASA {asa_mean:.4f} ± {asa_half:.4f} (Erlang {asa_expected:.4f})"
    )
    assert abs(p_mean - erlang_c_value) <= p_half, detail
    assert abs(asa_mean - asa_expected) <= asa_half, detail
    # The interval is narrow enough that containing the Erlang value says something.
    assert p_half < 0.05 and asa_half < 0.4 * asa_expected, detail
    if FULL:
        assert abs(p_mean - erlang_c_value) <= 0.01, detail
        assert abs(asa_mean - asa_expected) <= 0.05 * asa_expected, detail


def test_trunk_blocking_matches_erlang_b() -> None:
    # 18 agents for 18 trunk channels: nobody ever queues, so the calls in the system are the
    # busy trunk channels: M/M/18/18, blocking = Erlang B(10, 18). With 30,000 calls the
    # blocked share has an SE of about 0.0007 (about 210 blocked calls, mildly correlated), well
    # inside the 0.003.
    calls = 100_000 if FULL else 30_000
    report, _ = run_plan(_plan(10.0, 18, calls, seed=7, trunks=18))
    totals = report["totals"]
    assert isinstance(totals, dict)
    blocked_share = totals["blocked"] / totals["offered"]
    expected = erlang_b(10.0, 18)
    assert expected == pytest.approx(0.007142, abs=1e-6)
    assert abs(blocked_share - expected) <= 0.003, (blocked_share, expected)
    assert totals["p_wait"] == 0.0  # 18 agents for 18 channels: every call rang at once


def test_report_has_the_simulate_format() -> None:
    report, stats = run_plan(_plan(10.0, 13, 2_000, seed=3))
    for key in ("totals", "sites", "erlang_c", "routing_latency_ms", "transfers", "events", "reconciliation"):
        assert key in report
    assert set(report["sites"]) == {"gz"}  # type: ignore[call-overload]
    assert stats.calls > 0 and report["engine"]["calls"] == stats.calls  # type: ignore[index]
    # Same seed, same run.
    again, _ = run_plan(_plan(10.0, 13, 2_000, seed=3))
    assert again["totals"] == report["totals"]


def test_patience_and_unstable_load_end_every_call() -> None:
    plan = ModelPlan(
        sites=[ModelSite("gz", 50, {"general": 3}, 5.0), ModelSite("sz", 50, {"general": 3}, 1.0)],
        duration_s=200.0,
        seed=5,
        handle_mean_s=1.0,
        patience_mean_s=2.0,
        ring_delay_s=0.1,
        wrap_up_s=0.5,
    )
    report, _ = run_plan(plan)
    gz = report["sites"]["gz"]  # type: ignore[index]
    assert gz["abandoned"] > 0 and gz["answered"] > 0
    assert report["totals"]["lost_elsewhere"] == 0  # type: ignore[index]
    assert report["all_calls"]["lost"] == 0  # type: ignore[index]


def test_overflow_and_pooled_serve_the_overloaded_city_elsewhere() -> None:
    # gz is overloaded (6 Erlangs on 4 agents), sz and fs are light: under isolated gz's queue
    # grows; overflow and pooled send its calls to the others and its waits drop.
    def plan(mode: RoutingMode) -> ModelPlan:
        return ModelPlan(
            sites=[
                ModelSite("gz", 200, {"general": 4}, 6.0),
                ModelSite("sz", 200, {"general": 4}, 1.0),
                ModelSite("fs", 200, {"general": 4}, 1.0),
            ],
            duration_s=300.0,
            seed=11,
            handle_mean_s=1.0,
            patience_mean_s=20.0,
            routing_mode=mode,
            overflow_after_s=0.5,
        )

    reports = {mode: run_model(plan(mode)) for mode in ("isolated", "overflow", "pooled")}
    gz = {mode: r["sites"]["gz"] for mode, r in reports.items()}  # type: ignore[index]
    assert gz["isolated"]["overflow_out"] == 0
    for mode in ("overflow", "pooled"):
        assert gz[mode]["overflow_out"] > 0
        assert gz[mode]["asa_s"] < gz["isolated"]["asa_s"] / 2
        totals = reports[mode]["totals"]
        assert totals["lost_elsewhere"] == 0  # type: ignore[index]
        assert totals["overflow_out"] == totals["overflow_in"]  # type: ignore[index]
    assert reports["pooled"]["totals"]["service_level"] >= reports["isolated"]["totals"]["service_level"]  # type: ignore[index]


def test_a_bad_plan_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match="duration_s"):
        run_model(ModelPlan(sites=[ModelSite("gz", 10, {"general": 2}, 1.0)], duration_s=0.0))
