"""Interval statistics from hand-made call records: every figure, late records, duplicates."""

from __future__ import annotations

from dataclasses import replace

import pytest

from central.records import Outcome, fold
from central.stats.intervals import (
    DAY_S,
    INTERVAL_S,
    CallFacts,
    Figures,
    IntervalRow,
    Level,
    StatsPolicy,
    aggregate,
    facts,
    interval_start,
    quality_index,
    total,
)
from tests.central.factories import answered_call, overflowed_call

POLICY = StatsPolicy()  # SL 20 s, target 80 %, short abandon 5 s, UTC+8
# 09:00 local time on some day: the start of interval A; B is the next one.
A = interval_start(1_700_000_000, DAY_S, POLICY.utc_offset_s) + 9 * 3600
B = A + INTERVAL_S


def call(
    call_id: str,
    at: float,
    *,
    entry: str = "gz",
    served: str = "",
    skill: str = "general",
    agent: str = "",
    outcome: Outcome = Outcome.UNSPECIFIED,
    answered: bool = False,
    wait: float = 0.0,
    talk: float = 0.0,
    ended: bool = True,
    transferred: bool = False,
    events: int = 5,
) -> CallFacts:
    return CallFacts(
        call_id=call_id,
        entry_site_id=entry,
        served_site_id=served,
        skill_group=skill,
        agent_code=agent,
        outcome=outcome,
        answered=answered,
        arrived_at=at,
        wait_s=wait,
        talk_s=talk,
        ended=ended,
        transferred=transferred,
        event_count=events,
    )


ANS = Outcome.ANSWERED


def calls() -> list[CallFacts]:
    return [
        # Interval A.
        call("a1", A + 10, served="gz", agent="0101", outcome=ANS, answered=True, wait=10, talk=100),
        call("a2", A + 20, served="sz", agent="0201", outcome=ANS, answered=True, wait=30, talk=200,
             transferred=True),
        call("a3", A + 30, outcome=Outcome.ABANDONED, wait=3),
        call("a4", A + 40, outcome=Outcome.ABANDONED, wait=40),
        call("a5", A + 50, skill="", outcome=Outcome.BLOCKED),
        call("a6", A + 60, entry="sz", served="sz", skill="billing", agent="0201", answered=True, wait=5,
             ended=False),
        call("a7", A + 899, ended=False),
        # Interval B: answered exactly at the SL threshold (counts as within).
        call("b1", B, entry="sz", served="sz", skill="billing", agent="0202", outcome=ANS, answered=True,
             wait=20, talk=60),
    ]  # fmt: skip


def row(rows: list[IntervalRow], level: Level, key: str, start: float) -> Figures:
    found = [r for r in rows if r.level is level and r.key == key and r.start == start]
    assert len(found) == 1, (level, key, start, rows)
    return found[0].figures


def test_interval_start_is_aligned_to_local_midnight() -> None:
    assert interval_start(A + 899.9, INTERVAL_S, POLICY.utc_offset_s) == A
    assert interval_start(B, INTERVAL_S, POLICY.utc_offset_s) == B
    day = interval_start(A, DAY_S, POLICY.utc_offset_s)
    # Local midnight (UTC+8) is 16:00 UTC.
    assert day % DAY_S == DAY_S - POLICY.utc_offset_s
    assert A - day == 9 * 3600


def test_province_figures_of_an_interval() -> None:
    rows = aggregate(calls(), POLICY)
    f = row(rows, Level.PROVINCE, "", A)
    assert (f.offered, f.answered, f.abandoned, f.short_abandoned, f.blocked, f.in_progress, f.failed) == (
        7,
        3,
        1,
        1,
        1,
        1,
        0,
    )
    assert f.handled_base == 4  # 7 - 1 short abandon - 1 blocked - 1 in progress
    assert f.answered_in_sl == 2  # a1 (10 s), a6 (5 s); a2 waited 30 s
    assert f.service_level == pytest.approx(0.5)
    assert f.abandon_rate == pytest.approx(0.25)
    assert f.asa_s == pytest.approx((10 + 30 + 5) / 3)
    assert f.aht_s == pytest.approx((100 + 200) / 2)  # a6 is still talking
    assert f.transfers == 1
    assert (f.overflow_in, f.overflow_out) == (0, 0)  # within the province nothing overflows

    fb = row(rows, Level.PROVINCE, "", B)
    assert (fb.offered, fb.answered, fb.answered_in_sl) == (1, 1, 1)
    assert fb.service_level == 1.0
    assert fb.aht_s == 60.0


