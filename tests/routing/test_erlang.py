"""Erlang B/C against exact closed forms, published tables and the workforce-library oracle cases."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing.erlang import (
    ErlangCResult,
    agents_needed,
    average_speed_of_answer,
    erlang_b,
    erlang_c,
    erlang_c_for_load,
    occupancy,
    service_level,
)

# The STYLE.md oracle: 100 calls per 30 minutes, AHT 3 minutes, answer within 0.33 minutes.
ORACLE_TRAFFIC = 100 / 30 * 3  # 10 Erlangs
ORACLE_HANDLE_S = 3 * 60.0
ORACLE_THRESHOLD_S = 0.33 * 60.0


def exact_erlang_b(traffic: Fraction, servers: int) -> Fraction:
    """Closed form A^N/N! / sum_k A^k/k!, in exact rationals: an oracle independent of the recursion."""
    terms = [traffic**k / math.factorial(k) for k in range(servers + 1)]
    return terms[-1] / sum(terms)


def exact_erlang_c(traffic: Fraction, agents: int) -> Fraction:
    """Closed form (A^N/N!)·N/(N-A) / (sum_{k<N} A^k/k! + (A^N/N!)·N/(N-A)), exact rationals."""
    waiting = traffic**agents / math.factorial(agents) * Fraction(agents) / (agents - traffic)
    return waiting / (sum(traffic**k / math.factorial(k) for k in range(agents)) + waiting)


@pytest.mark.parametrize(
    ("traffic", "servers"),
    [(1, 1), (2, 1), (1, 3), (10, 13), (10, 18), (Fraction(5, 2), 4), (40, 46), (Fraction(73, 10), 25)],
)
def test_erlang_b_matches_exact_closed_form(traffic: Fraction | int, servers: int) -> None:
    expected = float(exact_erlang_b(Fraction(traffic), servers))
    assert erlang_b(float(traffic), servers) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("traffic", "servers", "blocking"),
    [
        # Offered load at 1%, 5% and 10% grade of service from the standard Erlang B table.
        (1.361, 5, 0.01),
        (2.219, 5, 0.05),
        (2.881, 5, 0.10),
        (4.461, 10, 0.01),
        (6.216, 10, 0.05),
        (7.511, 10, 0.10),
        (12.031, 20, 0.01),
        (15.249, 20, 0.05),
        (17.613, 20, 0.10),
        (84.064, 100, 0.01),
    ],
)
def test_erlang_b_matches_published_table(traffic: float, servers: int, blocking: float) -> None:
    # The table rounds traffic to 3 decimals, which moves B in its 4th significant digit at most.
    assert erlang_b(traffic, servers) == pytest.approx(blocking, rel=1e-3)


def test_erlang_b_edges() -> None:
    assert erlang_b(5.0, 0) == 1.0
    assert erlang_b(0.0, 3) == 0.0
    assert erlang_b(0.0, 0) == 1.0
    assert erlang_b(1.0, 1) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("traffic", "agents"),
    [
        (1, 2),
        (Fraction(1, 2), 1),
        (3, 4),
        (10, 11),
        (10, 13),
        (10, 14),
        (10, 15),
        (40, 46),
        (Fraction(99, 10), 12),
    ],
)
def test_erlang_c_matches_exact_closed_form(traffic: Fraction | int, agents: int) -> None:
    expected = float(exact_erlang_c(Fraction(traffic), agents))
    assert erlang_c(float(traffic), agents) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("traffic", "agents", "blocking", "waiting"),
    [
        (10.0, 13, 0.084339, 0.285270),
        (10.0, 14, 0.056819, 0.174132),
        (10.0, 15, 0.036497, 0.102042),
        (10.0, 18, 0.007142, 0.015928),
        (40.0, 46, 0.045090, 0.265791),
    ],
)
def test_docstring_reference_table(traffic: float, agents: int, blocking: float, waiting: float) -> None:
    assert erlang_b(traffic, agents) == pytest.approx(blocking, abs=1e-6)
    assert erlang_c(traffic, agents) == pytest.approx(waiting, abs=1e-6)


def test_single_agent_is_mm1() -> None:
    # M/M/1: P(wait) = rho, ASA = rho·h/(1-rho).
    assert erlang_c(0.6, 1) == pytest.approx(0.6)
    assert average_speed_of_answer(0.6, 1, 100.0) == pytest.approx(0.6 * 100 / 0.4)


def test_unstable_load() -> None:
    assert erlang_c(10.0, 10) == 1.0
    assert erlang_c(12.5, 10) == 1.0
    assert average_speed_of_answer(10.0, 10, 180.0) == math.inf
    assert service_level(12.0, 10, 180.0, 20.0) == 0.0
    assert occupancy(12.0, 10) == 1.0
    result = erlang_c_for_load(1.0, 20.0, 10, 20.0)
    assert result == ErlangCResult(p_wait=1.0, asa_s=math.inf, service_level=0.0, occupancy=1.0)


def test_zero_traffic() -> None:
    assert erlang_c(0.0, 3) == 0.0
    assert average_speed_of_answer(0.0, 3, 180.0) == 0.0
    assert service_level(0.0, 3, 180.0, 0.0) == 1.0
    assert agents_needed(0.0, 180.0, 20.0, 0.8) == 1
    assert erlang_c_for_load(0.0, 180.0, 2, 20.0) == ErlangCResult(0.0, 0.0, 1.0, 0.0)


def test_oracle_max_occupancy_085() -> None:
    agents = agents_needed(ORACLE_TRAFFIC, ORACLE_HANDLE_S, ORACLE_THRESHOLD_S, 0.8, max_occupancy=0.85)
    assert agents == 14
    assert service_level(ORACLE_TRAFFIC, agents, ORACLE_HANDLE_S, ORACLE_THRESHOLD_S) == pytest.approx(
        0.888, abs=5e-4
    )
    assert occupancy(ORACLE_TRAFFIC, agents) == pytest.approx(0.714, abs=5e-4)
    assert erlang_c(ORACLE_TRAFFIC, agents) == pytest.approx(0.174, abs=5e-4)


def test_oracle_max_occupancy_07() -> None:
    agents = agents_needed(ORACLE_TRAFFIC, ORACLE_HANDLE_S, ORACLE_THRESHOLD_S, 0.8, max_occupancy=0.7)
    assert agents == 15
    assert service_level(ORACLE_TRAFFIC, agents, ORACLE_HANDLE_S, ORACLE_THRESHOLD_S) == pytest.approx(
        0.941, abs=5e-4
    )
    assert occupancy(ORACLE_TRAFFIC, agents) == pytest.approx(0.667, abs=5e-4)
    assert erlang_c(ORACLE_TRAFFIC, agents) == pytest.approx(0.102, abs=5e-4)


def test_oracle_through_erlang_c_for_load() -> None:
    result = erlang_c_for_load(100 / 1800, ORACLE_HANDLE_S, 14, ORACLE_THRESHOLD_S)
    assert result.p_wait == pytest.approx(0.174, abs=5e-4)
    assert result.service_level == pytest.approx(0.888, abs=5e-4)
    assert result.occupancy == pytest.approx(0.714, abs=5e-4)
    # ASA = C·h/(N-A) = 0.174132·180/4.
    assert result.asa_s == pytest.approx(0.17413193359504983 * 180 / 4, rel=1e-12)


def test_agents_needed_without_occupancy_cap() -> None:
    # SL(13) = 0.795 misses 0.8, SL(14) = 0.888 meets it: the occupancy cap is not what decides here.
    assert service_level(ORACLE_TRAFFIC, 13, ORACLE_HANDLE_S, ORACLE_THRESHOLD_S) < 0.8
    assert agents_needed(ORACLE_TRAFFIC, ORACLE_HANDLE_S, ORACLE_THRESHOLD_S, 0.8) == 14
    # A zero target still needs a stable queue.
    assert agents_needed(10.0, 180.0, 20.0, 0.0) == 11
    # An integral load that exactly fills the occupancy cap is allowed.
    assert agents_needed(8.0, 180.0, 20.0, 0.0, max_occupancy=0.8) == 10
    assert agents_needed(8.0, 180.0, 20.0, 0.0, max_occupancy=1.0) == 9


@pytest.mark.parametrize("target", [0.5, 0.8, 0.95, 0.99])
def test_agents_needed_is_the_smallest(target: float) -> None:
    traffic, handle, threshold = 37.3, 240.0, 15.0
    agents = agents_needed(traffic, handle, threshold, target)
    assert service_level(traffic, agents, handle, threshold) >= target
    assert agents - 1 <= traffic or service_level(traffic, agents - 1, handle, threshold) < target


def test_stable_for_thousands_of_agents() -> None:
    b = erlang_b(1900.0, 2000)
    c = erlang_c(1900.0, 2000)
    assert 0.0 < b < 1.0
    assert 0.0 < c < 1.0
    assert b < c
    assert math.isfinite(average_speed_of_answer(1900.0, 2000, 180.0))
    assert 0.0 <= service_level(1900.0, 2000, 180.0, 20.0) <= 1.0
    # Far beyond where A^N/N! overflows a float.
    assert 0.0 <= erlang_c(9500.0, 10000) <= 1.0
    assert agents_needed(1900.0, 180.0, 20.0, 0.9) > 1900


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: erlang_b(-1.0, 3), "traffic_erlangs"),
        (lambda: erlang_b(math.nan, 3), "traffic_erlangs"),
        (lambda: erlang_b(math.inf, 3), "traffic_erlangs"),
        (lambda: erlang_b(1.0, -1), "servers"),
        (lambda: erlang_b(1.0, 2.0), "servers"),  # type: ignore[arg-type]
        (lambda: erlang_c(1.0, 0), "agents"),
        (lambda: erlang_c(1.0, True), "agents"),
        (lambda: occupancy(1.0, 0), "agents"),
        (lambda: average_speed_of_answer(1.0, 2, 0.0), "handle_time_s"),
        (lambda: service_level(1.0, 2, 180.0, -1.0), "threshold_s"),
        (lambda: service_level(1.0, 2, math.nan, 20.0), "handle_time_s"),
        (lambda: agents_needed(1.0, 180.0, 20.0, 1.0), "target_service_level"),
        (lambda: agents_needed(1.0, 180.0, 20.0, -0.1), "target_service_level"),
        (lambda: agents_needed(1.0, 180.0, 20.0, 0.8, max_occupancy=0.0), "max_occupancy"),
        (lambda: agents_needed(1.0, 180.0, 20.0, 0.8, max_occupancy=1.5), "max_occupancy"),
        (lambda: erlang_c_for_load(-0.1, 180.0, 2, 20.0), "arrival_rate_per_s"),
        (lambda: erlang_c_for_load(0.1, 0.0, 2, 20.0), "mean_handle_s"),
        (lambda: erlang_c_for_load(0.1, 180.0, 0, 20.0), "agents"),
        (lambda: erlang_c_for_load(0.1, 180.0, 2, math.inf), "threshold_s"),
    ],
)
def test_bad_input_names_the_argument(call: object, argument: str) -> None:
    assert callable(call)
    with pytest.raises(ValueError, match=argument):
        call()


def test_result_is_frozen() -> None:
    result = erlang_c_for_load(0.01, 180.0, 3, 20.0)
    with pytest.raises(AttributeError):
        result.p_wait = 0.5  # type: ignore[misc]


traffic_st = st.floats(min_value=0.0, max_value=500.0, allow_nan=False, allow_infinity=False)
agents_st = st.integers(min_value=1, max_value=600)


@given(traffic=traffic_st, agents=agents_st)
def test_probabilities_in_unit_interval_and_b_below_c(traffic: float, agents: int) -> None:
    b = erlang_b(traffic, agents)
    c = erlang_c(traffic, agents)
    assert 0.0 <= b <= 1.0
    assert 0.0 <= c <= 1.0
    assert b <= c
    sl = service_level(traffic, agents, 180.0, 20.0)
    assert 0.0 <= sl <= 1.0
    assert 0.0 <= occupancy(traffic, agents) <= 1.0


@given(traffic=traffic_st, agents=agents_st)
def test_more_agents_never_wait_more(traffic: float, agents: int) -> None:
    assert erlang_c(traffic, agents + 1) <= erlang_c(traffic, agents)
    assert erlang_b(traffic, agents + 1) <= erlang_b(traffic, agents)
    assert service_level(traffic, agents + 1, 180.0, 20.0) >= service_level(traffic, agents, 180.0, 20.0)
    assert average_speed_of_answer(traffic, agents + 1, 180.0) <= average_speed_of_answer(
        traffic, agents, 180.0
    )


@given(
    traffic=st.floats(min_value=0.0, max_value=200.0, allow_nan=False),
    target=st.floats(min_value=0.0, max_value=0.99),
    cap=st.one_of(st.none(), st.floats(min_value=0.3, max_value=1.0)),
)
def test_agents_needed_meets_its_targets(traffic: float, target: float, cap: float | None) -> None:
    agents = agents_needed(traffic, 180.0, 20.0, target, max_occupancy=cap)
    assert service_level(traffic, agents, 180.0, 20.0) >= target or traffic == 0.0
    if cap is not None:
        assert traffic / agents <= cap
