"""The routing core (the ACD) against queueing theory, in virtual time.

Counts: successive waits are correlated, so spreads were measured over independent runs of 100,000
calls, not per call. At A=10, N=13 a run's p_wait has a standard deviation of about 0.010 and its
ASA about 8 %; at A=40, N=46 about 0.016 and 14.5 % (rare long waits dominate a small ASA). With 16
and 40 runs the means' standard errors are about 0.0025 / 2 % and 0.0026 / 2.3 %: p_wait within
0.01 is about four standard errors, ASA within 5 % a little over two. The seeds are fixed, so the
test is deterministic; a change to the routing code draws a fresh sample, and then these margins
are what protect it (the 95 % interval's containment, by its definition, fails for about one sample
in twenty). About 5.6 million calls in all, on two worker processes; `tools/simulation/model_engine.py` checks
the whole site code against the same figures with fewer calls (tests/tools/test_model_engine.py).
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import pytest

from routing.erlang import average_speed_of_answer, erlang_b, erlang_c
from tools.simulation.acd_model import confidence_interval, simulate

CALLS = 100_000
RUNS = {13: 16, 46: 40}  # by number of agents


def _run(args: tuple[float, int, int]) -> tuple[float, float]:
    erlangs, agents, seed = args
    result = simulate(offered_erlangs=erlangs, agents=agents, calls=CALLS, seed=seed)
    return result.p_wait, result.asa_s


# CPU-bound statistics, not a timing: on a busy machine the runs take several times their quiet
# 45 s, and the suite's 300 s per test once came within a minute of ending one.
@pytest.mark.timeout(900)
@pytest.mark.parametrize(("erlangs", "agents"), [(10.0, 13), (40.0, 46)])
def test_waiting_and_speed_of_answer_match_erlang_c(erlangs: float, agents: int) -> None:
    with ProcessPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(_run, [(erlangs, agents, 7919 * agents + i) for i in range(RUNS[agents])]))
    p_wait, p_low, p_high = confidence_interval([p for p, _ in runs])
    asa, asa_low, asa_high = confidence_interval([a for _, a in runs])
    expected_p, expected_asa = erlang_c(erlangs, agents), average_speed_of_answer(erlangs, agents, 1.0)
    assert abs(p_wait - expected_p) < 0.01, (p_wait, expected_p)
    assert abs(asa - expected_asa) < 0.05 * expected_asa, (asa, expected_asa)
    assert p_low <= expected_p <= p_high, (p_low, p_high, expected_p)
    assert asa_low <= expected_asa <= asa_high, (asa_low, asa_high, expected_asa)


def test_trunk_blocking_matches_erlang_b() -> None:
    # Ample agents, so every call in the system talks: busy trunks are M/M/18/18.
    result = simulate(offered_erlangs=10.0, agents=30, trunks=18, calls=300_000, seed=18)
    assert abs(result.p_blocked - erlang_b(10.0, 18)) < 0.003, (result.p_blocked, erlang_b(10.0, 18))
