"""`vcc simulate` on a real local cluster: Erlang C agreement, fault attribution, routing pass-through."""

from __future__ import annotations

import heapq
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from routing.erlang import erlang_c
from tools.simulation.scenario import Scenario, parse_scenario
from tools.simulation.simulate import SimulationResult, simulate
from tools.simulation.traffic import load_journal

pytestmark = pytest.mark.cluster


def scenario(**overrides: Any) -> Scenario:
    data: dict[str, Any] = {
        "seed": 11,
        "duration_s": 5,
        "warmup_s": 1,
        "handle_time": {"mean_s": 0.5, "distribution": "exponential"},
        "service_level_threshold_s": 0.2,
        "routing": {"mode": "isolated"},
        "sites": [{"id": "gz", "trunk_channels": 60, "agents": {"general": 3}, "arrival_rate_per_s": 2.0}],
    }
    data.update(overrides)
    return parse_scenario(data)


def figures(report: Mapping[str, object], *path: str) -> Mapping[str, Any]:
    node: Any = report
    for key in path:
        node = node[key]
    assert isinstance(node, Mapping)
    return node


def mmc_p_wait_quantiles(
    rate: float, handle_s: float, agents: int, *, warmup_s: float, duration_s: float, reps: int = 400
) -> tuple[float, float]:
    """0.5 % and 99.5 % quantiles of the p_wait an M/M/c FCFS queue shows in this exact window.

    Replicates the test's window (empty at the start, warm-up, then `duration_s` measured) in
    virtual time. It is the sampling distribution of the measured share, correlation included.
    """
    shares = []
    for seed in range(reps):
        rng = random.Random(seed)
        free_at = [0.0] * agents
        t, calls, waited = 0.0, 0, 0
        while True:
            t += rng.expovariate(rate)
            if t > warmup_s + duration_s:
                break
            start = max(t, heapq.heappop(free_at))
            heapq.heappush(free_at, start + rng.expovariate(1.0 / handle_s))
            if t >= warmup_s:
                calls += 1
                waited += start > t
        shares.append(waited / calls)
    shares.sort()
    return shares[int(0.005 * reps)], shares[int(0.995 * reps) - 1]


async def test_isolated_single_site_waits_as_erlang_c_says(tmp_path: Path) -> None:
    # A = 4 erlangs on 6 agents (Erlang C P(wait) = 0.285): 20 calls/s, handle 0.2 s exponential,
    # no abandonment, 25 s measured after 2 s of warm-up: about 500 calls.
    #
    # Tolerance. A binomial 99 % interval for 500 independent calls would be +-2.58 * sqrt(C(1-C)/n)
    # = +-0.05, but successive calls are not independent: they share busy periods, so the share that
    # waited varies far more between runs. Simulating this very window (M/M/6, empty at start) in
    # virtual time gives its sampling spread with the correlation included: the standard deviation
    # is about 3.6 times the binomial one (0.073), and the 99 % interval about 0.13 .. 0.51. We take
    # that interval, computed here for the load actually measured (arrival rate, and the agents'
    # occupation per call: from ringing to the end of the call, which includes the few milliseconds
    # of answer and hang-up round trips a robot adds to its talk time).
    rate, handle_s, agents, warmup_s, duration_s = 20.0, 0.2, 6, 2.0, 25.0
    sc = scenario(
        seed=42,
        duration_s=duration_s,
        warmup_s=warmup_s,
        handle_time={"mean_s": handle_s, "distribution": "exponential"},
        sites=[
            {"id": "gz", "trunk_channels": 200, "agents": {"general": agents}, "arrival_rate_per_s": rate}
        ],
    )
    result = await simulate(sc, tmp_path / "run")
    report = result.report
    totals = figures(report, "totals")
    assert result.clean, result.problems
    assert totals["lost_elsewhere"] == 0 and totals["abandoned"] == 0 and totals["blocked"] == 0

    views = load_journal(tmp_path / "run" / "calls-gz.jsonl")
    occupations = []
    for view in views:
        rung = [float(d["site_at"]) for k, _, d in view.progress if k == "ringing" and "site_at" in d]
        ended = [float(d["site_at"]) for k, _, d in view.progress if k == "ended" and "site_at" in d]
        if view.outcome == "answered" and rung and ended:
            occupations.append(ended[-1] - rung[-1])
    # Every answered call rang an agent and ended, by the site's own stamps.
    assert len(occupations) == int(figures(report, "all_calls")["answered"])
    occupation_s = sum(occupations) / len(occupations)
    measured_rate = int(totals["offered"]) / duration_s
    effective_erlangs = measured_rate * occupation_s
    low, high = mmc_p_wait_quantiles(
        measured_rate, occupation_s, agents, warmup_s=warmup_s, duration_s=duration_s
    )
    p_wait = float(totals["p_wait"])
    expected = erlang_c(effective_erlangs, agents)
    print(
        f"calls {totals['offered']}, rate {measured_rate:.2f}/s, occupation {occupation_s * 1000:.0f} ms, "
        f"A {effective_erlangs:.2f}: p_wait {p_wait:.3f}, Erlang C {expected:.3f} "
        f"(nominal {erlang_c(rate * handle_s, agents):.3f}), 99% interval {low:.3f}..{high:.3f}; "
        f"robots' overhead {occupation_s / handle_s - 1:+.0%} of the mean talk time"
    )
    assert int(totals["offered"]) >= 350  # enough calls for the interval above to mean something
    assert low <= p_wait <= high
    assert figures(report, "erlang_c", "pooled")["p_wait"] == pytest.approx(
        erlang_c(measured_rate * handle_s, agents), rel=1e-6
    )


