"""The routing core alone in virtual time: checks the ACD and the agent state machine against
queueing theory with enough calls to mean something.

`tools/simulation/model_engine.py` runs whole site switchboards (IVR, screen pops, journals, cross-site legs)
for planners' scenarios; this runs only what decides who serves whom — `routing.acd.Acd`, with
agents simply ready or busy (the agent state machine has its own exhaustive tests) — for one skill
group, fast enough for millions of calls: Poisson arrivals, exponential handle times, optional
trunk channels (a call holds one for its whole life), no abandonment.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass

from routing.acd import Acd, Standing

GROUP = "general"


@dataclass(frozen=True)
class AcdModelResult:
    calls: int  # calls offered after the warm-up
    blocked: int
    waited: int  # answered calls that could not be answered the instant they arrived
    total_wait_s: float

    @property
    def p_wait(self) -> float:
        served = self.calls - self.blocked
        return self.waited / served if served else 0.0

    @property
    def asa_s(self) -> float:
        served = self.calls - self.blocked
        return self.total_wait_s / served if served else 0.0

    @property
    def p_blocked(self) -> float:
        return self.blocked / self.calls if self.calls else 0.0


def simulate(
    *,
    offered_erlangs: float,
    agents: int,
    calls: int,
    seed: int,
    mean_handle_s: float = 1.0,
    trunks: int | None = None,
    warmup_calls: int = 5_000,
) -> AcdModelResult:
    """M/M/agents (M/M/agents/trunks with trunk channels) through the real ACD and agent FSM."""
    if offered_erlangs <= 0 or agents <= 0 or calls <= 0:
        raise ValueError("offered_erlangs, agents and calls must be positive")
    rng = random.Random(seed)
    rate = offered_erlangs / mean_handle_s
    acd = Acd({GROUP: ("longest_idle", 0)})
    for i in range(agents):
        code = f"{i:04d}"
        acd.set_skills(code, {GROUP: 1})
        acd.agent_ready(code, Standing(0.0))
    # Event heap: (time, seq, kind, payload); kind 0 = arrival, 1 = end of a call.
    events: list[tuple[float, int, int, str]] = [(rng.expovariate(rate), 0, 0, "")]
    arrived: dict[str, float] = {}
    seq = offered = blocked = waited = 0
    total_wait = 0.0
    in_system = 0
    counted_from = warmup_calls
    while events:
        now, _, kind, subject = heapq.heappop(events)
        if kind == 0:
            n = seq
            seq += 1
            if seq < warmup_calls + calls:
                heapq.heappush(events, (now + rng.expovariate(rate), seq, 0, ""))
            counted = n >= counted_from
            offered += counted
            if trunks is not None and in_system >= trunks:
                blocked += counted
                continue
            in_system += 1
            call_id = f"c{n}"
            arrived[call_id] = now if counted else -1.0
            acd.enqueue(call_id, GROUP, now)
        else:
            in_system -= 1
            acd.agent_ready(subject, Standing(now))  # no wrap-up: ready again at once
        for match in acd.matches():
            code, call_id = match.agent_code, match.call.call_id
            start = arrived.pop(call_id)
            if start >= 0:
                wait = now - start
                total_wait += wait
                waited += wait > 0
            heapq.heappush(events, (now + rng.expovariate(1.0 / mean_handle_s), -1, 1, code))
    return AcdModelResult(offered, blocked, waited, total_wait)


def confidence_interval(values: list[float], z: float = 1.96) -> tuple[float, float, float]:
    """Mean and the half-width of its normal-approximation interval over independent runs."""
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else math.inf
    half = z * math.sqrt(var / n)
    return mean, mean - half, mean + half
