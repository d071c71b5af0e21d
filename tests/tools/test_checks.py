"""Every checker fed a broken history must report the break (STYLE 14): the invariants, the
reconciliation's duplicates, the fault attribution, the service gaps, the sites' outcomes
questioned from the callers' side, the verdict and the soak's summary.

Pure and fast: fake CallerViews and CallRecord protos, no cluster. Each test first shows the
checker quiet on a sound history, then breaks one thing and sees exactly that reported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from tools.chaos.soak import Cycle, summarize
from tools.simulation import invariants
from tools.simulation.faults import (
    RECONNECT_GRACE_S,
    classify_faults,
    event_rows,
    misrouted_to_dead_city,
    question_outcomes,
    verdict,
)
from tools.simulation.report import duplicates, reconcile
from tools.simulation.runner import AppliedEvent, Outage
from tools.simulation.scenario import EventSpec
from tools.simulation.simulate import model_problems
from tools.simulation.traffic import CallerView
from vcc import rpc
from vcc.v1 import central_pb2, common_pb2

K = common_pb2
NOTICE_S = 4.0  # central_notice_s of a 3 s lease


# -- building histories -----------------------------------------------------------------------------


def caller(
    call_id: str,
    outcome: str = "answered",
    *,
    site: str = "gz",
    agent: str = "0101",
    offered: float = 100.0,
    talk: tuple[float, float] = (101.0, 103.0),
    hung_up: bool = False,
    home: str = "",
    reason: str = "",
) -> CallerView:
    """What one caller heard; `talk` is (connected, ended) for an answered call, by the site's stamps."""

    def stamp(at: float) -> dict[str, str]:
        return {"site_at": f"{at:.6f}"}

    progress: list[tuple[str, float, dict[str, str]]] = []
    answered_at = ended_at = None
    if call_id and outcome != "blocked":
        progress.append(("accepted", offered, {"site_id": site, **stamp(offered)}))
    if outcome == "answered":
        answered_at, ended_at = talk
        progress.append(("connected", talk[0], {"site_id": site, "agent_code": agent, **stamp(talk[0])}))
    else:
        ended_at = offered + 1.0
    if hung_up:
        progress.append(("hang_up", ended_at - 0.01, {"why": "patience"}))
    if outcome != "lost":
        progress.append(("ended", ended_at, {"outcome": outcome, **stamp(ended_at)}))
    return CallerView(
        key=f"k-{call_id or offered}",
        entry_site_id=site,
        call_id=call_id,
        offered_at=offered,
        progress=progress,
        outcome=outcome,
        queued_at=None,
        answered_at=answered_at,
        ended_at=ended_at,
        agent_code=agent if outcome == "answered" else "",
        served_site_id=site if outcome == "answered" else "",
        skill_group="general",
        reason=reason,
        home_site_id=home or site,
    )


def event(
    call_id: str, kind: int, at: float, *, site: str = "gz", seq: int = 0, agent: str = "", outcome: int = 0
) -> common_pb2.CallEvent:
    return common_pb2.CallEvent(
        call_id=call_id,
        site_id=site,
        seq=seq,
        kind=kind,  # type: ignore[arg-type]
        at=rpc.timestamp(at),
        agent_code=agent,
        outcome=outcome,  # type: ignore[arg-type]
    )


def record(
    view: CallerView, *, outcome: int | None = None, extra: Sequence[common_pb2.CallEvent] = ()
) -> central_pb2.CallRecord:
    """Central's record of what the caller heard (its outcome unless `outcome` says otherwise)."""
    code = outcome if outcome is not None else _CODES[view.outcome]
    events = []
    if view.outcome == "answered":
        assert view.answered_at is not None and view.ended_at is not None
        events += [
            event(view.call_id, K.CALL_EVENT_KIND_ANSWERED, view.answered_at, agent=view.agent_code),
            event(view.call_id, K.CALL_EVENT_KIND_AGENT_HUNG_UP, view.ended_at, agent=view.agent_code),
        ]
    assert view.ended_at is not None
    events.append(event(view.call_id, K.CALL_EVENT_KIND_ENDED, view.ended_at, outcome=code))
    events += extra
    for seq, each in enumerate(events, start=1):
        each.seq = each.seq or seq
    return central_pb2.CallRecord(
        call_id=view.call_id,
        entry_site_id=view.entry_site_id,
        state=K.CALL_STATE_ENDED,
        outcome=code,  # type: ignore[arg-type]
        agent_code=view.agent_code,
        served_site_id=view.served_site_id,
        events=events,
    )