async def test_killed_site_calls_are_lost_on_the_failed_site_only(tmp_path: Path) -> None:
    # Long calls at sz (about four up at any time) so that some are up when it is killed; gz carries
    # on beside it and must not lose a call.
    sc = scenario(
        duration_s=9,
        warmup_s=0,
        handle_time={"mean_s": 1.5, "distribution": "constant"},
        sites=[
            {"id": "gz", "trunk_channels": 60, "agents": {"general": 4}, "arrival_rate_per_s": 1.5},
            {"id": "sz", "trunk_channels": 60, "agents": {"general": 6}, "arrival_rate_per_s": 3.0},
        ],
        events=[
            {"at_s": 3.0, "action": "kill_site", "site": "sz"},
            {"at_s": 5.0, "action": "restart_site", "site": "sz"},
        ],
    )
    result: SimulationResult = await simulate(sc, tmp_path / "run")
    report = result.report
    events = report["events"]
    assert isinstance(events, list)
    kill = events[0]
    assert (kill["action"], kill["target"], kill["at_s"]) == ("kill_site", "sz", 3.0)
    assert kill["calls_lost"] > 0 and kill["service_gap_s"] > 0
    assert events[1]["action"] == "restart_site" and not events[1]["error"]
    totals = figures(report, "totals")
    assert totals["lost_on_failed_site"] > 0
    assert totals["lost_elsewhere"] == 0, result.problems
    assert figures(report, "sites", "gz")["lost_on_failed_site"] == 0
    assert figures(report, "sites", "gz")["answered"] > 0


@pytest.mark.parametrize("mode", ["overflow", "pooled"])
async def test_routing_mode_reaches_the_province_and_the_run_completes(tmp_path: Path, mode: str) -> None:
    # The behaviour of overflow and pooled routing is tested with that work; here: it is passed
    # through and a scenario of three unbalanced cities runs end to end.
    routing: dict[str, Any] = {"mode": mode, **({"after_s": 0.5} if mode == "overflow" else {})}
    sc = scenario(
        duration_s=3,
        warmup_s=0,
        routing=routing,
        sites=[
            {"id": "gz", "trunk_channels": 30, "agents": {"general": 2}, "arrival_rate_per_s": 5.0},
            {"id": "sz", "trunk_channels": 30, "agents": {"general": 2}, "arrival_rate_per_s": 0.5},
            {"id": "fs", "trunk_channels": 30, "agents": {"general": 2}, "arrival_rate_per_s": 0.5},
        ],
    )
    result = await simulate(sc, tmp_path / "run")
    province = yaml.safe_load((tmp_path / "run" / "province.yaml").read_text(encoding="utf-8"))
    assert province["routing"]["mode"] == mode
    if mode == "overflow":
        assert province["routing"]["overflow_after_s"] == 0.5
    assert figures(result.report, "totals")["answered"] > 0
    assert set(figures(result.report, "sites")) == {"gz", "sz", "fs"}
