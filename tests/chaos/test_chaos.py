"""The chaos suite: short scenarios on a real cluster with PostgreSQL, through `vcc simulate`'s runner.

Each breaks one thing under load and asserts from the report: no call lost elsewhere, every call
that ended has exactly one ended record at central (reconciliation missing 0, duplicated 0), the
invariants of tools/simulation/invariants.py (no agent holds two calls, by central's records and
by the callers' ears; no call served twice at once or on both sides of a cut; no call with two
final records or none; callers and central count the same outcomes), the sites' outcomes
questioned from the callers' side (no abandoned without a hang-up, no blocked with free trunks,
the robots answered no fewer calls than the callers heard), calls answered, and a service gap of
the affected traffic under GAP_BOUND_S.

The gap bound, from the lease TTL (the slowest detector on the path):
- a site that dies stops renewing its lease; it renewed at most one renewal period
  (min(1 s, TTL/3)) before it died, so etcd expires the lease at most TTL after the death, and
  etcd's lessor checks expiries every 0.5 s; central's watch then sees the key go (milliseconds);
- from then on pre-routing sends the city's next caller to a live site; that caller arrives
  within 5 mean inter-arrival times with probability 1 - e^-5 (> 99 %), 5 / 2.0 calls/s = 2.5 s;
- and is answered there after a queue wait that the load keeps under 1 s (ring delay included).
  bound = TTL + 0.5 + 2.5 + 1.0 = 7 s with the simulated province's TTL of 3 s. A database outage
  and a partition of a site that keeps its own trunks and agents should cost far less: they are
  held to the same bound, which is what their callers are promised.
For the central leader's death the bound is the same: a new leader is elected when the dead one's
election lease expires (the same TTL), and meanwhile sites answer their own routing questions
"stay" and keep serving their own callers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tools.simulation.scenario import parse_scenario
from tools.simulation.simulate import SimulationResult, simulate

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

LEASE_TTL_S = 3  # tools/province/generate.py's default, which `vcc simulate` uses
RATE_PER_S = 2.0
GAP_BOUND_S = LEASE_TTL_S + 0.5 + 5 / RATE_PER_S + 1.0


def scenario(
    routing: dict[str, Any], events: list[dict[str, Any]], sites: int = 2, replicas: int = 1
) -> dict[str, Any]:
    ids = ["gz", "sz", "fs"][:sites]
    return {
        "seed": 21,
        "duration_s": 14,
        "warmup_s": 1,
        "handle_time": {"mean_s": 1.0, "distribution": "exponential"},
        "service_level_threshold_s": 1.0,
        "ring_delay_s": 0.1,
        "routing": routing,
        "central": {"database": "postgresql", "replicas": replicas},
        "sites": [
            {"id": s, "trunk_channels": 40, "agents": {"general": 4}, "arrival_rate_per_s": RATE_PER_S}
            for s in ids
        ],
        "events": events,
    }


async def run(tmp_path: Path, raw: dict[str, Any]) -> SimulationResult:
    return await simulate(parse_scenario(raw, "chaos"), tmp_path / "run")


def figures(report: Mapping[str, object], *keys: str) -> Any:
    value: Any = report
    for key in keys:
        value = value[key]
    return value


def assert_survived(result: SimulationResult) -> None:
    report = result.report
    assert figures(report, "totals", "lost_elsewhere") == 0, result.problems
    assert figures(report, "all_calls", "failed") == 0, result.problems
    reconciliation = figures(report, "reconciliation")
    assert reconciliation["missing"] == 0 and reconciliation["duplicated"] == 0, report[
        "reconciliation_problems"
    ]
    kept = figures(report, "invariants")
    for key in (
        "agents_with_two_calls",
        "calls_served_twice_at_once",
        "calls_with_two_final_records",
        "calls_without_final_record",
    ):
        assert kept[key] == 0, (key, kept["examples"])
    assert kept["agents_with_two_callers"] == 0, kept["examples"]
    assert kept["offered_balance"]["holds"], kept["offered_balance"]
    claims = figures(report, "site_claims")
    assert claims["abandoned_without_hang_up"] == 0 and claims["blocked_with_free_trunks"] == 0, claims
    assert claims["robots_answered_fewer"] == {}, claims
    assert figures(report, "all_calls", "answered") > 0
    for event in figures(report, "events"):
        assert not event["error"], event
        assert event["service_gap_s"] <= GAP_BOUND_S, event
    assert result.problems == [], result.problems


async def test_kill_a_site_under_load(tmp_path: Path) -> None:
    result = await run(
        tmp_path,
        scenario(
            {"mode": "isolated"},
            [
                {"at_s": 4, "action": "kill_site", "site": "sz"},
                {"at_s": 9, "action": "restart_site", "site": "sz"},
            ],
        ),
    )
    assert_survived(result)
    # sz's callers were served elsewhere while it was down (pre-routing), not only refused: the
    # exchange delivered some of them to gz, and gz's agents answered them.
    assert figures(result.report, "pre_routed").get("sz", 0) > 0, result.report["pre_routed"]
    assert figures(result.report, "pre_routed_answered").get("sz", 0) > 0, result.report["pre_routed"]
    # And none of them went to the dead city once central could know it was dead.
    assert figures(result.report, "pre_routed_to_dead_city") == 0


async def test_stop_the_database_under_load(tmp_path: Path) -> None:
    result = await run(
        tmp_path,
        scenario(
            {"mode": "overflow", "after_s": 0.5},
            [{"at_s": 4, "action": "stop_database"}, {"at_s": 10, "action": "start_database"}],
        ),
    )
    assert_survived(result)
    # Routing went on from memory: calls were answered while the database was down.
    assert figures(result.report, "events")[0]["service_gap_s"] < 6.0


async def test_partition_a_site_and_heal_it(tmp_path: Path) -> None:
    result = await run(
        tmp_path,
        scenario(
            {"mode": "pooled"},
            [
                {"at_s": 4, "action": "partition_site", "site": "gz"},
                {"at_s": 10, "action": "heal_site", "site": "gz"},
            ],
            sites=3,
        ),
    )
    assert_survived(result)
    # The cut site kept serving its own callers through the cut: its gap is an ordinary one.
    assert figures(result.report, "events")[0]["service_gap_s"] < LEASE_TTL_S


async def test_kill_the_central_leader_under_load(tmp_path: Path) -> None:
    result = await run(
        tmp_path,
        scenario(
            {"mode": "overflow", "after_s": 0.5},
            [{"at_s": 4, "action": "kill_central_leader"}],
            replicas=2,
        ),
    )
    assert_survived(result)