_CODES = {
    "answered": K.CALL_OUTCOME_ANSWERED,
    "abandoned": K.CALL_OUTCOME_ABANDONED,
    "blocked": K.CALL_OUTCOME_BLOCKED,
    "failed": K.CALL_OUTCOME_FAILED,
}


def sound() -> list[CallerView]:
    """Two agents, three answered calls (one agent twice, one after the other), one abandoned."""
    return [
        caller("c1", agent="0101", talk=(101.0, 103.0)),
        caller("c2", agent="0102", talk=(101.5, 104.0)),
        caller("c3", agent="0101", offered=102.0, talk=(103.5, 106.0)),
        caller("c4", "abandoned", offered=102.5, hung_up=True),
    ]


# -- the invariants --------------------------------------------------------------------------------


def test_invariants_hold_on_a_sound_history() -> None:
    views = sound()
    kept = invariants.check(views, [record(v) for v in views])
    assert invariants.broken(kept) == []
    assert isinstance(kept["offered_balance"], dict) and kept["offered_balance"]["holds"]


def test_a_call_served_twice_at_once_is_reported() -> None:
    views = sound()
    records = [record(v) for v in views]
    # c1 answered at sz as well, while gz's agent still had it (both sides of a cut).
    records[0].events.extend(
        [
            event("c1", K.CALL_EVENT_KIND_ANSWERED, 101.2, site="sz", seq=1, agent="0201"),
            event("c1", K.CALL_EVENT_KIND_AGENT_HUNG_UP, 102.5, site="sz", seq=2, agent="0201"),
        ]
    )
    kept = invariants.check(views, records)
    assert kept["calls_served_twice_at_once"] == 1
    assert any("calls_served_twice_at_once" in p for p in invariants.broken(kept))


def test_an_agent_with_two_calls_is_reported_from_central_and_from_the_callers() -> None:
    views = sound()
    # c3 is put through to 0101 while 0101 still talks to c1.
    views[2] = caller("c3", agent="0101", offered=101.0, talk=(102.0, 105.0))
    kept = invariants.check(views, [record(v) for v in views])
    assert kept["agents_with_two_calls"] == 1
    assert kept["agents_with_two_callers"] == 1
    broken = invariants.broken(kept)
    assert any("agents_with_two_calls" in p for p in broken)
    assert any("agents_with_two_callers" in p for p in broken)


def test_a_lost_record_is_reported() -> None:
    views = sound()
    records = [record(v) for v in views if v.call_id != "c2"]
    kept = invariants.check(views, records)
    assert kept["calls_without_final_record"] == 1
    balance = kept["offered_balance"]
    assert isinstance(balance, dict) and not balance["holds"]
    assert balance["central"]["none"] == 1  # type: ignore[index]


def test_a_duplicated_final_event_is_reported() -> None:
    views = sound()
    records = [record(v) for v in views]
    records[1].events.append(
        event("c2", K.CALL_EVENT_KIND_ENDED, 104.5, seq=9, outcome=K.CALL_OUTCOME_ANSWERED)
    )
    kept = invariants.check(views, records)
    assert kept["calls_with_two_final_records"] == 1


def test_the_balance_holds_callers_against_central_not_against_themselves() -> None:
    views = sound()
    # Central says abandoned where the caller talked to an agent: the counts differ.
    records = [record(v) for v in views]
    records[0] = record(views[0], outcome=K.CALL_OUTCOME_ABANDONED)
    balance = invariants.offered_balance(views, records)
    assert not balance["holds"]
    assert balance["callers"]["answered"] == 3 and balance["central"]["answered"] == 2  # type: ignore[index]
    # A record of a call that no caller placed.
    phantom = caller("ghost")
    balance = invariants.offered_balance(views, [*(record(v) for v in views), record(phantom)])
    assert not balance["holds"] and balance["central_records_no_caller_placed"] == 1
    # In the middle of a run (the soak's checks) a call that ended after the cut-off may have a
    # caller still on the line; one that ended before it is still a phantom.
    both = [*(record(v) for v in views), record(phantom)]
    assert invariants.offered_balance(views, both, ended_before=102.0)["holds"]  # ghost ended at 103
    assert not invariants.offered_balance(views, both, ended_before=104.0)["holds"]


