"""A step's line and spans come after the messages it woke, in the order and context of the steps."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence

import pytest

from site_node.callcontrol.domain import Effect, Journal, RecordedEvent
from site_node.step_observers import AFTER_STEP_ENV, StepObservers, after_step_chosen
from vcc.call_events import EventKind

_who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="")


def _entry(call_id: str, kind: EventKind = EventKind.ARRIVED) -> list[Effect]:
    return [Journal(RecordedEvent(call_id, "gz", 1, kind, 1.0))]


def _call_ids(effects: Sequence[Effect]) -> list[str]:
    return [fx.event.call_id for fx in effects if isinstance(fx, Journal)]


async def test_the_steps_are_observed_after_the_tasks_they_woke_oldest_first() -> None:
    order: list[str] = []
    seen: list[tuple[str, str]] = []
    observers = StepObservers(
        [lambda fx: seen.extend((c, _who.get()) for c in _call_ids(fx))], after_step=True
    )
    woken = asyncio.Event()

    async def stream_writer() -> None:
        await woken.wait()
        order.append(f"message written, {len(seen)} steps observed")

    writer = asyncio.create_task(stream_writer())
    await asyncio.sleep(0)  # the writer waits for its message
    for call_id, who in (("c1", "trunk"), ("c2", "peer")):
        _who.set(who)
        observers.saw(_entry(call_id))
        woken.set()  # the step hands its message to the writer's task
        observers.step_done()
    observers.step_done()  # once per turn: a second call queues nothing more
    assert seen == []
    await writer
    await asyncio.sleep(0)
    assert order == ["message written, 0 steps observed"]
    # Each step in the context it ran in, in the order taken.
    assert seen == [("c1", "trunk"), ("c2", "peer")]


async def test_catch_up_observes_at_once_and_leaves_nothing_for_later() -> None:
    seen: list[str] = []
    observers = StepObservers([lambda fx: seen.extend(_call_ids(fx))], after_step=True)
    observers.saw(_entry("c1"))
    observers.catch_up()
    assert seen == ["c1"]
    observers.step_done()
    await asyncio.sleep(0)
    assert seen == ["c1"]


async def test_inside_the_step_when_switched_off() -> None:
    seen: list[str] = []
    observers = StepObservers([lambda fx: seen.extend(_call_ids(fx))], after_step=False)
    observers.saw(_entry("c1"))
    assert seen == ["c1"]


def test_without_a_loop_the_step_is_observed_when_done() -> None:
    seen: list[str] = []
    observers = StepObservers([lambda fx: seen.extend(_call_ids(fx))], after_step=True)
    observers.saw(_entry("c1"))
    observers.step_done()
    assert seen == ["c1"]


async def test_a_failing_observer_loses_its_own_work_only(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    def broken(_: Sequence[Effect]) -> None:
        raise RuntimeError("span exporter gone")

    observers = StepObservers([broken, lambda fx: seen.extend(_call_ids(fx))], after_step=True)
    observers.saw(_entry("c1"))
    observers.saw(_entry("c2"))
    observers.catch_up()
    assert seen == ["c1", "c2"]
    assert "observing a step failed" in caplog.text


def test_the_switch_is_read_and_a_bad_value_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AFTER_STEP_ENV, raising=False)
    assert after_step_chosen()
    monkeypatch.setenv(AFTER_STEP_ENV, "0")
    assert not after_step_chosen()
    monkeypatch.setenv(AFTER_STEP_ENV, "later")
    with pytest.raises(ValueError, match=AFTER_STEP_ENV):
        after_step_chosen()
