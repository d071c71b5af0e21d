"""A background loop's cancel is never lost when what it waits on completes in that same instant.

On Python 3.11 `asyncio.wait_for` returns the inner call's result when the call completes as its
task is cancelled, dropping the cancel (CPython gh-86296); a loop around it then runs on and its
stop hangs (central's leader keepalive did, wave 7). The loops wait under `asyncio.timeout`
instead, and stops wait for their tasks with `vcc.shutdown.finish`. Each test here makes the race
happen deterministically: the awaited thing completes and the task is cancelled in one step of
the event loop, before either runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from site_node.links.audit_sink import AuditSink
from site_node.links.recording_index import RecordingIndexShipper
from site_node.media.bencode import encode
from site_node.media.ng import NgClient
from vcc.shutdown import finish

# Only the bound of a failure (a loop that lost its cancel runs on for ever): never reached when
# the cancel is kept, whatever the machine's load.
ENDS_S = 10.0


async def _until(blocked: Callable[[], bool]) -> None:
    """Let the task under test run until it is blocked where the race is made (its way there may
    pass through a thread, which a busy machine can keep waiting for many loop turns)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ENDS_S
    while not blocked():
        if loop.time() > deadline:
            raise AssertionError("the task never reached its wait")
        await asyncio.sleep(0.001)


async def _cancelled_as_woken(task: asyncio.Task[Any], wake: Callable[[], None]) -> bool:
    """Wake the task's wait and cancel the task in the same step; whether the task then ends
    cancelled (False: it ran on, or ended otherwise)."""
    wake()
    task.cancel()
    await asyncio.wait({task}, timeout=ENDS_S)
    if not task.done():
        task.cancel()  # a second cancel: the test ends either way
        await asyncio.wait({task}, timeout=ENDS_S)
        return False
    return task.cancelled()


def _waiting(event: asyncio.Event) -> bool:
    return bool(event._waiters)  # type: ignore[attr-defined]


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for is asyncio.timeout from 3.12 on")
async def test_the_race_is_real_wait_for_drops_the_cancel_on_3_11() -> None:
    """The race these tests make, under wait_for: the cancel is lost and the loop runs on."""
    wake = asyncio.Event()
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), 60)

    task = asyncio.create_task(loop())
    await _until(lambda: _waiting(wake))
    wake.set()
    task.cancel()
    await _until(lambda: rounds == 2 and _waiting(wake))  # it went round again after its cancel
    assert not task.done()
    task.cancel()
    await asyncio.wait({task}, timeout=ENDS_S)


async def test_the_audit_sinks_loop_ends_when_cancelled_as_it_is_woken() -> None:
    sink = AuditSink("gz", lambda: None)
    task = asyncio.create_task(sink.run())
    await _until(lambda: _waiting(sink._wake))
    assert await _cancelled_as_woken(task, sink._wake.set)


async def test_the_recording_index_loop_ends_when_cancelled_as_it_is_woken(tmp_path: Path) -> None:
    shipper = RecordingIndexShipper("gz", tmp_path, lambda: None)
    task = asyncio.create_task(shipper.run())
    await _until(lambda: _waiting(shipper._wake))
    assert await _cancelled_as_woken(task, shipper.wake)


async def test_centrals_router_loop_ends_when_cancelled_as_a_state_arrives() -> None:
    """Central's pulls-and-targets loop (the same pattern, central's side)."""
    from central.live_state import LiveState
    from central.router import Router
    from vcc.config import RoutingConfig

    live = LiveState([("gz", "Guangzhou")], membership=list, max_state_age_s=2.0)
    router = Router(RoutingConfig(mode="overflow"), live, None, [])  # type: ignore[arg-type]
    task = asyncio.create_task(router._state_loop())
    await _until(lambda: _waiting(live.changed))
    assert await _cancelled_as_woken(task, live.changed.set)


class _Sent:
    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def sendto(self, payload: bytes) -> None:
        self.payloads.append(payload)


async def test_an_ng_request_answered_as_it_is_cancelled_ends_cancelled() -> None:
    """The media engine's watch pings through this request in a loop: a reply arriving in the
    instant of the watch's cancel must not carry it into another round."""
    client = NgClient("127.0.0.1:9")
    sent = _Sent()
    client._transport = sent  # type: ignore[assignment]
    task = asyncio.create_task(client.request("ping"))
    await _until(lambda: bool(sent.payloads))
    cookie = sent.payloads[0].split(b" ", 1)[0]
    assert await _cancelled_as_woken(
        task, lambda: client._received(cookie + b" " + encode({"result": "pong"}))
    )
    assert client.in_flight == 0 and client._slots._value == client.window  # the turn given back


# -- vcc.shutdown.finish: how a stop waits for each of its background tasks ----------------------


async def _stop_of(tasks: list[asyncio.Task[None]], grace_s: float) -> None:
    for task in tasks:
        await finish(task, grace_s)


async def test_finish_keeps_the_stops_own_cancel_when_a_task_ends_in_that_instant() -> None:
    ends = [asyncio.get_running_loop().create_future() for _ in range(2)]

    async def work(n: int) -> None:
        await ends[n]

    tasks = [asyncio.create_task(work(n)) for n in range(2)]
    stop = asyncio.create_task(_stop_of(tasks, 60))
    await _until(lambda: stop._fut_waiter is not None)  # type: ignore[attr-defined]
    assert await _cancelled_as_woken(stop, lambda: ends[0].set_result(None))
    # The stop cancelled went no further: the second task was not waited on, nor cancelled.
    assert not tasks[1].done()
    tasks[1].cancel()


async def test_finish_cancels_a_task_that_overruns_its_grace_and_waits_for_it() -> None:
    unwound = asyncio.Event()

    async def stuck() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            unwound.set()

    task = asyncio.create_task(stuck())
    await asyncio.sleep(0)
    await finish(task, 0.01)
    assert task.cancelled() and unwound.is_set()


async def test_finish_raises_the_tasks_error_but_not_its_cancellation() -> None:
    async def fails() -> None:
        raise LookupError("the task's own")

    async def cancelled() -> None:
        raise asyncio.CancelledError

    failing, cancelling = asyncio.create_task(fails()), asyncio.create_task(cancelled())
    with pytest.raises(LookupError, match="the task's own"):
        await finish(failing, 60)
    await finish(cancelling, 60)  # a task cancelled elsewhere is simply over
    assert cancelling.cancelled()


async def test_a_sip_parts_stop_ends_when_cancelled_as_one_of_its_tasks_ends() -> None:
    """Ties (like bridging, consults and supervision) stop through finish: their close() no longer
    swallows its own cancel (it suppressed CancelledError to ignore its tasks')."""
    from site_node.sip.ties import TieTrunks

    ties: Any = TieTrunks.__new__(TieTrunks)  # only what close() reads
    ties.out, ties.legs_in = {}, {}
    loop = asyncio.get_running_loop()
    end, never = loop.create_future(), loop.create_future()

    async def work(f: Awaitable[None]) -> None:
        await f

    first, second = asyncio.create_task(work(end)), asyncio.create_task(work(never))
    ties._tasks = [first, second]  # a list: the order the stop takes them in is known
    stop = asyncio.create_task(ties.close())
    await _until(lambda: stop._fut_waiter is not None)  # type: ignore[attr-defined]
    assert await _cancelled_as_woken(stop, lambda: end.set_result(None))
    assert not second.done()  # the stop went no further
    second.cancel()
