"""The report and the reconciliation, from hand-made caller views and call records."""

from __future__ import annotations

import json
import math

import pytest

from tools.simulation.report import (
    build_report,
    percentiles_ms,
    reconcile,
    render_table,
    site_figures,
    waited,
)
from tools.simulation.traffic import CallerView
from vcc import rpc
from vcc.v1 import central_pb2, common_pb2

START = 1000.0  # traffic start; calls from 1010 on count (warm-up 10 s), over 100 s


def view(
    call_id: str,
    site: str,
    offered: float,
    outcome: str,
    *,
    queued: float | None = None,
    queued_site_at: float | None = None,
    rings: tuple[tuple[float, str, float | None], ...] = (),  # (receipt, agent, site_at)
    connected: float | None = None,
    served: str = "",
) -> CallerView:
    progress: list[tuple[str, float, dict[str, str]]] = []
    if call_id and outcome != "blocked":
        progress.append(("accepted", offered, {"site_id": site}))
    if queued is not None:
        details = {"skill_group": "general", "position": "1"}
        if queued_site_at is not None:
            details["site_at"] = f"{queued_site_at:.6f}"
        progress.append(("queued", queued, details))
    for at, agent, site_at in rings:
        details = {"site_id": served or site, "agent_code": agent}
        if site_at is not None:
            details["site_at"] = f"{site_at:.6f}"
        progress.append(("ringing", at, details))
    agent_code = rings[-1][1] if connected is not None else ""
    if connected is not None:
        progress.append(("connected", connected, {"site_id": served, "agent_code": agent_code}))
    ended = (connected or queued or offered) + 1.0
    if outcome != "lost":
        progress.append(("ended", ended, {"outcome": outcome}))
    return CallerView(
        key=f"k-{call_id or offered}",
        entry_site_id=site,
        call_id=call_id,
        offered_at=offered,
        progress=progress,
        outcome=outcome,
        queued_at=queued,
        answered_at=connected,
        ended_at=ended,
        agent_code=agent_code,
        served_site_id=served if connected is not None else "",
        skill_group="general" if queued is not None else "",
    )


VIEWS = [
    # gz, in the window
    view(
        "a1",
        "gz",
        1011.0,
        "answered",
        queued=1011.0,
        queued_site_at=1011.0,
        rings=((1011.0005, "0101", 1011.0002),),
        connected=1011.2,
        served="gz",
    ),
    view(
        "a2",
        "gz",
        1020.0,
        "answered",
        queued=1020.0,
        queued_site_at=1020.0,
        rings=((1021.0, "0201", 1021.0),),
        connected=1021.1,
        served="sz",
    ),
    view("a3", "gz", 1030.0, "abandoned", queued=1030.0),
    view("a4", "gz", 1031.0, "abandoned"),  # hung up in the IVR: never waited for an agent
    view("a5", "gz", 1040.0, "blocked"),
    view("a6", "gz", 1050.0, "lost", queued=1050.0),
    view("a7", "gz", 1060.0, "failed", queued=1060.0),
    # warm-up: out of the window
    view(
        "w1",
        "gz",
        1005.0,
        "answered",
        queued=1005.0,
        rings=((1005.1, "0101", None),),
        connected=1005.2,
        served="gz",
    ),
    view("", "gz", 1001.0, "lost"),
    # sz, in the window; no site timestamps: receipt times decide whether it waited
    view(
        "b1",
        "sz",
        1050.0,
        "answered",
        queued=1050.0,
        rings=((1050.0005, "0201", None),),
        connected=1050.3,
        served="sz",
    ),
    view(
        "b2",
        "sz",
        1109.9,
        "answered",
        queued=1109.9,
        rings=((1109.902, "0202", None),),
        connected=1110.35,
        served="sz",
    ),
    # offered after duration_s (slices): still counted, it rang 100 ms after queued
    view(
        "late",
        "sz",
        1110.0,
        "answered",
        queued=1110.0,
        rings=((1110.1, "0201", None),),
        connected=1110.2,
        served="sz",
    ),
]