def target_died_mid_call(reanswered_at: float) -> central_pb2.CallRecord:
    """gz's caller answered by sz's 0201 at 101; sz dies, gz takes the caller back (RETURNED at
    102) and its own 0101 answers at `reanswered_at`. sz journals nothing more: it is dead."""
    events = [
        event("c9", K.CALL_EVENT_KIND_ARRIVED, 100.0, seq=1),
        event("c9", K.CALL_EVENT_KIND_ROUTED, 100.5, seq=2),
        event("c9", K.CALL_EVENT_KIND_RINGING, 100.6, site="sz", seq=1, agent="0201"),
        event("c9", K.CALL_EVENT_KIND_ANSWERED, 101.0, site="sz", seq=2, agent="0201"),
        event("c9", K.CALL_EVENT_KIND_RETURNED, 102.0, seq=3),
        event("c9", K.CALL_EVENT_KIND_ANSWERED, reanswered_at, seq=4, agent="0101"),
        event("c9", K.CALL_EVENT_KIND_AGENT_HUNG_UP, 105.0, seq=5, agent="0101"),
        event("c9", K.CALL_EVENT_KIND_ENDED, 105.0, seq=6, outcome=K.CALL_OUTCOME_ANSWERED),
    ]
    events[1].data["target"] = "sz"
    events[4].data.update({"target": "sz", "reason": "peer-lost"})
    return central_pb2.CallRecord(
        call_id="c9",
        entry_site_id="gz",
        state=K.CALL_STATE_ENDED,
        outcome=K.CALL_OUTCOME_ANSWERED,
        events=events,
    )


def test_a_dead_targets_answer_ends_where_its_origin_took_the_caller_back() -> None:
    sound_record = target_died_mid_call(reanswered_at=103.0)
    intervals, unclosed = invariants.answered_intervals(sound_record)
    assert sorted(intervals) == [("gz", "0101", 103.0, 105.0), ("sz", "0201", 101.0, 102.0)]
    assert unclosed == 0
    assert invariants.check([], [sound_record])["calls_served_twice_at_once"] == 0
    # Broken: gz's agent answered while sz's agent still had the caller (before gz took it back).
    # (Before, sz's answer had no interval at all and this went unseen.)
    broken = invariants.check([], [target_died_mid_call(reanswered_at=101.5)])
    assert broken["calls_served_twice_at_once"] == 1
    # Nobody took it back, but the call ended: the call's end closes the far answer.
    no_return = target_died_mid_call(reanswered_at=103.0)
    del no_return.events[4:7]
    intervals, unclosed = invariants.answered_intervals(no_return)
    assert intervals == [("sz", "0201", 101.0, 105.0)] and unclosed == 0
    # Neither a return nor an end: still counted as never closed (a diagnostic).
    del no_return.events[-1]
    assert invariants.answered_intervals(no_return) == ([], 1)


