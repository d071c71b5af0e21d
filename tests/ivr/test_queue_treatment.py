"""Queue announcements (position, expected wait) at an interval, and the maximum wait (F12)."""

from __future__ import annotations

from site_node.callcontrol.ivr_flow import Announcements, Play
from site_node.callcontrol.queue_treatment import MaxWaitReached, QueueTreatment

SPEC = Announcements(
    "queue_position", "您前面还有{position}位客户。", "queue_wait", "预计等待约{wait_min}分钟。", 30.0, 120.0
)
T0 = 1000.0


def test_announced_at_once_then_every_interval_then_max_wait() -> None:
    treatment = QueueTreatment(SPEC, T0)
    assert treatment.deadline == T0
    assert treatment.on_tick(T0, 3, 95.0) == [
        Play("queue_position", "您前面还有3位客户。", False),
        Play("queue_wait", "预计等待约2分钟。", False),
    ]
    assert treatment.deadline == T0 + 30
    # Ticks between announcements say nothing.
    assert treatment.on_tick(T0 + 10, 2, 60.0) == []
    assert treatment.on_tick(T0 + 30, 1, 20.0) == [
        Play("queue_position", "您前面还有1位客户。", False),
        Play("queue_wait", "预计等待约1分钟。", False),
    ]
    treatment.on_tick(T0 + 60, 1, None)
    treatment.on_tick(T0 + 90, 1, None)
    assert treatment.deadline == T0 + 120
    assert treatment.on_tick(T0 + 120, 1, 5.0) == [MaxWaitReached(120.0)]
    assert treatment.deadline is None and treatment.on_tick(T0 + 150, 1, 5.0) == []
    assert treatment.announced == 4


def test_an_unknown_wait_is_not_announced_and_stop_ends_it() -> None:
    treatment = QueueTreatment(SPEC, T0)
    assert treatment.on_tick(T0, 2, None) == [Play("queue_position", "您前面还有2位客户。", False)]
    assert treatment.on_tick(T0 + 30, 2, float("inf")) == [
        Play("queue_position", "您前面还有2位客户。", False)
    ]
    treatment.stop()
    assert treatment.deadline is None and treatment.on_tick(T0 + 60, 1, 1.0) == []


def test_without_a_maximum_wait_the_announcements_go_on() -> None:
    spec = Announcements("p", "{position}", "", "", 10.0, None)
    treatment = QueueTreatment(spec, T0)
    said = [treatment.on_tick(T0 + 10 * i, 5 - i % 5, 1.0) for i in range(100)]
    assert all(s and isinstance(s[0], Play) for s in said)
    assert treatment.deadline == T0 + 1000