def test_entry_and_serving_site_figures() -> None:
    rows = aggregate(calls(), POLICY)
    gz = row(rows, Level.ENTRY_SITE, "gz", A)
    assert (gz.offered, gz.answered, gz.abandoned, gz.short_abandoned, gz.blocked, gz.in_progress) == (
        6,
        2,
        1,
        1,
        1,
        1,
    )
    assert gz.handled_base == 3  # a1, a2, a4
    assert gz.service_level == pytest.approx(1 / 3)  # a1
    assert gz.abandon_rate == pytest.approx(1 / 3)  # a4
    assert gz.asa_s == pytest.approx(20.0)
    assert gz.aht_s == pytest.approx(150.0)
    assert (gz.overflow_out, gz.overflow_in, gz.transfers) == (1, 0, 1)

    sz_served = row(rows, Level.SERVED_SITE, "sz", A)
    sz = sz_served
    assert (sz.offered, sz.answered, sz.overflow_in, sz.overflow_out) == (2, 2, 1, 0)
    assert sz_served.asa_s == pytest.approx(17.5)
    assert sz_served.aht_s == pytest.approx(200.0)
    assert sz_served.service_level == pytest.approx(0.5)

    # Calls nobody answered are counted at their entry site as serving site.
    gz_served = row(rows, Level.SERVED_SITE, "gz", A)
    assert (gz_served.offered, gz_served.answered) == (5, 1)

    sz_entry = row(rows, Level.ENTRY_SITE, "sz", A)
    assert (sz_entry.offered, sz_entry.overflow_in, sz_entry.overflow_out) == (1, 0, 0)


def test_skill_group_and_agent_figures() -> None:
    rows = aggregate(calls(), POLICY)
    general = row(rows, Level.SKILL_GROUP, "general", A)
    assert (general.offered, general.answered, general.abandoned, general.short_abandoned) == (5, 2, 1, 1)
    assert row(rows, Level.SKILL_GROUP, "-", A).blocked == 1
    billing = row(rows, Level.SKILL_GROUP, "billing", B)
    assert (billing.offered, billing.answered) == (1, 1)

    agent = row(rows, Level.AGENT, "0201", A)
    assert (agent.offered, agent.answered, agent.overflow_in, agent.transfers) == (2, 2, 1, 1)
    assert agent.asa_s == pytest.approx(17.5)
    assert agent.aht_s == pytest.approx(200.0)
    assert row(rows, Level.AGENT, "0101", A).answered_in_sl == 1
    assert not [r for r in rows if r.level is Level.AGENT and r.key == ""]


def test_daily_rows() -> None:
    day = interval_start(A, DAY_S, POLICY.utc_offset_s)
    rows = aggregate(calls(), POLICY, DAY_S, levels=[Level.PROVINCE])
    assert [(r.start, r.length_s) for r in rows] == [(day, DAY_S)]
    f = rows[0].figures
    assert (f.offered, f.answered, f.answered_in_sl) == (8, 4, 3)
    assert f.service_level == pytest.approx(3 / 5)


def test_a_late_record_corrects_its_interval() -> None:
    on_time = [c for c in calls() if c.call_id != "a4"]
    before = aggregate(on_time, POLICY, levels=[Level.PROVINCE])
    assert row(before, Level.PROVINCE, "", A).abandoned == 0
    assert row(before, Level.PROVINCE, "", A).abandon_rate == 0.0

    # The outbox of gz drains after a partition: a4 reaches central an hour later.
    after = aggregate([*on_time, calls()[3]], POLICY, levels=[Level.PROVINCE])
    fa = row(after, Level.PROVINCE, "", A)
    assert (fa.offered, fa.abandoned) == (7, 1)
    assert fa.abandon_rate == pytest.approx(0.25)
    assert fa.service_level == pytest.approx(0.5)
    # The next interval is untouched.
    assert row(after, Level.PROVINCE, "", B) == row(before, Level.PROVINCE, "", B)


