"""The caller generator's trunk link on its own: a link's message counted once among the calls it
carries, a refused signal ending its call alone, the link's end breaking every call on it."""

from __future__ import annotations

import asyncio

import pytest

from tools.simulation.traffic import CallerView
from tools.simulation.trunk_paths import PathBroken, TrunkLink
from vcc.v1 import trunk_pb2


def step(kind: str) -> trunk_pb2.PlaceCallResponse:
    msg = trunk_pb2.PlaceCallResponse(call_id="c")
    getattr(msg, kind).SetInParent()
    return msg


def view(key: str) -> CallerView:
    return CallerView(key, "gz", "", 0.0, [], "lost", None, None, None, "", "", "")


class _NoCall:
    """A Signalling call that never answers (the link's reading is driven by hand here)."""

    def __aiter__(self) -> _NoCall:
        return self

    async def __anext__(self) -> trunk_pb2.SignallingResponse:
        await asyncio.Event().wait()
        raise StopAsyncIteration

    async def write(self, request: trunk_pb2.SignallingRequest) -> None:
        pass

    def cancel(self) -> None:
        pass


class _Stub:
    def Signalling(self, timeout: float) -> _NoCall:
        return _NoCall()


async def test_a_links_message_counts_once_among_the_calls_it_carries() -> None:
    link = TrunkLink(_Stub(), 10.0)  # type: ignore[arg-type]
    views = [view(k) for k in ("a", "b", "c")]
    paths = [link.path(v) for v in views]
    message = trunk_pb2.SignallingResponse(
        reports=[
            trunk_pb2.CallReport(call_ref="a", progress=step("accepted")),
            trunk_pb2.CallReport(call_ref="a", progress=step("prompt")),
            trunk_pb2.CallReport(call_ref="b", progress=step("accepted")),
            trunk_pb2.CallReport(call_ref="gone", progress=step("ended")),  # a call already over here
        ]
    )
    link._take(message)
    assert [v.messages_in for v in views] == [0.5, 0.25, 0.0]
    # An error for a call reference ends that call alone.
    error = trunk_pb2.SignallingError(code="unknown-call-ref", message="no")
    link._take(trunk_pb2.SignallingResponse(reports=[trunk_pb2.CallReport(call_ref="c", error=error)]))
    got = [await paths[0].read(), await paths[0].read()]
    assert [m.WhichOneof("progress") for m in got if m is not None] == ["accepted", "prompt"]
    with pytest.raises(PathBroken, match=r"^unknown-call-ref: no$"):
        await paths[2].read()
    assert views[2].messages_in == 1.0
    await link.close()
    # The link's end breaks every call still on it (after what it had read for them).
    first = await paths[1].read()
    assert first is not None and first.WhichOneof("progress") == "accepted"
    with pytest.raises(PathBroken):
        await paths[1].read()
    with pytest.raises(PathBroken):
        await paths[0].write(trunk_pb2.PlaceCallRequest(hang_up=trunk_pb2.CallerHangUp()))


class _WritingCall(_NoCall):
    def __init__(self) -> None:
        self.written: list[trunk_pb2.SignallingRequest] = []

    async def write(self, request: trunk_pb2.SignallingRequest) -> None:
        self.written.append(request)


class _WritingStub:
    def __init__(self) -> None:
        self.call = _WritingCall()

    def Signalling(self, timeout: float) -> _WritingCall:
        return self.call


async def test_signals_pending_together_leave_in_one_message_counted_once() -> None:
    stub = _WritingStub()
    link = TrunkLink(stub, 10.0)  # type: ignore[arg-type]
    views = [view(k) for k in ("a", "b", "c")]
    paths = [link.path(v) for v in views]
    offer = trunk_pb2.CallOffer(idempotency_key="a", ani="13800000001", dnis="10000")
    await paths[0].write(trunk_pb2.PlaceCallRequest(offer=offer))
    await paths[1].write(trunk_pb2.PlaceCallRequest(digits=trunk_pb2.CallerDigits(digits="1")))
    await paths[2].write(trunk_pb2.PlaceCallRequest(hang_up=trunk_pb2.CallerHangUp()))
    for _ in range(5):
        await asyncio.sleep(0)  # the writer's turn
    assert len(stub.call.written) == 1
    signals = stub.call.written[0].signals
    assert [(s.call_ref, s.WhichOneof("action")) for s in signals] == [
        ("a", "offer"),
        ("b", "digits"),
        ("c", "hang_up"),
    ]
    assert signals[0].offer.ani == "13800000001"
    assert [round(v.messages_out, 6) for v in views] == [round(1 / 3, 6)] * 3
    await link.close()