def build(records: list[central_pb2.CallRecord] | None = None) -> dict[str, object]:
    return build_report(
        VIEWS,
        service_level_threshold_s=0.5,
        warmup_s=10.0,
        traffic_start=START,
        duration_s=100.0,
        agents_per_site={"gz": 2, "sz": 1, "fs": 0},
        mean_handle_s=2.0,
        central_records=records,
        events=[{"at_s": 30.0, "action": "kill_site", "target": "sz", "service_gap_s": 1.5, "calls_lost": 0}],
    )


def test_counts_per_site_and_totals() -> None:
    report = build()
    gz, sz, fs = (site_figures(report, s) for s in ("gz", "sz", "fs"))
    assert {
        k: gz[k]
        for k in (
            "offered",
            "answered",
            "abandoned",
            "blocked",
            "lost_on_failed_site",
            "lost_elsewhere",
            "overflow_out",
            "overflow_in",
        )
    } == {
        "offered": 7,
        "answered": 2,
        "abandoned": 2,
        "blocked": 1,
        "lost_on_failed_site": 0,
        "lost_elsewhere": 2,
        "overflow_out": 1,
        "overflow_in": 0,
    }
    assert (sz["offered"], sz["answered"], sz["overflow_in"], sz["overflow_out"]) == (3, 3, 1, 0)
    assert (fs["offered"], fs["p_wait"], fs["asa_s"], fs["service_level"]) == (0, None, None, None)
    totals = report["totals"]
    assert isinstance(totals, dict)
    assert {
        k: totals[k]
        for k in (
            "offered",
            "answered",
            "abandoned",
            "blocked",
            "lost_elsewhere",
            "overflow_out",
            "overflow_in",
        )
    } == {
        "offered": 10,
        "answered": 5,
        "abandoned": 2,
        "blocked": 1,
        "lost_elsewhere": 2,
        "overflow_out": 1,
        "overflow_in": 1,
    }
    assert report["all_calls"] == {
        "offered": 12,
        "answered": 6,
        "abandoned": 2,
        "blocked": 1,
        "failed": 1,
        "lost": 2,
    }
    assert report["transfers"] == {"attempted": 0, "completed": 0, "cross_site": 0, "failed": 0}
    assert report["events"] == [
        {"at_s": 30.0, "action": "kill_site", "target": "sz", "service_gap_s": 1.5, "calls_lost": 0}
    ]


def test_waiting_speed_of_answer_and_service_level() -> None:
    report = build()
    gz, sz = site_figures(report, "gz"), site_figures(report, "sz")
    totals = report["totals"]
    assert isinstance(totals, dict)
    # gz: a2 (rang 1 s after queued) and a3 (never rang) waited; a1 rang 0.2 ms later; a4 never queued.
    assert gz["p_wait"] == pytest.approx(2 / 4)
    assert gz["asa_s"] == pytest.approx((0.2 + 1.1) / 2)
    assert gz["service_level"] == pytest.approx(1 / 6)  # a1 within 0.5 s, over 7 offered - 1 blocked
    # sz: b1 rang 0.5 ms after queued (not waited), b2 2 ms and late 100 ms (waited).
    assert sz["p_wait"] == pytest.approx(2 / 3)
    assert sz["asa_s"] == pytest.approx((0.3 + 0.45 + 0.2) / 3)
    assert sz["service_level"] == pytest.approx(1.0)
    assert totals["p_wait"] == pytest.approx(4 / 7)
    assert totals["asa_s"] == pytest.approx((0.2 + 1.1 + 0.3 + 0.45 + 0.2) / 5)
    assert totals["service_level"] == pytest.approx(4 / 9)


