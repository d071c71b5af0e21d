"""Real-time statistics from live site state and recent records (pure)."""

from __future__ import annotations

import pytest

from central.records import Outcome
from central.stats.intervals import DAY_S, INTERVAL_S, CallFacts, StatsPolicy, interval_start
from central.stats.realtime import SiteView, live_figures, snapshot
from vcc.v1 import site_admin_pb2

POLICY = StatsPolicy()
NOW = interval_start(1_700_000_000, DAY_S, POLICY.utc_offset_s) + 10 * 3600 + 300  # 10:05 local


def summary(site_id: str, waiting: int = 2, ready: int = 3, talking: int = 4) -> site_admin_pb2.SiteSummary:
    return site_admin_pb2.SiteSummary(
        site_id=site_id,
        name=site_id,
        agents_by_state={"READY": ready, "TALKING": talking, "WRAP_UP": 1, "NOT_READY": 2, "LOGGED_OUT": 5},
        calls_waiting=waiting,
        calls_in_progress=waiting + talking,
        resources=[
            site_admin_pb2.ResourceUsage(id="pstn", kind="trunk", busy=6, total=10, refused=3),
            site_admin_pb2.ResourceUsage(id="tie:sz", kind="tie", busy=1, total=4),
            site_admin_pb2.ResourceUsage(id="ivr", kind="ivr", busy=2, total=8),
        ],
        skill_groups=[
            site_admin_pb2.SkillGroupSummary(
                skill_group="general", calls_waiting=waiting, oldest_wait_s=12.34
            ),
            site_admin_pb2.SkillGroupSummary(skill_group="billing", calls_waiting=0, oldest_wait_s=0.0),
        ],
        outbox_pending=7,
    )


def answered(call_id: str, at: float, entry: str, served: str, wait: float) -> CallFacts:
    return CallFacts(
        call_id=call_id,
        entry_site_id=entry,
        served_site_id=served,
        skill_group="general",
        agent_code="0101",
        outcome=Outcome.ANSWERED,
        answered=True,
        arrived_at=at,
        wait_s=wait,
        talk_s=30,
        ended=True,
        transferred=False,
    )


def test_live_figures_of_a_summary() -> None:
    live = live_figures(summary("gz"))
    assert live["calls_waiting"] == 2
    assert live["longest_wait_s"] == 12.3
    assert live["agents_logged_in"] == 10  # everyone but LOGGED_OUT
    assert (live["agents_ready"], live["agents_busy"]) == (3, 5)  # TALKING 4 + WRAP_UP 1
    assert live["occupancy"] == pytest.approx(5 / 8)
    assert live["trunk_occupancy"] == pytest.approx(0.6)
    assert live["tie_occupancy"] == pytest.approx(0.25)
    assert live["trunks_refused"] == 3
    assert [g["skill_group"] for g in live["skill_groups"]] == ["general", "billing"]


def test_snapshot_of_the_province() -> None:
    views = [
        SiteView("gz", "Guangzhou", "up", 0.2, summary("gz", waiting=2)),
        SiteView("sz", "Shenzhen", "stale", 4.0, summary("sz", waiting=9)),
        SiteView("fs", "Foshan", "down", 30.0, summary("fs", waiting=5)),
    ]
    interval = interval_start(NOW, INTERVAL_S, POLICY.utc_offset_s)
    calls = [
        answered("x1", interval + 10, "gz", "gz", 5),  # this interval, in SL
        answered("x2", interval + 20, "gz", "sz", 50),  # this interval, overflow gz -> sz
        answered("x3", interval - 600, "gz", "gz", 5),  # earlier today
        answered("x4", NOW - DAY_S, "gz", "gz", 5),  # yesterday: not counted
    ]
    snap = snapshot(views, calls, POLICY, NOW, records_age_s=0.7)
    sites = {s["site_id"]: s for s in snap["sites"]}

    assert sites["gz"]["status"] == "up"
    assert sites["gz"]["live"]["calls_waiting"] == 2
    assert sites["sz"]["status"] == "stale"
    assert sites["sz"]["age_s"] == 4.0
    assert sites["sz"]["live"]["calls_waiting"] == 9  # shown, flagged stale with its age
    # A down site never shows its last figures.
    assert sites["fs"]["status"] == "down"
    assert sites["fs"]["live"] is None

    # Province live totals count the sites that are up.
    assert snap["province"]["live"]["calls_waiting"] == 2
    assert snap["province"]["live"]["sites_up"] == 1
    assert snap["province"]["live"]["sites_total"] == 3

    gz = sites["gz"]["records"]
    assert (gz["interval"]["offered"], gz["today"]["offered"]) == (2, 3)
    assert gz["interval"]["service_level"] == 0.5
    assert gz["interval"]["overflow_out"] == 1
    assert sites["sz"]["records"]["interval"]["overflow_in"] == 1
    assert sites["sz"]["skill_records"]["general"]["today"]["answered"] == 1
    assert snap["province"]["records"]["today"]["offered"] == 3
    assert snap["province"]["records"]["today"]["quality_index"] is not None
    assert snap["records_age_s"] == 0.7

    kinds = {(a["kind"], a["site_id"]) for a in snap["alerts"]}
    assert ("site_down", "fs") in kinds
    assert ("site_stale", "sz") in kinds
    assert ("sl_below_target", "gz") in kinds  # 50 % in this interval
    assert ("sl_below_target", "") in kinds


def open_call(call_id: str, entry: str) -> CallFacts:
    """Offered, not answered, not ended: its caller's city holds it."""
    return CallFacts(
        call_id=call_id,
        entry_site_id=entry,
        served_site_id="",
        skill_group="general",
        agent_code="",
        outcome=Outcome.UNSPECIFIED,
        answered=False,
        arrived_at=NOW - 60,
        wait_s=0.0,
        talk_s=0.0,
        ended=False,
        transferred=False,
    )


def test_calls_open_at_a_city_that_is_down_are_shown_as_such_never_given_an_outcome() -> None:
    down_since = NOW - 30
    views = [
        SiteView("gz", "广州", "down", None, None, down_since=down_since),
        SiteView("sz", "深圳", "up", 0.2, summary("sz")),
    ]
    calls = [
        open_call("c1", "gz"),
        open_call("c2", "gz"),
        open_call("c3", "sz"),
        answered("c4", NOW - 90, "gz", "gz", 3),
    ]
    snap = snapshot(views, calls, POLICY, NOW)
    gz, sz = snap["sites"]
    assert gz["open_at_down_site"] == {"calls": 2, "down_since": down_since}
    # sz is up: its open call is its own business, no mark.
    assert sz["open_at_down_site"] is None
    stranded = [a for a in snap["alerts"] if a["kind"] == "open_at_down_site"]
    assert stranded == [
        {"kind": "open_at_down_site", "site_id": "gz", "name": "广州", "value": 2, "since": down_since}
    ]
    # Still counted in progress, not failed or abandoned: central invents no outcome.
    assert gz["records"]["today"]["in_progress"] == 2 and gz["records"]["today"]["failed"] == 0
    # A down city with nothing open: no mark.
    quiet = snapshot(views, [answered("c4", NOW - 90, "gz", "gz", 3)], POLICY, NOW)
    assert quiet["sites"][0]["open_at_down_site"] is None
    assert not [a for a in quiet["alerts"] if a["kind"] == "open_at_down_site"]
