"""Folding a call's events into its record (pure)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from central.records import CallState, EventKind, Outcome, fold, order
from tests.central.factories import T0, answered_call, ev, overflowed_call

K = EventKind


def test_answered_call_at_one_site() -> None:
    r = fold(answered_call())
    assert r.call_id == "c1"
    assert r.entry_site_id == "gz"
    assert (r.ani, r.dnis) == ("13800000001", "10000")
    assert r.skill_group == "general"
    assert r.state is CallState.ENDED
    assert r.outcome is Outcome.ANSWERED
    assert (r.served_site_id, r.agent_code) == ("gz", "0101")
    assert r.arrived_at == T0
    assert r.answered_at == T0 + 3.0
    assert r.ended_at == T0 + 30.0
    assert r.wait_s == pytest.approx(3.0)
    assert r.talk_s == pytest.approx(27.0)
    assert r.event_count == 8
    assert r.first_event_at == T0
    assert [e.seq for e in r.events] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert len(r.legs) == 1
    leg = r.legs[0]
    assert (leg.site_id, leg.first_at, leg.last_at, leg.event_count, leg.agent_code) == (
        "gz",
        T0,
        T0 + 30.0,
        8,
        "0101",
    )


def test_abandoned_call_waits_until_it_ends() -> None:
    r = fold(
        [
            ev(K.ARRIVED, 0.0, 1, ani="123"),
            ev(K.QUEUED, 1.0, 2, skill="general"),
            ev(K.ABANDONED, 12.5, 3),
            ev(K.ENDED, 12.5, 4, outcome=Outcome.ABANDONED),
        ]
    )
    assert r.state is CallState.ENDED
    assert r.outcome is Outcome.ABANDONED
    assert r.answered_at is None
    assert r.wait_s == pytest.approx(12.5)
    assert r.talk_s == 0.0
    assert (r.served_site_id, r.agent_code) == ("", "")
    assert r.skill_group == "general"


def test_blocked_call_is_ended_even_without_an_ended_event() -> None:
    r = fold([ev(K.BLOCKED, 2.0, 1, ani="555", dnis="10000")])
    assert r.state is CallState.ENDED
    assert r.outcome is Outcome.BLOCKED
    assert r.arrived_at == r.ended_at == T0 + 2.0
    assert r.wait_s == 0.0
    assert r.entry_site_id == "gz"
    assert r.ani == "555"


def test_blocked_then_ended_takes_the_ended_outcome_and_time() -> None:
    r = fold([ev(K.BLOCKED, 0.0, 1), ev(K.ENDED, 0.2, 2, outcome=Outcome.BLOCKED)])
    assert (r.state, r.outcome, r.ended_at) == (CallState.ENDED, Outcome.BLOCKED, T0 + 0.2)


@pytest.mark.parametrize(
    ("kinds", "state"),
    [
        ([K.ARRIVED], CallState.ARRIVING),
        ([K.ARRIVED, K.IVR_STARTED], CallState.IVR),
        ([K.ARRIVED, K.IVR_STARTED, K.DIGITS], CallState.IVR),
        ([K.ARRIVED, K.QUEUED], CallState.QUEUED),
        ([K.ARRIVED, K.QUEUED, K.RINGING], CallState.RINGING),
        ([K.ARRIVED, K.QUEUED, K.RINGING, K.RING_NO_ANSWER], CallState.QUEUED),
        ([K.ARRIVED, K.QUEUED, K.RINGING, K.ANSWERED], CallState.TALKING),
        ([K.ARRIVED, K.ANSWERED, K.HELD], CallState.HELD),
        ([K.ARRIVED, K.ANSWERED, K.HELD, K.RETRIEVED], CallState.TALKING),
        ([K.ARRIVED, K.ANSWERED, K.TRANSFERRED], CallState.TALKING),
        ([K.ARRIVED, K.ANSWERED, K.AGENT_HUNG_UP], CallState.TALKING),
        ([K.ARRIVED, K.ANSWERED, K.ENDED], CallState.ENDED),
    ],
)
def test_state_follows_the_last_event(kinds: list[EventKind], state: CallState) -> None:
    r = fold([ev(k, float(i), i + 1) for i, k in enumerate(kinds)])
    assert r.state is state
    if state is not CallState.ENDED:
        assert r.outcome is Outcome.UNSPECIFIED
        assert r.ended_at is None
        assert r.talk_s == 0.0


def test_call_in_progress_has_no_end_yet() -> None:
    r = fold([ev(K.ARRIVED, 0.0, 1), ev(K.QUEUED, 1.0, 2)])
    assert r.ended_at is None
    assert r.wait_s == 0.0
    assert r.outcome is Outcome.UNSPECIFIED


def test_overflow_to_another_site() -> None:
    r = fold(overflowed_call())
    assert r.entry_site_id == "gz"
    assert (r.served_site_id, r.agent_code, r.skill_group) == ("sz", "0201", "billing")
    assert r.outcome is Outcome.ANSWERED
    assert r.wait_s == pytest.approx(5.0)
    assert r.talk_s == pytest.approx(60.0)
    assert r.event_count == 8
    assert [(leg.site_id, leg.event_count, leg.agent_code) for leg in r.legs] == [
        ("gz", 4, ""),
        ("sz", 4, "0201"),
    ]


def test_first_answer_served_the_call_when_a_transfer_is_answered_again() -> None:
    r = fold(
        [
            ev(K.ARRIVED, 0.0, 1),
            ev(K.ANSWERED, 2.0, 2, agent="0101", skill="general"),
            ev(K.TRANSFERRED, 10.0, 3),
            ev(K.ANSWERED, 11.0, 1, site="sz", agent="0201", skill="billing"),
            ev(K.ENDED, 20.0, 4, outcome=Outcome.ANSWERED),
        ]
    )
    assert (r.served_site_id, r.agent_code, r.skill_group, r.answered_at) == (
        "gz",
        "0101",
        "general",
        T0 + 2.0,
    )
    assert r.talk_s == pytest.approx(18.0)


def test_last_ended_event_ends_the_call() -> None:
    r = fold(
        [
            ev(K.ARRIVED, 0.0, 1),
            ev(K.ANSWERED, 1.0, 1, site="sz", agent="0201"),
            ev(K.ENDED, 9.0, 2, site="sz"),
            ev(K.ENDED, 9.5, 2, outcome=Outcome.ANSWERED),
        ]
    )
    assert r.ended_at == T0 + 9.5
    assert r.outcome is Outcome.ANSWERED


def test_an_ended_event_without_outcome_borrows_an_earlier_one() -> None:
    r = fold(
        [ev(K.ARRIVED, 0.0, 1), ev(K.ENDED, 5.0, 2, outcome=Outcome.FAILED), ev(K.ENDED, 6.0, 1, site="sz")]
    )
    assert (r.outcome, r.ended_at) == (Outcome.FAILED, T0 + 6.0)


def test_an_ended_event_without_any_outcome_is_judged_by_the_answer() -> None:
    assert fold([ev(K.ARRIVED, 0, 1), ev(K.ANSWERED, 1, 2), ev(K.ENDED, 2, 3)]).outcome is Outcome.ANSWERED
    assert fold([ev(K.ARRIVED, 0, 1), ev(K.ENDED, 2, 2)]).outcome is Outcome.UNSPECIFIED


def test_events_before_the_arrival_reached_central() -> None:
    r = fold([ev(K.QUEUED, 1.0, 2, site="sz", skill="general"), ev(K.RINGING, 2.0, 3, site="sz")])
    assert r.arrived_at is None
    assert r.entry_site_id == "sz"
    assert r.wait_s == 0.0
    assert r.state is CallState.RINGING
    assert r.first_event_at == T0 + 1.0


def test_clock_skew_between_sites_never_makes_a_negative_wait_or_talk() -> None:
    r = fold(
        [
            ev(K.ANSWERED, 0.0, 1, site="sz", agent="0201"),
            ev(K.ARRIVED, 0.3, 1, site="gz"),
            ev(K.ENDED, 0.1, 2, site="sz", outcome=Outcome.ANSWERED),
        ]
    )
    assert r.wait_s == 0.0
    assert r.talk_s == pytest.approx(0.1)
    assert r.entry_site_id == "gz"


def test_order_is_time_then_site_then_seq_and_each_event_once() -> None:
    events = [
        ev(K.QUEUED, 1.0, 2, site="sz"),
        ev(K.ARRIVED, 1.0, 1, site="gz"),
        ev(K.QUEUED, 1.0, 1, site="sz"),
    ]
    ordered = order([*events, events[0]])
    assert [(e.site_id, e.seq) for e in ordered] == [("gz", 1), ("sz", 1), ("sz", 2)]


def test_duplicates_count_once() -> None:
    events = answered_call()
    assert fold(events + events[:3]).event_count == 8


def test_no_events_or_several_calls_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one"):
        fold([])
    with pytest.raises(ValueError, match="several calls"):
        fold([ev(K.ARRIVED, 0, 1), ev(K.ARRIVED, 0, 1, call_id="other")])


@given(st.permutations(answered_call() + overflowed_call("c1")[3:7]))
def test_arrival_order_does_not_matter(events: list) -> None:  # type: ignore[type-arg]
    assert fold(events) == fold(sorted(events, key=lambda e: (e.at, e.site_id, e.seq)))


@given(st.randoms(use_true_random=False), st.integers(min_value=1, max_value=6))
def test_folding_batch_by_batch_ends_where_folding_everything_does(rnd: random.Random, batches: int) -> None:
    events = overflowed_call("c1")
    rnd.shuffle(events)
    # Batches may overlap, as a re-sent outbox batch does.
    seen: list = []  # type: ignore[type-arg]
    cuts = sorted(rnd.randint(0, len(events)) for _ in range(batches - 1))
    start = 0
    for cut in [*cuts, len(events)]:
        overlap = max(0, start - rnd.randint(0, 2))
        seen += events[overlap:cut]
        if seen:
            partial = fold(seen)
            assert partial.event_count == len({e.key for e in seen})
        start = cut
    assert fold(seen) == fold(events)