def test_site_timestamps_decide_waiting_over_receipt_times() -> None:
    # Received 5 ms apart (transport jitter), stamped 0.1 ms apart at the site: rang at once.
    quick = view(
        "x",
        "gz",
        1.0,
        "answered",
        queued=1.0,
        queued_site_at=1.0,
        rings=((1.005, "0101", 1.0001),),
        connected=1.1,
        served="gz",
    )
    assert not waited(quick)
    slow = view(
        "y",
        "gz",
        1.0,
        "answered",
        queued=1.0,
        queued_site_at=1.0,
        rings=((1.0002, "0101", 1.01),),
        connected=1.1,
        served="gz",
    )
    assert waited(slow)


def test_routing_latency_percentiles() -> None:
    latency = build()["routing_latency_ms"]
    assert isinstance(latency, dict)
    # a1 0.5 ms, a2 1000 ms, b1 0.5 ms, b2 2 ms, late 100 ms (receipt times, queued -> first ringing)
    assert latency["count"] == 5
    assert latency["p50"] == pytest.approx(2.0, abs=1e-3)
    assert latency["p90"] == pytest.approx(1000.0, abs=1e-3)
    assert latency["p99"] == pytest.approx(1000.0, abs=1e-3)
    assert latency["max"] == pytest.approx(1000.0, abs=1e-3)
    assert percentiles_ms([]) == {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}
    ten = percentiles_ms([i / 1000 for i in range(1, 11)])
    assert (ten["p50"], ten["p90"], ten["p99"], ten["max"]) == pytest.approx((5.0, 9.0, 10.0, 10.0))


def test_erlang_c_for_the_same_offered_load() -> None:
    erlang = build()["erlang_c"]
    assert isinstance(erlang, dict)
    sz = erlang["sites"]["sz"]
    # sz: 3 calls in 100 s, 2 s each, 1 agent: M/M/1 with rho = 0.06.
    rho = 0.06
    assert sz["arrival_rate_per_s"] == pytest.approx(0.03)
    assert sz["p_wait"] == pytest.approx(rho)
    assert sz["asa_s"] == pytest.approx(rho / (1 - rho) * 2.0)
    assert sz["service_level"] == pytest.approx(1 - rho * math.exp(-(1 - rho) * 0.5 / 2.0))
    assert sz["occupancy"] == pytest.approx(rho)
    gz = erlang["sites"]["gz"]
    # gz: 6 calls reached the agents (7 - 1 blocked), A = 0.12 Erl, N = 2: C = A^2 / (A^2 + (2-A)(1+A)).
    a = 0.12
    c = a * a / (a * a + (2 - a) * (1 + a))
    assert gz["p_wait"] == pytest.approx(c)
    assert gz["asa_s"] == pytest.approx(c * 2.0 / (2 - a))
    assert erlang["sites"]["fs"] is None  # no agents
    pooled = erlang["pooled"]
    assert (pooled["agents"], pooled["arrival_rate_per_s"]) == (3, pytest.approx(0.09))


def test_unstable_load_has_no_finite_asa_and_report_is_strict_json() -> None:
    report = build_report(
        [
            view(
                "u",
                "gz",
                10.5,
                "answered",
                queued=10.5,
                rings=((11.1, "0101", None),),
                connected=11.2,
                served="gz",
            )
        ],
        service_level_threshold_s=0.5,
        warmup_s=10.0,
        traffic_start=0.0,
        duration_s=1.0,
        agents_per_site={"gz": 1},
        mean_handle_s=5.0,
        central_records=None,
    )
    erlang = report["erlang_c"]
    assert isinstance(erlang, dict)
    assert erlang["sites"]["gz"]["asa_s"] is None
    assert report["reconciliation"] is None
    json.dumps(report, allow_nan=False)