def test_a_lost_citys_call_closed_by_central_has_one_final_event_despite_the_citys_late_end() -> None:
    """Central's SITE_LOST closure is final; gz's end from its restart is kept and ends nothing."""
    closure = event(
        "c8", K.CALL_EVENT_KIND_ENDED, 101.0, site="@central", seq=1, outcome=K.CALL_OUTCOME_SITE_LOST
    )
    late = event("c8", K.CALL_EVENT_KIND_ENDED, 900.0, seq=4)
    base = [
        event("c8", K.CALL_EVENT_KIND_ARRIVED, 100.0, seq=1),
        event("c8", K.CALL_EVENT_KIND_ROUTED, 100.5, seq=2),
    ]
    closed = central_pb2.CallRecord(
        call_id="c8",
        state=K.CALL_STATE_ENDED,
        outcome=K.CALL_OUTCOME_SITE_LOST,
        events=[*base, closure, late],
    )
    assert invariants.check([], [closed])["calls_with_two_final_records"] == 0
    # Broken: the site ended it twice (no closure): two final events.
    twice = central_pb2.CallRecord(
        call_id="c8",
        state=K.CALL_STATE_ENDED,
        events=[*base, event("c8", K.CALL_EVENT_KIND_ENDED, 101.0, seq=3), late],
    )
    assert invariants.check([], [twice])["calls_with_two_final_records"] == 1
    # A site's own SITE_LOST is no closure (only central writes one): still two.
    forged = event("c8", K.CALL_EVENT_KIND_ENDED, 101.0, seq=3, outcome=K.CALL_OUTCOME_SITE_LOST)
    assert (
        invariants.check([], [central_pb2.CallRecord(call_id="c8", events=[*base, forged, late])])[
            "calls_with_two_final_records"
        ]
        == 1
    )


# -- duplicates in the reconciliation ----------------------------------------------------------------


def test_no_duplicate_in_a_sound_history_not_even_a_conference() -> None:
    views = sound()
    records = [record(v) for v in views]
    # A consult: 0101 holds c1 and a colleague answers it too; two agents at once, rightly.
    records[0].events.extend(
        [
            event("c1", K.CALL_EVENT_KIND_HELD, 101.5, seq=10, agent="0101"),
            event("c1", K.CALL_EVENT_KIND_ANSWERED, 101.6, seq=11, agent="0102"),
        ]
    )
    assert reconcile(views, records)["duplicated"] == 0


@pytest.mark.parametrize("kind", ["records", "final_events", "answered_at_once", "events_twice"], ids=str)
def test_each_kind_of_duplicate_is_counted(kind: str) -> None:
    views = sound()
    records = [record(v) for v in views]
    c1 = records[0]
    if kind == "records":
        records.append(record(views[0]))
    elif kind == "final_events":
        c1.events.append(event("c1", K.CALL_EVENT_KIND_ENDED, 103.2, seq=10, outcome=K.CALL_OUTCOME_ANSWERED))
    elif kind == "answered_at_once":
        c1.events.append(event("c1", K.CALL_EVENT_KIND_ANSWERED, 102.0, seq=10, agent="0102"))
    else:  # the agent's hang-up shipped again under a new sequence number
        again = common_pb2.CallEvent()
        again.CopyFrom(c1.events[1])
        again.seq = 10
        c1.events.append(again)
    assert duplicates(records)[kind] == {"c1"}
    counts = reconcile(views, records)
    assert counts["duplicated"] == 1 and counts[f"duplicated_{kind}"] == 1


# -- fault attribution -------------------------------------------------------------------------------


KILL = Outage("sz", began=200.0, gone=200.5, up=210.0, restarting=209.0)


def lost(
    key: str,
    offered: float,
    *,
    site: str = "sz",
    call_id: str = "",
    broke: float | None = None,
    home: str = "",
) -> CallerView:
    view = caller(call_id, "lost", site=site, offered=offered, home=home)
    return dataclasses.replace(view, key=key, ended_at=broke if broke is not None else offered + 0.01)


def test_a_call_on_the_killed_site_is_lost_on_the_failed_site() -> None:
    views = [lost("on", 199.0, call_id="x1", broke=200.6)]
    on_failed, refused = classify_faults(views, [KILL], 300.0, central_notice_s=NOTICE_S)
    assert (on_failed, refused) == ({"on"}, set())


def test_refusal_is_excused_only_while_the_caller_could_not_avoid_it() -> None:
    views = [
        lost("before-notice", 202.0),  # central could not know yet: nobody could route around it
        lost("after-notice", 206.0),  # central knew since 204.5: it should have been sent elsewhere
        lost("restarting", 209.5),  # registered again, central routes to it, the trunk reconnects
        lost("reconnecting", 210.0 + RECONNECT_GRACE_S / 2),  # back, the trunk still reconnecting
        lost("long-after", 210.0 + RECONNECT_GRACE_S + 1.0),  # back and reachable: no excuse
        lost("other-city", 202.0, site="gz"),  # gz never failed
    ]
    on_failed, refused = classify_faults(views, [KILL], 300.0, central_notice_s=NOTICE_S)
    assert on_failed == set()
    assert refused == {"before-notice", "restarting", "reconnecting"}
    # The site never came back: its excuse ends when central could know, not at the end of the run.
    never_back = dataclasses.replace(KILL, up=None, restarting=None)
    _, refused = classify_faults(
        [lost("late", 250.0), lost("early", 201.0)], [never_back], 300.0, central_notice_s=NOTICE_S
    )
    assert refused == {"early"}


