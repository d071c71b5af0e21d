"""The shipper against a real grpc.aio server standing in for central's ingest."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from site_node.records.outbox import Outbox
from site_node.records.shipper import RAW_ENV, Shipper, ingest_request_bytes, raw_from_env
from tests.helpers import eventually
from vcc.v1 import central_pb2, common_pb2

Key = tuple[str, str, int]


class FakeCentral:
    """CentralService.IngestCallEvents alone: records every event it is sent; can refuse or lose replies."""

    def __init__(self) -> None:
        self.received: list[common_pb2.CallEvent] = []
        self.batches = 0
        # Events of these calls make a batch INVALID_ARGUMENT.
        self.poison: set[str] = set()
        # Store the batch, then answer UNAVAILABLE (a reply lost on the way back).
        self.lose_replies = 0
        # Answer after this long (to hit the client's deadline).
        self.delay_s = 0.0

    async def IngestCallEvents(
        self,
        request: central_pb2.IngestCallEventsRequest,
        context: grpc.aio.ServicerContext[
            central_pb2.IngestCallEventsRequest, central_pb2.IngestCallEventsResponse
        ],
    ) -> central_pb2.IngestCallEventsResponse:
        self.batches += 1
        if any(e.call_id in self.poison for e in request.events):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "unknown skill group")
        self.received.extend(request.events)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.lose_replies:
            self.lose_replies -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "reply lost")
        return central_pb2.IngestCallEventsResponse(stored=len(request.events))

    def unique(self) -> list[Key]:
        """Received events deduplicated as central does, in order of first arrival."""
        seen: dict[Key, None] = {}
        for e in self.received:
            seen.setdefault((e.call_id, e.site_id, e.seq), None)
        return list(seen)


class CentralServer:
    """A real grpc.aio server on 127.0.0.1 that can be stopped and started again on its port."""

    def __init__(self, servicer: FakeCentral) -> None:
        self.servicer = servicer
        self.port = 0
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server()
        ingest = grpc.unary_unary_rpc_method_handler(
            self.servicer.IngestCallEvents,
            request_deserializer=central_pb2.IngestCallEventsRequest.FromString,
            response_serializer=central_pb2.IngestCallEventsResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("vcc.v1.CentralService", {"IngestCallEvents": ingest}),)
        )
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        assert self.port
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
            self._server = None


@pytest.fixture
async def central() -> AsyncIterator[CentralServer]:
    server = CentralServer(FakeCentral())
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    box = await Outbox.open(tmp_path / "outbox.db")
    yield box
    await box.close()


def calls(prefix: str, n: int, events_per_call: int = 3) -> list[common_pb2.CallEvent]:
    return [
        common_pb2.CallEvent(
            call_id=f"{prefix}{i}", site_id="gz", seq=seq, kind=common_pb2.CALL_EVENT_KIND_ARRIVED
        )
        for i in range(n)
        for seq in range(1, events_per_call + 1)
    ]


def keys(events: list[common_pb2.CallEvent]) -> list[Key]:
    return [(e.call_id, e.site_id, e.seq) for e in events]


async def shipping(shipper: Shipper) -> asyncio.Task[None]:
    return asyncio.create_task(shipper.run())


async def test_ships_everything_in_order_and_acks(central: CentralServer, outbox: Outbox) -> None:
    shipper = Shipper(outbox, "gz", lambda: central.address, batch_size=7)
    task = await shipping(shipper)
    try:
        first, second = calls("a", 10), calls("b", 10)
        await outbox.append(first)

        async def all_acked() -> bool:
            return outbox.pending_count == 0 and shipper.shipped == len(first)

        await eventually(all_acked, what="first events shipped")
        # The shipper was waiting on an empty outbox: new rows wake it.
        await outbox.append(second)
        await eventually(lambda: _true(outbox.pending_count == 0), what="second events shipped")
        assert central.servicer.unique() == keys(first + second)
        assert len(central.servicer.received) == len(first + second)
        assert central.servicer.batches >= (len(first) + len(second)) // 7
        assert shipper.failures == 0
        assert await outbox.pending(10) == []
    finally:
        await shipper.stop()
    assert task.done()


@pytest.mark.parametrize("raw", [True, False], ids=["as-stored", "parsed-again"])
async def test_either_way_central_receives_the_events_as_appended(
    central: CentralServer, outbox: Outbox, raw: bool
) -> None:
    shipper = Shipper(outbox, "gz", lambda: central.address, batch_size=5, raw=raw)
    task = await shipping(shipper)
    try:
        events = calls("r", 4)
        # A field of every kind besides the keys, and one event longer than a one-byte length.
        events[0].data["note"] = "x" * 300
        events[1].ani = "13800000001"
        events[1].at.FromNanoseconds(1_700_000_000_123_456_789)
        await outbox.append(events)
        await eventually(lambda: _true(outbox.pending_count == 0), what="shipped")
        assert central.servicer.received == events
    finally:
        await shipper.stop()
    assert task.done()


def test_a_request_built_from_stored_bytes_is_the_request_serialized() -> None:
    events = calls("w", 3)
    events[2].data["long"] = "y" * 20_000  # a length of three bytes on the wire
    stored = [e.SerializeToString() for e in events]
    for site_id in ("gz", ""):
        expected = central_pb2.IngestCallEventsRequest(site_id=site_id, events=events).SerializeToString()
        assert ingest_request_bytes(site_id, stored) == expected
    assert central_pb2.IngestCallEventsRequest.FromString(ingest_request_bytes("gz", stored)).events == events
    assert (
        ingest_request_bytes("gz", [])
        == central_pb2.IngestCallEventsRequest(site_id="gz").SerializeToString()
    )


@pytest.mark.parametrize(("value", "raw"), [("", True), ("1", True), ("0", False)])
def test_the_raw_switch(monkeypatch: pytest.MonkeyPatch, value: str, raw: bool) -> None:
    monkeypatch.setenv(RAW_ENV, value)
    assert raw_from_env() is raw


def test_a_bad_raw_switch_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RAW_ENV, "yes")
    with pytest.raises(ValueError, match=RAW_ENV):
        raw_from_env()


async def test_central_down_for_a_while_loses_and_reorders_nothing(
    central: CentralServer, outbox: Outbox
) -> None:
    shipper = Shipper(
        outbox, "gz", lambda: central.address, batch_size=5, rpc_timeout_s=1.0, max_backoff_s=0.2
    )
    await shipping(shipper)
    try:
        before = calls("a", 4)
        await outbox.append(before)
        await eventually(lambda: _true(outbox.pending_count == 0), what="shipped before the outage")

        await central.stop()
        during = calls("b", 6)
        await outbox.append(during)
        await eventually(lambda: _true(shipper.failures >= 3), what="shipper noticed the outage")
        assert outbox.pending_count == len(during)
        assert shipper.last_error is not None and "UNAVAILABLE" in shipper.last_error

        # Back on the same port; its first two replies get lost after storing the batch.
        central.servicer.lose_replies = 2
        await central.start()
        after = calls("c", 3)
        await outbox.append(after)
        await eventually(lambda: _true(outbox.pending_count == 0), what="everything acked after the outage")
        assert central.servicer.unique() == keys(before + during + after)
        # Lost replies made the shipper send some batches twice; central's dedup absorbs them.
        assert len(central.servicer.received) > len(before + during + after)
    finally:
        await shipper.stop()


async def test_a_slow_central_hits_the_deadline_and_the_batch_is_sent_again(
    central: CentralServer, outbox: Outbox
) -> None:
    central.servicer.delay_s = 0.5
    shipper = Shipper(outbox, "gz", lambda: central.address, rpc_timeout_s=0.1, max_backoff_s=0.1)
    await shipping(shipper)
    try:
        events = calls("a", 2)
        await outbox.append(events)
        await eventually(lambda: _true(shipper.failures >= 1), what="deadline exceeded")
        assert "DEADLINE_EXCEEDED" in (shipper.last_error or "")
        central.servicer.delay_s = 0.0
        await eventually(lambda: _true(outbox.pending_count == 0), what="shipped once central is quick again")
        assert central.servicer.unique() == keys(events)
    finally:
        await shipper.stop()


async def test_a_refused_event_is_dead_lettered_and_the_rest_flows(
    central: CentralServer, outbox: Outbox
) -> None:
    central.servicer.poison = {"bad"}
    shipper = Shipper(outbox, "gz", lambda: central.address, batch_size=8)
    await shipping(shipper)
    try:
        good_before, good_after = calls("a", 5), calls("b", 5)
        bad = common_pb2.CallEvent(call_id="bad", site_id="gz", seq=1)
        await outbox.append([*good_before, bad, *good_after])
        await eventually(lambda: _true(outbox.pending_count == 0), what="outbox drained past the bad event")
        assert shipper.dead_lettered == 1
        assert outbox.dead_letter_count == 1
        assert central.servicer.unique() == keys(good_before + good_after)
        parked = await outbox.dead_letters()
        assert [(e.call_id, reason) for e, reason in parked] == [("bad", "unknown skill group")]
    finally:
        await shipper.stop()


async def test_follows_central_to_a_new_address(central: CentralServer, outbox: Outbox) -> None:
    where: list[str | None] = [None]
    shipper = Shipper(outbox, "gz", lambda: where[0], max_backoff_s=0.1)
    await shipping(shipper)
    other = CentralServer(FakeCentral())
    await other.start()
    try:
        await outbox.append(calls("a", 2))
        # No central known yet (not discovered): rows wait.
        await eventually(lambda: _true(shipper.failures >= 1), what="no central known")
        assert shipper.last_error == "no central address known"
        where[0] = central.address
        await eventually(lambda: _true(outbox.pending_count == 0), what="shipped to the first central")
        where[0] = other.address
        await outbox.append(calls("b", 2))
        await eventually(lambda: _true(outbox.pending_count == 0), what="shipped to the second central")
        assert central.servicer.unique() == keys(calls("a", 2))
        assert other.servicer.unique() == keys(calls("b", 2))
    finally:
        await shipper.stop()
        await other.stop()


async def test_stop_with_drain_ships_what_is_left_first(central: CentralServer, outbox: Outbox) -> None:
    shipper = Shipper(outbox, "gz", lambda: central.address)
    task = await shipping(shipper)
    await outbox.append(calls("a", 20))
    await shipper.stop(drain_s=10.0)
    assert task.done()
    assert outbox.pending_count == 0
    assert len(central.servicer.unique()) == 60


async def _true(value: bool) -> bool:
    return value


def test_the_linger_comes_from_the_environment_within_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    from site_node.records.shipper import LINGER_ENV, LINGER_S, linger_from_env

    monkeypatch.delenv(LINGER_ENV, raising=False)
    assert linger_from_env() == LINGER_S
    monkeypatch.setenv(LINGER_ENV, "0.1")
    assert linger_from_env() == 0.1
    for bad in ("soon", "-1", "60"):
        monkeypatch.setenv(LINGER_ENV, bad)
        with pytest.raises(ValueError, match=LINGER_ENV):
            linger_from_env()