def record(
    call_id: str,
    outcome: common_pb2.CallOutcome.ValueType,
    *,
    agent: str = "",
    served: str = "",
    rings: tuple[str, ...] = (),
    ended: bool = True,
) -> central_pb2.CallRecord:
    events = [
        common_pb2.CallEvent(
            call_id=call_id,
            site_id=served or "gz",
            seq=i + 1,
            agent_code=code,
            kind=common_pb2.CALL_EVENT_KIND_RINGING,
            at=rpc.timestamp(100.0 + i),
        )
        for i, code in enumerate(rings)
    ]
    if ended and rings:
        events.append(
            common_pb2.CallEvent(
                call_id=call_id,
                site_id=served or "gz",
                seq=len(events) + 1,
                kind=common_pb2.CALL_EVENT_KIND_ENDED,
                outcome=outcome,
                at=rpc.timestamp(200.0),
            )
        )
    return central_pb2.CallRecord(
        call_id=call_id,
        outcome=outcome if ended else common_pb2.CALL_OUTCOME_UNSPECIFIED,
        state=common_pb2.CALL_STATE_ENDED if ended else common_pb2.CALL_STATE_TALKING,
        agent_code=agent,
        served_site_id=served,
        events=events,
    )


ANSWERED, ABANDONED = common_pb2.CALL_OUTCOME_ANSWERED, common_pb2.CALL_OUTCOME_ABANDONED
RECORDS = [
    record("a1", ANSWERED, agent="0101", served="gz", rings=("0101",)),
    record("a1", ANSWERED, agent="0101", served="gz", rings=("0101",)),  # duplicate
    record("a2", ANSWERED, agent="0201", served="sz", rings=("0201",)),
    record("a3", ABANDONED),  # without events: only outcome checked
    # a4: no record -> missing
    record("a5", common_pb2.CALL_OUTCOME_BLOCKED),
    # a6: lost by the caller -> not held against central
    record("a7", common_pb2.CALL_OUTCOME_FAILED, ended=False),  # not ended -> missing
    record("w1", ANSWERED, agent="0101", served="gz", rings=("0101",)),
    record("b1", ABANDONED),  # outcome differs -> mismatched
    record("b2", ANSWERED, agent="0202", served="sz", rings=("0201", "0202")),  # rang differs -> mismatched
    record("late", ANSWERED, agent="0299", served="sz"),  # agent differs -> mismatched
    record("zz", ABANDONED),  # no caller saw it
]


def test_reconciliation_counts() -> None:
    counts = reconcile(VIEWS, RECORDS)
    assert counts == {
        "caller_calls": 11,
        "central_records": 11,
        "missing": 2,
        "duplicated": 1,
        "mismatched": 3,
        "without_call_id": 1,
        "unknown_to_callers": 1,
        "duplicated_records": 1,
        "duplicated_final_events": 0,
        "duplicated_answered_at_once": 0,
        "duplicated_events_twice": 0,
    }
    report = build(RECORDS)
    assert report["reconciliation"] == counts
    problems = report["reconciliation_problems"]
    assert isinstance(problems, list)
    assert {p["call_id"] for p in problems} == {"a4", "a7", "b1", "b2", "late", "a1"}


def test_answering_site_and_ended_event_are_compared() -> None:
    a1 = VIEWS[0]
    wrong_site = record("a1", ANSWERED, agent="0101", served="sz", rings=("0101",))
    assert reconcile([a1], [wrong_site])["mismatched"] == 1
    wrong_end = record("a1", ANSWERED, agent="0101", served="gz", rings=("0101",))
    wrong_end.events[-1].outcome = ABANDONED
    assert reconcile([a1], [wrong_end])["mismatched"] == 1
    assert (
        reconcile([a1], [record("a1", ANSWERED, agent="0101", served="gz", rings=("0101",))])["mismatched"]
        == 0
    )


def test_render_table_shows_sites_figures_and_reconciliation() -> None:
    text = render_table(build(RECORDS))
    for expected in ("gz", "sz", "fs", "16.7%", "50.0%", "routing latency", "missing 2", "kill_site"):
        assert expected in text, expected
    assert "not done" in render_table(build())
