"""The trunk link's multiplexing logic on its own: reports in order, a call's end held for its
records without holding the other calls, a failed record never heard as an end, batches bounded."""

from __future__ import annotations

import asyncio

from site_node.grpc_api.trunk_link import LinkOutbox, same_offer
from vcc.v1 import trunk_pb2


def step(kind: str, call_id: str = "c") -> trunk_pb2.PlaceCallResponse:
    msg = trunk_pb2.PlaceCallResponse(call_id=call_id)
    getattr(msg, kind).SetInParent()
    return msg


def kinds(reports: list[trunk_pb2.CallReport]) -> list[tuple[str, str]]:
    return [
        (
            r.call_ref,
            (r.progress.WhichOneof("progress") or "") if r.HasField("progress") else f"error:{r.error.code}",
        )
        for r in reports
    ]


class Woken:
    def __init__(self) -> None:
        self.times = 0

    def __call__(self) -> None:
        self.times += 1


async def test_reports_leave_in_order_and_wake_the_writer() -> None:
    woken = Woken()
    box = LinkOutbox(woken)
    box.progress("a", (step("accepted"), None))
    box.progress("b", (step("accepted"), None))
    box.progress("a", (step("prompt"), None))
    box.error("", "call-ref-invalid", "no reference")
    assert len(box) == 4 and woken.times == 4
    assert kinds(box.take()) == [
        ("a", "accepted"),
        ("b", "accepted"),
        ("a", "prompt"),
        ("", "error:call-ref-invalid"),
    ]
    assert len(box) == 0 and box.take() == []


async def test_an_end_waits_for_its_records_and_holds_only_its_own_call() -> None:
    loop = asyncio.get_running_loop()
    woken = Woken()
    box = LinkOutbox(woken)
    durable: asyncio.Future[None] = loop.create_future()
    box.progress("a", (step("ended"), durable))
    # Whatever the site says on `a` after that waits behind it; `b` does not.
    box.progress("a", (step("prompt"), None))
    box.progress("b", (step("ringing"), None))
    assert kinds(box.take()) == [("b", "ringing")]
    assert box.holding() == 1
    durable.set_result(None)
    await asyncio.sleep(0)  # the future's callbacks
    assert kinds(box.take()) == [("a", "ended"), ("a", "prompt")]
    assert box.holding() == 0


async def test_two_held_steps_of_one_call_wait_each_for_its_own_records() -> None:
    loop = asyncio.get_running_loop()
    box = LinkOutbox(Woken())
    first: asyncio.Future[None] = loop.create_future()
    second: asyncio.Future[None] = loop.create_future()
    box.progress("a", (step("queued"), first))
    box.progress("a", (step("ended"), second))
    first.set_result(None)
    await asyncio.sleep(0)
    assert kinds(box.take()) == [("a", "queued")] and box.holding() == 1
    second.set_result(None)
    await asyncio.sleep(0)
    assert kinds(box.take()) == [("a", "ended")] and box.holding() == 0


async def test_an_end_whose_records_failed_is_an_error_not_an_end() -> None:
    loop = asyncio.get_running_loop()
    box = LinkOutbox(Woken())
    failed: asyncio.Future[None] = loop.create_future()
    box.progress("a", (step("ended"), failed))
    failed.set_exception(OSError("disk full"))
    await asyncio.sleep(0)
    assert kinds(box.take()) == [("a", "error:records-not-durable")]
    done: asyncio.Future[None] = loop.create_future()
    done.cancel()
    box.progress("b", (step("ended"), done))
    assert kinds(box.take()) == [("b", "error:records-not-durable")]


async def test_a_message_takes_at_most_its_limit() -> None:
    box = LinkOutbox(Woken())
    for i in range(5):
        box.progress(f"r{i}", (step("accepted"), None))
    assert [r.call_ref for r in box.take(limit=2)] == ["r0", "r1"]
    assert [r.call_ref for r in box.take(limit=2)] == ["r2", "r3"]
    assert [r.call_ref for r in box.take(limit=2)] == ["r4"]


def test_the_same_offer_is_the_same_call_whatever_its_key_and_batching() -> None:
    offer = trunk_pb2.CallOffer(ani="13800000001", dnis="10000", attached_data={"lang": "zh"})
    again = trunk_pb2.CallOffer(idempotency_key="ref", ani="13800000001", dnis="10000", batched=True)
    again.attached_data["lang"] = "zh"
    assert same_offer(offer, again)
    for change in ({"ani": "13800000002"}, {"dnis": "10001"}, {"trunk_group": "pstn"}, {"dial_id": "d"}):
        other = trunk_pb2.CallOffer()
        other.CopyFrom(offer)
        for name, value in change.items():
            setattr(other, name, value)
        assert not same_offer(offer, other), change
    other = trunk_pb2.CallOffer()
    other.CopyFrom(offer)
    other.attached_data["lang"] = "en"
    assert not same_offer(offer, other)
