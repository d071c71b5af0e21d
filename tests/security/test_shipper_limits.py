"""A batch central refuses as too large is split; a record too large alone is dead-lettered with an
alert, and never blocks the records behind it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from site_node.records.outbox import Outbox
from site_node.records.shipper import Shipper
from tests.helpers import eventually
from tests.site_node.test_shipper import CentralServer, FakeCentral, calls, keys
from vcc.v1 import common_pb2

# Central takes messages of at most this many bytes (production: vcc.rpc.MAX_MESSAGE_BYTES).
LIMIT = 2_000


class SmallCentral(CentralServer):
    async def start(self) -> None:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", LIMIT)])
        from vcc.v1 import central_pb2

        ingest = grpc.unary_unary_rpc_method_handler(
            self.servicer.IngestCallEvents,
            request_deserializer=central_pb2.IngestCallEventsRequest.FromString,
            response_serializer=central_pb2.IngestCallEventsResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("vcc.v1.CentralService", {"IngestCallEvents": ingest}),)
        )
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server


@pytest.fixture
async def central() -> AsyncIterator[SmallCentral]:
    server = SmallCentral(FakeCentral())
    await server.start()
    yield server
    await server.stop()


async def test_too_large_batches_are_split_and_a_hopeless_record_is_parked(
    central: SmallCentral, tmp_path: Path
) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db")
    alerts: list[tuple[str, str]] = []
    shipper = Shipper(
        outbox,
        "gz",
        lambda: central.address,
        batch_size=100,
        linger_s=0,
        on_dead_letter=lambda e, why: alerts.append((e.call_id, why)),
    )
    before = calls("a", 20)  # 60 events: far more than 2 kB in one batch
    huge = common_pb2.CallEvent(
        call_id="huge", site_id="gz", seq=1, kind=common_pb2.CALL_EVENT_KIND_ARRIVED, data={"x": "y" * 5_000}
    )
    after = calls("b", 20)
    await outbox.append([*before, huge, *after])
    task = asyncio.create_task(shipper.run())
    try:

        async def drained() -> bool:
            return outbox.pending_count == 0

        await eventually(drained, what="the outbox drained past the hopeless record", timeout_s=20)
    finally:
        await shipper.stop()
        task.cancel()
    # Every other record reached central, in order; the huge one is parked with an alert.
    assert central.servicer.unique() == keys(before) + keys(after)
    assert outbox.dead_letter_count == 1
    assert [c for c, _ in alerts] == ["huge"]
    assert "RESOURCE_EXHAUSTED" in alerts[0][1]
    parked = await outbox.dead_letters()
    assert [e.call_id for e, _ in parked] == ["huge"]
    await outbox.close()