def test_pre_routing_to_a_dead_city_after_central_could_know_is_lost_elsewhere() -> None:
    views = [
        lost("misrouted", 206.0, home="gz"),  # gz's caller sent to dead sz after 204.5
        lost("too-soon", 201.0, home="gz"),  # before central could know
    ]
    assert misrouted_to_dead_city(views, [KILL], central_notice_s=NOTICE_S) == ["misrouted"]
    on_failed, refused = classify_faults(views, [KILL], 300.0, central_notice_s=NOTICE_S)
    excused = on_failed | refused
    assert "misrouted" not in excused and "too-soon" in excused
    problems = verdict({"reconciliation": {}}, [*sound(), *views], excused)
    assert problems == ["1 calls lost elsewhere (e.g. lost)"]


# -- service gaps ------------------------------------------------------------------------------------


def test_a_gap_too_long_is_measured() -> None:
    kill = AppliedEvent(EventSpec(at_s=10.0, action="kill_site", site="sz"), at=110.0)
    steady = [caller(f"s{i}", site="sz", offered=100.0 + i, talk=(100.5 + i, 101.0 + i)) for i in range(40)]

    def gap(views: list[CallerView]) -> object:
        rows = event_rows(
            views, [kill], traffic_start=100.0, traffic_end=140.0, on_failed=set(), refused=set()
        )
        return rows[0]["service_gap_s"]

    assert gap(steady) == pytest.approx(1.0)
    # No sz caller answered from 110.5 to 125.5: a gap of 15 s.
    silent = [v for v in steady if not 111.0 < (v.answered_at or 0) < 125.0]
    assert gap(silent) == pytest.approx(15.0)


# -- the sites' outcomes questioned ------------------------------------------------------------------


def test_the_sites_word_is_questioned_from_the_callers_side() -> None:
    views = sound()
    clean = question_outcomes(views, trunk_channels={"gz": 2}, robots_answered={"gz": 3})
    assert (clean["abandoned_without_hang_up"], clean["blocked_with_free_trunks"]) == (0, 0)
    assert clean["robots_answered_fewer"] == {}

    # The site says abandoned; the caller never hung up.
    no_hang_up = [*views, caller("c5", "abandoned", offered=103.0)]
    assert (
        question_outcomes(no_hang_up, trunk_channels={}, robots_answered={})["abandoned_without_hang_up"] == 1
    )

    # Blocked at 103.8 (its `ended` stamp: offered + 1) while the callers held only c2 and c3 on
    # gz's trunks: with 3 channels one was free, with 2 none was.
    blocked = [*views, caller("c6", "blocked", offered=102.8, reason="no-trunk-channel")]
    assert (
        question_outcomes(blocked, trunk_channels={"gz": 3}, robots_answered={})["blocked_with_free_trunks"]
        == 1
    )
    assert (
        question_outcomes(blocked, trunk_channels={"gz": 2}, robots_answered={})["blocked_with_free_trunks"]
        == 0
    )

    # The robots answered two calls; the callers heard three answered at gz.
    fewer = question_outcomes(views, trunk_channels={}, robots_answered={"gz": 2})
    assert fewer["robots_answered_fewer"] == {"gz": {"robots": 2, "callers": 3}}


# -- the verdict -------------------------------------------------------------------------------------


RECONCILED = {"missing": 0, "duplicated": 0, "mismatched": 0}


