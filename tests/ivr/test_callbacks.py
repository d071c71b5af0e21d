"""The callback list (F20): one open callback per number and group, attempts, retries, outcomes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from site_node.callcontrol.callbacks import OPEN, CallbackError, CallbackList, CallbackPolicy

T0 = 1000.0


def test_order_of_service_is_priority_then_place_in_line() -> None:
    callbacks = CallbackList()
    callbacks.request("a", "c1", "13800000001", "general", T0, reason="flow-offer")
    callbacks.request("b", "c2", "13800000002", "general", T0 + 5, reason="virtual-hold", place_since=T0 - 60)
    callbacks.request("c", "c3", "13800000003", "general", T0 + 6, reason="max-wait", priority=9)
    callbacks.request("d", "c4", "13800000004", "billing", T0 + 7, reason="flow-offer")
    assert [c.callback_id for c in callbacks.due(T0 + 10, "general")] == ["c", "b", "a"]
    assert [c.callback_id for c in callbacks.due(T0 + 10)] == ["c", "b", "a", "d"]
    # Only what was requested by then is due; b kept its earlier place in line.
    assert [c.callback_id for c in callbacks.due(T0 + 5.5)] == ["b", "a"]


def test_asking_twice_keeps_one_callback_and_the_earlier_place() -> None:
    callbacks = CallbackList()
    first = callbacks.request("a", "c1", "13800000001", "general", T0, reason="flow-offer")
    again = callbacks.request(
        "b", "c2", "13800000001", "general", T0 + 30, reason="virtual-hold", place_since=T0 - 20
    )
    assert first is not None and again is not None
    assert again.callback_id == "a" and again.place_since == T0 - 20
    assert len(callbacks.open()) == 1
    # Another group is another callback.
    other = callbacks.request("c", "c3", "13800000001", "billing", T0, reason="flow-offer")
    assert other is not None and other.callback_id == "c"


def test_short_abandoned_calls_and_unknown_numbers_are_not_called_back() -> None:
    callbacks = CallbackList(CallbackPolicy(min_abandoned_wait_s=5))
    assert callbacks.request("a", "c1", "13800000001", "general", T0, reason="abandoned", waited_s=2) is None
    assert callbacks.request("b", "c2", "", "general", T0, reason="flow-offer") is None
    kept = callbacks.request("c", "c3", "13800000001", "general", T0, reason="abandoned", waited_s=12)
    assert kept is not None and kept.reason == "abandoned"


def test_attempts_retries_and_the_limit() -> None:
    callbacks = CallbackList(CallbackPolicy(max_attempts=2, retry_after_s=60))
    callbacks.request("a", "c1", "13800000001", "general", T0, reason="flow-offer")
    callbacks.start("a", "1001", T0 + 1)
    assert callbacks.due(T0 + 2) == []
    retry = callbacks.finish("a", "no-answer", T0 + 20)
    assert (retry.state, retry.next_attempt_at) == ("pending", T0 + 80)
    with pytest.raises(CallbackError) as info:
        callbacks.start("a", "1001", T0 + 30)
    assert info.value.error_id == "callback-not-due"
    # A preview the agent declines is not the caller's attempt.
    callbacks.start("a", "1002", T0 + 80)
    declined = callbacks.finish("a", "agent-declined", T0 + 81)
    assert declined.state == "pending" and declined.next_attempt_at == T0 + 81
    callbacks.start("a", "1003", T0 + 82)
    failed = callbacks.finish("a", "busy", T0 + 90)
    assert failed.state == "failed" and failed.closed_at == T0 + 90
    assert [(a.agent_code, a.outcome) for a in failed.attempts] == [
        ("1001", "no-answer"),
        ("1002", "agent-declined"),
        ("1003", "busy"),
    ]


def test_answered_and_cancelled_callbacks_are_closed() -> None:
    callbacks = CallbackList()
    callbacks.request("a", "c1", "13800000001", "general", T0, reason="flow-offer")
    callbacks.request("b", "c2", "13800000002", "general", T0, reason="flow-offer")
    callbacks.start("a", "1001", T0)
    assert callbacks.finish("a", "answered", T0 + 3).state == "done"
    assert callbacks.cancel("b", T0 + 4).state == "cancelled"
    assert callbacks.open() == [] and callbacks.next_due_at() is None
    for call, error_id in (
        (lambda: callbacks.cancel("a", T0 + 5), "callback-closed"),
        (lambda: callbacks.finish("b", "answered", T0 + 5), "callback-wrong-state"),
        (lambda: callbacks.get("zz"), "callback-not-found"),
    ):
        with pytest.raises(CallbackError) as info:
            call()
        assert info.value.error_id == error_id
    # Once closed, the same number may ask again: a new callback.
    again = callbacks.request("c", "c3", "13800000001", "general", T0 + 10, reason="flow-offer")
    assert again is not None and again.callback_id == "c"


ops = st.lists(
    st.tuples(
        st.sampled_from(
            ["request", "start", "answered", "no-answer", "busy", "agent-declined", "cancel", "wait"]
        ),
        st.integers(0, 4),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_a_number_never_has_two_open_callbacks_and_every_one_ends(steps: list[tuple[str, int]]) -> None:
    policy = CallbackPolicy(max_attempts=3, retry_after_s=10)
    callbacks = CallbackList(policy)
    now = T0
    ids = 0
    for op, who in steps:
        now += 1
        number = f"1380000000{who % 3}"
        entry = callbacks.open_for(number, "general")
        try:
            if op == "request":
                ids += 1
                callbacks.request(f"cb{ids}", f"c{ids}", number, "general", now, reason="flow-offer")
            elif op == "wait":
                now += 10
            elif entry is None:
                continue
            elif op == "start":
                callbacks.start(entry.callback_id, "1001", now)
            elif op == "cancel":
                callbacks.cancel(entry.callback_id, now)
            else:
                callbacks.finish(entry.callback_id, op, now)  # type: ignore[arg-type]
        except CallbackError as exc:
            assert exc.error_id in {"callback-not-due", "callback-wrong-state"}
        numbers = [c.number for c in callbacks.open()]
        assert len(numbers) == len(set(numbers))
    # Dial every open callback until it closes: it takes at most max_attempts tries each.
    for _ in range(policy.max_attempts * 3 + 3):
        for entry in callbacks.open():
            if entry.state == "dialling":
                callbacks.finish(entry.callback_id, "no-answer", now)
        now += policy.retry_after_s
        for entry in callbacks.due(now):
            callbacks.start(entry.callback_id, "1001", now)
    assert all(c.state not in OPEN for c in callbacks._entries.values())
