"""Erlang B and Erlang C: the textbook figures a capacity planner compares measured results with.

Erlang B is the probability that a call finds every trunk channel busy and is refused (loss system,
no queue). Erlang C is the probability that a call has to wait for an agent (delay system, infinite
patience, first come first served, Poisson arrivals, exponential handle times). The report of
`vcc sim` uses `erlang_c_for_load` for each site and for all agents pooled.

Everything goes through the Erlang B recursion ``B(0) = 1, B(n) = A·B(n-1) / (n + A·B(n-1))``, which
stays in [0, 1] at every step, so it is stable for thousands of servers where factorials and powers
overflow. Erlang C follows from Erlang B: ``C = N·B / (N - A·(1 - B))`` when ``A < N``.

Reference values (traffic A in Erlangs, N agents), also the targets other tests compare against:

=====  ===  ==================  ==================
A      N    Erlang B            Erlang C (P(wait))
=====  ===  ==================  ==================
10     13   0.0843 (0.084339)   0.2853 (0.285270)
10     14   0.0568 (0.056819)   0.1741 (0.174132)
10     15   0.0365 (0.036497)   0.1020 (0.102042)
10     18   0.0071 (0.007142)   0.0159 (0.015928)
40     46   0.0451 (0.045090)   0.2658 (0.265791)
=====  ===  ==================  ==================

Values checked against the closed forms in exact rational arithmetic (tests/routing/test_erlang.py).

The functions here are pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "ErlangCResult",
    "agents_needed",
    "average_speed_of_answer",
    "erlang_b",
    "erlang_c",
    "erlang_c_for_load",
    "occupancy",
    "service_level",
]


def _check_traffic(traffic_erlangs: float, name: str = "traffic_erlangs") -> float:
    if isinstance(traffic_erlangs, bool) or not isinstance(traffic_erlangs, int | float):
        raise ValueError(f"{name} must be a number, got {traffic_erlangs!r}")
    if not math.isfinite(traffic_erlangs):
        raise ValueError(f"{name} must be finite, got {traffic_erlangs!r}")
    if traffic_erlangs < 0:
        raise ValueError(f"{name} must not be negative, got {traffic_erlangs!r}")
    return float(traffic_erlangs)


def _check_count(value: int, name: str, minimum: int) -> int:
    # bool is an int subclass; a True agent count is a caller bug, not one agent.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
    return value


def _check_positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number above 0, got {value!r}")
    return float(value)


def _check_non_negative(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of at least 0, got {value!r}")
    return float(value)


def _check_fraction(value: float, name: str, *, allow_zero: bool, allow_one: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    low_ok = value >= 0 if allow_zero else value > 0
    high_ok = value <= 1 if allow_one else value < 1
    if not math.isfinite(value) or not (low_ok and high_ok):
        low = "[0" if allow_zero else "(0"
        high = "1]" if allow_one else "1)"
        raise ValueError(f"{name} must be in {low}, {high}, got {value!r}")
    return float(value)


def _next_b(traffic: float, servers: int, previous_b: float) -> float:
    """One step of the Erlang B recursion: B(n) from B(n-1)."""
    numerator = traffic * previous_b
    return numerator / (servers + numerator)


def _erlang_b(traffic: float, servers: int) -> float:
    b = 1.0
    for n in range(1, servers + 1):
        b = _next_b(traffic, n, b)
    return b


def _c_from_b(traffic: float, agents: int, b: float) -> float:
    if traffic >= agents:
        return 1.0
    return agents * b / (agents - traffic * (1.0 - b))


def _sl_from_c(traffic: float, agents: int, c: float, handle_time_s: float, threshold_s: float) -> float:
    if traffic >= agents:
        return 0.0
    return max(0.0, 1.0 - c * math.exp(-(agents - traffic) * threshold_s / handle_time_s))


def erlang_b(traffic_erlangs: float, servers: int) -> float:
    """Blocking probability of a loss system with ``servers`` channels offered ``traffic_erlangs``.

    ``servers`` may be 0 (every call is blocked: 1.0). Zero traffic is never blocked (0.0 when
    ``servers >= 1``).
    """
    traffic = _check_traffic(traffic_erlangs)
    n = _check_count(servers, "servers", 0)
    return _erlang_b(traffic, n)


def erlang_c(traffic_erlangs: float, agents: int) -> float:
    """Probability that a call waits for one of ``agents`` agents; 1.0 when the queue is unstable (A >= N)."""
    traffic = _check_traffic(traffic_erlangs)
    n = _check_count(agents, "agents", 1)
    if traffic >= n:
        return 1.0
    return _c_from_b(traffic, n, _erlang_b(traffic, n))


def average_speed_of_answer(traffic_erlangs: float, agents: int, handle_time_s: float) -> float:
    """Mean wait of all calls (answered immediately count as 0), in seconds; ``inf`` when A >= N."""
    traffic = _check_traffic(traffic_erlangs)
    n = _check_count(agents, "agents", 1)
    handle = _check_positive(handle_time_s, "handle_time_s")
    if traffic >= n:
        return math.inf
    return erlang_c(traffic, n) * handle / (n - traffic)


def service_level(traffic_erlangs: float, agents: int, handle_time_s: float, threshold_s: float) -> float:
    """Fraction of calls answered within ``threshold_s`` seconds; 0.0 when the queue is unstable (A >= N)."""
    traffic = _check_traffic(traffic_erlangs)
    n = _check_count(agents, "agents", 1)
    handle = _check_positive(handle_time_s, "handle_time_s")
    threshold = _check_non_negative(threshold_s, "threshold_s")
    if traffic >= n:
        return 0.0
    return _sl_from_c(traffic, n, erlang_c(traffic, n), handle, threshold)


def occupancy(traffic_erlangs: float, agents: int) -> float:
    """Fraction of agent time spent on calls, A/N, capped at 1.0 (agents cannot be busier than always)."""
    traffic = _check_traffic(traffic_erlangs)
    n = _check_count(agents, "agents", 1)
    return min(1.0, traffic / n)


def agents_needed(
    traffic_erlangs: float,
    handle_time_s: float,
    threshold_s: float,
    target_service_level: float,
    max_occupancy: float | None = None,
) -> int:
    """Smallest number of agents whose service level reaches ``target_service_level``.

    When ``max_occupancy`` is given the answer also keeps A/N at or below it. The answer is at least
    1 (zero traffic still needs someone logged in to answer). ``target_service_level`` must be below
    1: the Erlang C service level only approaches 1, it never reaches it.
    """
    traffic = _check_traffic(traffic_erlangs)
    handle = _check_positive(handle_time_s, "handle_time_s")
    threshold = _check_non_negative(threshold_s, "threshold_s")
    target = _check_fraction(target_service_level, "target_service_level", allow_zero=True, allow_one=False)
    # The queue is only stable with more agents than Erlangs; the occupancy cap raises that floor.
    floor = math.floor(traffic) + 1
    if max_occupancy is not None:
        cap = _check_fraction(max_occupancy, "max_occupancy", allow_zero=False, allow_one=True)
        floor = max(floor, math.ceil(traffic / cap))
        # ceil of a float quotient can land one short of the true bound; step past it.
        while traffic / floor > cap:
            floor += 1
    # Walk the Erlang B recursion forward once instead of restarting it for every candidate N.
    b = _erlang_b(traffic, floor)
    n = floor
    while True:
        c = _c_from_b(traffic, n, b)
        if _sl_from_c(traffic, n, c, handle, threshold) >= target:
            return n
        n += 1
        b = _next_b(traffic, n, b)


@dataclass(frozen=True, slots=True)
class ErlangCResult:
    """The Erlang C figures for one offered load and one number of agents.

    ``asa_s`` is ``inf`` and ``service_level`` 0.0 when the load is unstable (A >= N).
    """

    p_wait: float
    asa_s: float
    service_level: float
    occupancy: float


def erlang_c_for_load(
    arrival_rate_per_s: float, mean_handle_s: float, agents: int, threshold_s: float
) -> ErlangCResult:
    """Erlang C figures for calls arriving at ``arrival_rate_per_s`` and handled in ``mean_handle_s``."""
    rate = _check_traffic(arrival_rate_per_s, "arrival_rate_per_s")
    handle = _check_positive(mean_handle_s, "mean_handle_s")
    n = _check_count(agents, "agents", 1)
    threshold = _check_non_negative(threshold_s, "threshold_s")
    traffic = rate * handle
    if not math.isfinite(traffic):
        raise ValueError(f"arrival_rate_per_s * mean_handle_s overflows: {rate!r} * {handle!r}")
    c = erlang_c(traffic, n)
    return ErlangCResult(
        p_wait=c,
        asa_s=math.inf if traffic >= n else c * handle / (n - traffic),
        service_level=_sl_from_c(traffic, n, c, handle, threshold),
        occupancy=min(1.0, traffic / n),
    )