def test_a_record_sent_twice_counts_once_and_the_fuller_one_wins() -> None:
    base = calls()
    # a7 seen first while queued, then again once answered (more events): the answered one counts.
    a7_done = replace(base[6], answered=True, outcome=ANS, wait_s=12, talk_s=30, ended=True, event_count=9)
    doubled = [*base, base[0], a7_done, base[6]]
    f = row(aggregate(doubled, POLICY, levels=[Level.PROVINCE]), Level.PROVINCE, "", A)
    assert (f.offered, f.answered, f.in_progress, f.answered_in_sl) == (7, 4, 0, 3)
    assert total(doubled, POLICY).offered == 8


def test_rows_are_limited_to_the_range() -> None:
    rows = aggregate(calls(), POLICY, levels=[Level.PROVINCE], start=B, end=B + INTERVAL_S)
    assert [r.start for r in rows] == [B]


def test_short_abandon_threshold_is_a_policy() -> None:
    strict = StatsPolicy(short_abandon_s=2.0)
    f = row(aggregate(calls(), strict, levels=[Level.PROVINCE]), Level.PROVINCE, "", A)
    assert (f.short_abandoned, f.abandoned) == (0, 2)


def test_quality_index() -> None:
    f = row(aggregate(calls(), POLICY), Level.PROVINCE, "", A)
    # sl 0.5/0.8 = 0.625; abandon 0.25 >= 0.20 ceiling -> 0; ASA 15 s <= 20 s -> 1; block 1 - 1/7.
    expected = 100 * (0.5 * 0.625 + 0.25 * 0.0 + 0.15 * 1.0 + 0.10 * (1 - 1 / 7))
    assert quality_index(f, POLICY) == pytest.approx(round(expected, 1))

    perfect = Figures(offered=10, answered=10, answered_in_sl=10, wait_answered_s=50)
    assert quality_index(perfect, POLICY) == 100.0
    slow = Figures(offered=10, answered=10, answered_in_sl=8, wait_answered_s=400)  # ASA 40 s
    assert quality_index(slow, POLICY) == pytest.approx(100 * (0.5 + 0.25 + 0.15 * 0.5 + 0.10))
    assert quality_index(Figures(), POLICY) is None
    assert quality_index(Figures(offered=2, blocked=2), POLICY) == 0.0


def test_facts_of_folded_records() -> None:
    answered = fold(answered_call("c1", "gz"))
    f = facts(answered)
    assert f is not None
    assert (f.answered, f.wait_s, f.talk_s, f.ended, f.transferred) == (True, 3.0, 27.0, True, False)
    assert (f.entry_site_id, f.served_site_id, f.agent_code, f.skill_group) == ("gz", "gz", "0101", "general")

    overflowed = facts(fold(overflowed_call("c2")))
    assert overflowed is not None
    # The TRANSFERRED before the answer carried the call to sz: an overflow, not a transfer.
    o = overflowed
    assert (o.entry_site_id, o.served_site_id, o.transferred) == ("gz", "sz", False)
    rows = aggregate([f, overflowed], POLICY, levels=[Level.ENTRY_SITE, Level.SERVED_SITE])
    assert sum(r.figures.overflow_out for r in rows if r.level is Level.ENTRY_SITE) == 1
    assert sum(r.figures.overflow_in for r in rows if r.key == "sz") == 1


def test_as_dict_carries_the_rates() -> None:
    d = row(aggregate(calls(), POLICY), Level.PROVINCE, "", A).as_dict()
    assert d["service_level"] == 0.5
    assert d["abandon_rate"] == 0.25
    assert d["asa_s"] == 15.0
    assert "talk_count" not in d