def test_the_verdict_is_clean_only_with_calls_answered_and_nothing_broken() -> None:
    views = sound()
    assert verdict({"reconciliation": RECONCILED}, views, set()) == []
    # Nothing answered: every call abandoned, nothing lost, everything reconciled.
    idle = [caller(f"a{i}", "abandoned", hung_up=True) for i in range(3)]
    assert verdict({"reconciliation": RECONCILED}, idle, set()) == ["no call answered (of 3 offered)"]
    # A duplicate at central.
    assert verdict({"reconciliation": {**RECONCILED, "duplicated": 1}}, views, set()) == [
        "reconciliation with central: duplicated 1"
    ]
    # Central unreadable.
    assert verdict({"reconciliation": None}, views, set()) == ["central's call records could not be read"]
    # The sites' word questioned.
    claims = {"reconciliation": RECONCILED, "site_claims": {"abandoned_without_hang_up": 2}}
    assert verdict(claims, views, set()) == [
        "the sites' outcomes questioned by the callers: abandoned_without_hang_up 2"
    ]
    # A failed event.
    failed = AppliedEvent(EventSpec(at_s=3.0, action="kill_site", site="sz"), at=1.0, error="no such site")
    assert verdict({"reconciliation": RECONCILED}, views, set(), [failed]) == [
        "event kill_site at 3s failed: no such site"
    ]


def test_the_model_engines_verdict_needs_calls_answered_and_none_lost() -> None:
    assert model_problems({"totals": {"lost_elsewhere": 0}, "all_calls": {"answered": 5}}) == []
    assert model_problems({"totals": {"lost_elsewhere": 2}, "all_calls": {"answered": 5}}) == [
        "2 calls lost elsewhere"
    ]
    assert model_problems({"totals": {"lost_elsewhere": 0}, "all_calls": {"answered": 0}}) == [
        "no call answered"
    ]


# -- the soak's summary ------------------------------------------------------------------------------


def soak_summary(
    views: list[CallerView], cycles: list[Cycle], outages: Sequence[Outage] = ()
) -> dict[str, object]:
    return summarize(
        cycles,
        views,
        outages,
        {},
        [],
        traffic_start=90.0,
        cycle_s=10.0,
        central_notice_s=NOTICE_S,
        run_end=300.0,
    )


def cycles_at(*starts: float) -> list[Cycle]:
    return [Cycle(n + 1, "kill_site", "sz", start) for n, start in enumerate(starts)]


def test_the_soak_keeps_a_sound_cycle_and_breaks_each_broken_one() -> None:
    views = [caller(f"c{i}", offered=100.0 + i, talk=(100.2 + i, 100.8 + i)) for i in range(30)]
    summary = soak_summary(views, cycles_at(100.0, 110.0, 120.0))
    assert summary["clean"], summary["problems"]
    assert summary["totals"]["cycles_kept"] == 3  # type: ignore[index]

    # Cycle 2: a call lost elsewhere; cycle 3: no call answered; cycle 1: its own check broke.
    broken = [*views[:10], lost("gone", 112.0, site="gz", call_id="x")]
    broken += [caller(f"q{i}", "abandoned", offered=120.0 + i, hung_up=True) for i in range(5)]
    cycles = cycles_at(100.0, 110.0, 120.0)
    cycles[0].problems.append("invariant broken: calls_served_twice_at_once 1")
    summary = soak_summary(broken, cycles)
    assert not summary["clean"]
    rows = summary["cycles"]
    assert isinstance(rows, list)
    assert [r["invariants_kept"] for r in rows] == [False, False, False]
    assert rows[0]["problems"] == ["invariant broken: calls_served_twice_at_once 1"]
    assert rows[1]["lost_elsewhere"] == 1
    assert rows[2]["problems"] == ["no call answered of the 5 offered in the cycle"]
    assert summary["totals"]["longest_run_kept"] == 0  # type: ignore[index]


def test_a_soak_cycle_that_began_late_does_not_count_the_next_cycles_calls() -> None:
    views = [caller(f"c{i}", offered=100.0 + i, talk=(100.2 + i, 100.8 + i)) for i in range(20)]
    views.append(lost("broke", 111.0, site="gz", call_id="x", broke=113.5))  # in cycle 2 only
    summary = soak_summary(views, cycles_at(104.0, 113.0))  # cycle 1 began 4 s late
    rows = summary["cycles"]
    assert isinstance(rows, list)
    assert [r["lost_elsewhere"] for r in rows] == [0, 1]
