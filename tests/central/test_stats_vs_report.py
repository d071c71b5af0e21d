"""Central's statistics against the callers: a short real simulation (`tools.simulation.simulate.simulate`),
then the figures central's dashboard serves (`/api/live`, `/api/intervals`) are checked against
the report the callers' side made of the same calls."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import eventually
from tools.province.generate import DEMO_OPERATOR, DEMO_OPERATOR_PASSWORD
from tools.simulation.scenario import parse_scenario
from tools.simulation.simulate import SimulationResult, simulate
from tools.simulation.traffic import CallerView, load_journal
from vcc.https import client_context

pytestmark = pytest.mark.cluster

SITES = ("gz", "sz")
# Equal to central's default StatsPolicy.sl_threshold_s (checked below against /api/live's policy):
# both sides then judge every answered call against the same threshold.
SL_THRESHOLD_S = 20.0
# Figures are rounded to 10 ms by the API (asa_s to 2 decimals).
ROUNDING_S = 0.005 + 1e-9


def scenario() -> Any:
    # gz is over-loaded on a small trunk: some calls are blocked, some wait and overflow to sz,
    # impatient callers abandon. sz has spare agents. About 40 calls in 6 s.
    return parse_scenario(
        {
            "seed": 5,
            "duration_s": 6,
            "warmup_s": 0,
            "handle_time": {"mean_s": 1.0, "distribution": "exponential"},
            "patience": {"mean_s": 2.0, "distribution": "exponential"},
            "service_level_threshold_s": SL_THRESHOLD_S,
            "routing": {"mode": "overflow", "after_s": 0.5},
            "sites": [
                {"id": "gz", "trunk_channels": 4, "agents": {"general": 1}, "arrival_rate_per_s": 4.0},
                {"id": "sz", "trunk_channels": 20, "agents": {"general": 3}, "arrival_rate_per_s": 1.5},
            ],
        }
    )


def first(view: CallerView, kind: str) -> tuple[float, dict[str, str]] | None:
    return next(((at, d) for k, at, d in view.progress if k == kind), None)


def wait_bounds(view: CallerView) -> tuple[float, float]:
    """Where central's wait of an answered call must lie, from what its caller saw.

    Central's wait is answer - arrival, both stamped by the sites; the caller's (the report's) is
    receipt of `connected` - receipt of `queued`. All processes share this machine's clock, so the
    only gaps between the two are the IVR before `queued` (prompt and digit) and transport:
    - upper: the caller dialled before the site stamped the arrival and received `connected` after
      the answer was stamped, so central's wait <= connected - dial;
    - lower: the site stamped the arrival before `queued` reached the caller, and the answer when
      it sent `connected` (its own stamp on that message: `site_at`), so central's wait >=
      (queued→connected) - delivery of `connected`.
    """
    assert view.answered_at is not None
    connected = first(view, "connected")
    assert connected is not None
    site_at = connected[1].get("site_at")
    delivery = max(0.0, connected[0] - float(site_at)) if site_at else 0.0
    since = view.queued_at if view.queued_at is not None else view.offered_at
    return view.answered_at - since - delivery, view.answered_at - view.offered_at


def caller_figures(views: Sequence[CallerView], site_id: str | None) -> dict[str, Any]:
    mine = [v for v in views if site_id is None or v.entry_site_id == site_id]
    answered = [v for v in mine if v.outcome == "answered"]
    bounds = [wait_bounds(v) for v in answered]
    n = len(answered)
    return {
        "answered": n,
        "asa_low": sum(lo for lo, _ in bounds) / n if n else None,
        "asa_high": sum(hi for _, hi in bounds) / n if n else None,
        # Calls the two clocks' start points could put on either side of the threshold.
        "sl_ambiguous": sum(1 for lo, hi in bounds if lo <= SL_THRESHOLD_S < hi),
    }


def assert_agree(
    where: str,
    central: Mapping[str, Any],
    callers: Mapping[str, Any],
    bounds: Mapping[str, Any],
    overflow: tuple[int, int] | None = None,
) -> None:
    # Counts: exact. Central splits the abandons it sees before short_abandon_s apart (misdials);
    # the callers count every abandon.
    got = {
        "offered": central["offered"],
        "answered": central["answered"],
        "abandoned": central["abandoned"] + central["short_abandoned"],
        "blocked": central["blocked"],
    }
    want = {k: callers[k] for k in got}
    assert got == want, where
    assert (central["failed"], central["in_progress"]) == (0, 0), where
    if overflow is not None:  # (out, in): answered in another city than the one entered
        assert overflow == (callers["overflow_out"], callers["overflow_in"]), where
    # ASA: central's mean wait lies between the callers' bounds (see wait_bounds).
    if callers["answered"]:
        assert central["asa_s"] is not None, where
        assert bounds["asa_low"] - ROUNDING_S <= central["asa_s"] <= bounds["asa_high"] + ROUNDING_S, (
            where,
            central["asa_s"],
            bounds,
        )
    # Service level: the report's base is offered - blocked (every abandon counts against it);
    # central's answered within the threshold is the same count as the callers', give or take
    # the calls whose wait straddles the threshold between the two start points.
    base = central["offered"] - central["blocked"]
    if base > 0:
        central_in_sl = central["answered_in_sl"]
        caller_in_sl = round(callers["service_level"] * base)
        assert abs(central_in_sl - caller_in_sl) <= bounds["sl_ambiguous"], (
            where,
            central_in_sl,
            caller_in_sl,
        )


async def test_central_figures_agree_with_the_callers(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    async def read_dashboard(result: SimulationResult) -> None:
        """While the cluster still runs, every outbox drained: central's figures from its API."""
        url = result.report["dashboard_url"]
        assert isinstance(url, str)
        drained_at = time.time()
        window = result.report["window"]
        assert isinstance(window, Mapping)
        offset = 8 * 3600
        date = dt.datetime.fromtimestamp(float(window["traffic_start"]) + offset, dt.UTC).date()
        ca = result.report["web_ca_file"]
        assert url.startswith("https://") and isinstance(ca, str)
        async with httpx.AsyncClient(base_url=url, timeout=10, verify=client_context(ca)) as http:
            login = {"user": DEMO_OPERATOR, "password": DEMO_OPERATOR_PASSWORD}
            assert (await http.post("/api/login", json=login)).status_code == 200

            async def fresh_live() -> dict[str, Any] | None:
                # The snapshot's records are cached a moment: one read after the drain.
                live = (await http.get("/api/live")).json()
                read_at = live["now"] - (live["records_age_s"] or 0.0)
                return live if read_at >= drained_at else None

            seen["live"] = await eventually(fresh_live, timeout_s=20, what="a snapshot read after the drain")
            # Daily rows (two days: a run across local midnight stays whole).
            reply = await http.get(
                "/api/intervals",
                params=[
                    ("date", date.isoformat()),
                    ("days", "2"),
                    ("length", "86400"),
                    ("level", "province"),
                    ("level", "entry_site"),
                    ("level", "served_site"),
                ],
            )
            assert reply.status_code == 200, reply.text
            seen["rows"] = reply.json()["rows"]

    result = await simulate(scenario(), tmp_path / "run", before_stop=read_dashboard)
    assert result.clean, result.problems
    report = result.report
    views = [v for s in SITES for v in load_journal(Path(str(report["run_dir"])) / f"calls-{s}.jsonl")]
    totals = report["totals"]
    assert isinstance(totals, Mapping) and totals["offered"] == len(views) > 20
    # The scenario does what it is for: every kind of outcome shows up.
    assert totals["answered"] and totals["blocked"] and totals["abandoned"] and totals["overflow_out"]
    sites_report = report["sites"]
    assert isinstance(sites_report, Mapping)

    live = seen["live"]
    assert live["policy"]["sl_threshold_s"] == SL_THRESHOLD_S
    rows = seen["rows"]

    def summed(level: str, key: str) -> dict[str, Any]:
        """One day's row (or two, summed; ASA weighted by answered calls)."""
        mine = [r for r in rows if r["level"] == level and r["key"] == key]
        assert mine, (level, key)
        out = {k: sum(r[k] for r in mine) for k in mine[0] if isinstance(mine[0][k], int) and k != "length_s"}
        answered = out["answered"]
        out["asa_s"] = sum((r["asa_s"] or 0.0) * r["answered"] for r in mine) / answered if answered else None
        return out

    # Each city, where its calls entered (overflow in: where they were served).
    sites_live = {s["site_id"]: s for s in live["sites"]}
    same_day = live["day_start"] <= float(report["window"]["traffic_start"])  # type: ignore[index]
    overflows = []
    for site_id in SITES:
        callers = sites_report[site_id]
        bounds = caller_figures(views, site_id)
        overflow = (
            summed("entry_site", site_id)["overflow_out"],
            summed("served_site", site_id)["overflow_in"],
        )
        overflows.append(overflow)
        assert_agree(f"intervals: {site_id}", summed("entry_site", site_id), callers, bounds, overflow)
        if same_day:
            today = sites_live[site_id]["records"]["today"]
            assert_agree(
                f"live: {site_id}", today, callers, bounds, (today["overflow_out"], today["overflow_in"])
            )
            assert sites_live[site_id]["status"] == "up"
    # The province (which counts no overflow of its own: nothing leaves it; its cities' do).
    everyone = caller_figures(views, None)
    province_overflow = (sum(o for o, _ in overflows), sum(i for _, i in overflows))
    assert_agree("intervals: province", summed("province", ""), totals, everyone, province_overflow)
    if same_day:
        assert_agree("live: province", live["province"]["records"]["today"], totals, everyone)
