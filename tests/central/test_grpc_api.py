"""CentralService on a real grpc.aio server on 127.0.0.1:0, over a SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from central import convert
from central.grpc_api import SERVICE_NAME, CentralService
from central.membership_view import MembershipView
from central.store import Store
from tests.central.factories import T0, answered_call
from tests.central.province import central_store
from vcc import rpc
from vcc.errors import from_rpc_error
from vcc.v1 import central_pb2, central_pb2_grpc, common_pb2, site_admin_pb2

DEADLINE = rpc.DEFAULT_DEADLINE_S


@dataclass
class Central:
    stub: central_pb2_grpc.CentralServiceAsyncStub
    store: Store
    engine: AsyncEngine
    view: MembershipView

    async def stored_events(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(sa.text("select count(*) from call_events"))).scalar_one())


@pytest.fixture
async def central(tmp_path: object) -> AsyncIterator[Central]:
    engine, store, config = await central_store(tmp_path, customers=3)  # type: ignore[arg-type]
    view = MembershipView((s.id, s.name) for s in config.sites)
    server = rpc.Server([SERVICE_NAME])
    central_pb2_grpc.add_CentralServiceServicer_to_server(
        CentralService(store, config.province.id, [s.id for s in config.sites], view.sites), server.grpc
    )
    port = await server.start("127.0.0.1:0")
    async with rpc.channel(f"127.0.0.1:{port}") as channel:
        yield Central(central_pb2_grpc.CentralServiceStub(channel), store, engine, view)
    await server.stop(0)
    await engine.dispose()


def batch(site_id: str = "gz", call_id: str = "c1") -> central_pb2.IngestCallEventsRequest:
    return central_pb2.IngestCallEventsRequest(
        site_id=site_id, events=[convert.event_to_proto(e) for e in answered_call(call_id, site=site_id)]
    )


async def expect_error(call: object, code: grpc.StatusCode, error_id: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == code, info.value.details()
    assert from_rpc_error(info.value).error_id == error_id


async def test_ingest_and_resend(central: Central) -> None:
    reply = await central.stub.IngestCallEvents(batch(), timeout=DEADLINE)
    assert (reply.stored, reply.duplicates) == (8, 0)
    reply = await central.stub.IngestCallEvents(batch(), timeout=DEADLINE)
    assert (reply.stored, reply.duplicates) == (0, 8)
    assert await central.stored_events() == 8


def _unknown_site(r: central_pb2.IngestCallEventsRequest) -> None:
    r.site_id = "xx"
    for e in r.events:
        e.site_id = "xx"


def _empty(r: central_pb2.IngestCallEventsRequest) -> None:
    del r.events[:]


def _too_many(r: central_pb2.IngestCallEventsRequest) -> None:
    template = r.events[0]
    del r.events[:]
    for seq in range(1, 5002):
        e = r.events.add()
        e.CopyFrom(template)
        e.seq = seq


def _last(
    mutate: Callable[[common_pb2.CallEvent], None],
) -> Callable[[central_pb2.IngestCallEventsRequest], None]:
    """Spoil the last event only: the good ones before it must not be stored either."""

    def spoil(r: central_pb2.IngestCallEventsRequest) -> None:
        mutate(r.events[-1])

    return spoil


def _set(field: str, value: object) -> Callable[[common_pb2.CallEvent], None]:
    def change(e: common_pb2.CallEvent) -> None:
        setattr(e, field, value)

    return change


@pytest.mark.parametrize(
    ("spoil", "code", "error_id"),
    [
        (_unknown_site, grpc.StatusCode.NOT_FOUND, "unknown-site"),
        (_empty, grpc.StatusCode.INVALID_ARGUMENT, "empty-batch"),
        (_too_many, grpc.StatusCode.INVALID_ARGUMENT, "batch-too-large"),
        (_last(_set("site_id", "sz")), grpc.StatusCode.INVALID_ARGUMENT, "event-site-mismatch"),
        (_last(_set("call_id", "")), grpc.StatusCode.INVALID_ARGUMENT, "missing-call-id"),
        (_last(_set("call_id", "x" * 129)), grpc.StatusCode.INVALID_ARGUMENT, "bad-call-id"),
        (_last(_set("seq", 0)), grpc.StatusCode.INVALID_ARGUMENT, "bad-seq"),
        (_last(_set("seq", 2**63)), grpc.StatusCode.INVALID_ARGUMENT, "bad-seq"),
        (
            _last(_set("kind", common_pb2.CALL_EVENT_KIND_UNSPECIFIED)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "bad-event-kind",
        ),
        (_last(_set("kind", 99)), grpc.StatusCode.INVALID_ARGUMENT, "bad-event-kind"),
        (_last(_set("outcome", 42)), grpc.StatusCode.INVALID_ARGUMENT, "bad-outcome"),
        (_last(lambda e: e.ClearField("at")), grpc.StatusCode.INVALID_ARGUMENT, "missing-event-time"),
    ],
)
async def test_ingest_refuses_bad_batches_and_stores_nothing(
    central: Central,
    spoil: Callable[[central_pb2.IngestCallEventsRequest], None],
    code: grpc.StatusCode,
    error_id: str,
) -> None:
    request = batch()
    spoil(request)
    await expect_error(central.stub.IngestCallEvents(request, timeout=DEADLINE), code, error_id)
    assert await central.stored_events() == 0
    assert await central.store.count_calls() == 0


@pytest.mark.parametrize(
    "phone",
    # The full-width digits are digits to str.isdigit, not to us.
    ["", "12", "1" * 21, "138-0000", "13800000001\n", "\uff11\uff13\uff18\uff10", " 13800000001"],
)
async def test_lookup_customer_refuses_bad_phones(central: Central, phone: str) -> None:
    request = central_pb2.LookupCustomerRequest(phone=phone)
    await expect_error(
        central.stub.LookupCustomer(request, timeout=DEADLINE), grpc.StatusCode.INVALID_ARGUMENT, "bad-phone"
    )


async def test_lookup_customer(central: Central) -> None:
    reply = await central.stub.LookupCustomer(
        central_pb2.LookupCustomerRequest(phone="13800000002"), timeout=DEADLINE
    )
    c = reply.customer
    assert (c.customer_id, c.phone, c.name, c.level, c.city) == (
        "demo-0002",
        "13800000002",
        "客户 0002 / Customer 0002",
        "normal",
        "Guangzhou",
    )
    await expect_error(
        central.stub.LookupCustomer(central_pb2.LookupCustomerRequest(phone="13800009999"), timeout=DEADLINE),
        grpc.StatusCode.NOT_FOUND,
        "customer-not-found",
    )


async def test_lookup_customers_answers_each_number_in_order(central: Central) -> None:
    phones = ["13800000002", "13800009999", "13800000001", "13800000002"]
    reply = await central.stub.LookupCustomers(
        central_pb2.LookupCustomersRequest(phones=phones), timeout=DEADLINE
    )
    assert [(m.found, m.customer.customer_id) for m in reply.matches] == [
        (True, "demo-0002"),
        (False, ""),
        (True, "demo-0001"),
        (True, "demo-0002"),
    ]
    assert reply.matches[0].customer.city == "Guangzhou"


@pytest.mark.parametrize(
    ("phones", "error_id"),
    [([], "bad-phones"), (["13800000001"] * 101, "bad-phones"), (["13800000001", "12"], "bad-phone")],
)
async def test_lookup_customers_refuses_a_bad_batch(
    central: Central, phones: list[str], error_id: str
) -> None:
    await expect_error(
        central.stub.LookupCustomers(central_pb2.LookupCustomersRequest(phones=phones), timeout=DEADLINE),
        grpc.StatusCode.INVALID_ARGUMENT,
        error_id,
    )


async def test_get_call_record(central: Central) -> None:
    await central.stub.IngestCallEvents(batch(), timeout=DEADLINE)
    reply = await central.stub.GetCallRecord(central_pb2.GetCallRecordRequest(call_id="c1"), timeout=DEADLINE)
    r = reply.record
    assert (r.call_id, r.entry_site_id, r.served_site_id, r.agent_code) == ("c1", "gz", "gz", "0101")
    assert r.state == common_pb2.CALL_STATE_ENDED
    assert r.outcome == common_pb2.CALL_OUTCOME_ANSWERED
    assert rpc.unix_s(r.arrived_at) == pytest.approx(T0)
    assert rpc.unix_s(r.ended_at) == pytest.approx(T0 + 30.0)
    assert (r.wait_s, r.talk_s, r.event_count) == pytest.approx((3.0, 27.0, 8))
    assert [e.seq for e in r.events] == list(range(1, 9))
    assert dict(r.events[2].data) == {"digits": "1"}


async def test_a_call_not_yet_answered_has_no_answer_time(central: Central) -> None:
    request = batch()
    del request.events[4:]
    await central.stub.IngestCallEvents(request, timeout=DEADLINE)
    r = (
        await central.stub.GetCallRecord(central_pb2.GetCallRecordRequest(call_id="c1"), timeout=DEADLINE)
    ).record
    assert r.state == common_pb2.CALL_STATE_QUEUED
    assert r.outcome == common_pb2.CALL_OUTCOME_UNSPECIFIED
    assert r.HasField("arrived_at")
    assert not r.HasField("answered_at")
    assert not r.HasField("ended_at")


async def test_get_call_record_errors(central: Central) -> None:
    await expect_error(
        central.stub.GetCallRecord(central_pb2.GetCallRecordRequest(call_id="nope"), timeout=DEADLINE),
        grpc.StatusCode.NOT_FOUND,
        "call-not-found",
    )
    await expect_error(
        central.stub.GetCallRecord(central_pb2.GetCallRecordRequest(call_id=""), timeout=DEADLINE),
        grpc.StatusCode.INVALID_ARGUMENT,
        "bad-call-id",
    )


async def test_list_call_records_pages(central: Central) -> None:
    for i in range(5):
        await central.stub.IngestCallEvents(batch(call_id=f"L{i}"), timeout=DEADLINE)
    await central.stub.IngestCallEvents(batch("sz", call_id="S0"), timeout=DEADLINE)
    ids: list[str] = []
    token = ""
    while True:
        reply = await central.stub.ListCallRecords(
            central_pb2.ListCallRecordsRequest(entry_site_id="gz", page_size=2, page_token=token),
            timeout=DEADLINE,
        )
        ids += [r.call_id for r in reply.records]
        assert all(len(r.events) == 0 for r in reply.records)
        token = reply.next_page_token
        if not token:
            break
    assert sorted(ids) == [f"L{i}" for i in range(5)]
    everything = await central.stub.ListCallRecords(
        central_pb2.ListCallRecordsRequest(with_events=True, ended_only=True), timeout=DEADLINE
    )
    assert len(everything.records) == 6
    assert all(r.event_count == len(r.events) == 8 for r in everything.records)
    assert everything.next_page_token == ""


@pytest.mark.parametrize(
    ("request_", "error_id"),
    [
        (central_pb2.ListCallRecordsRequest(page_size=1001), "bad-page-size"),
        (central_pb2.ListCallRecordsRequest(page_token="not a token"), "bad-page-token"),
        (central_pb2.ListCallRecordsRequest(page_token="WzEsMiwzXQ"), "bad-page-token"),
    ],
)
async def test_list_call_records_errors(
    central: Central, request_: central_pb2.ListCallRecordsRequest, error_id: str
) -> None:
    await expect_error(
        central.stub.ListCallRecords(request_, timeout=DEADLINE), grpc.StatusCode.INVALID_ARGUMENT, error_id
    )


async def test_province_status(central: Central) -> None:
    await central.stub.IngestCallEvents(batch(), timeout=DEADLINE)
    central.view.put("sz", site_admin_pb2.SiteSummary(site_id="sz", name="Shenzhen", calls_waiting=4), now=T0)
    reply = await central.stub.GetProvinceStatus(central_pb2.GetProvinceStatusRequest(), timeout=DEADLINE)
    assert reply.province_id == "gd"
    assert reply.call_records == 1
    gz, sz = reply.sites
    assert (gz.site_id, gz.name, gz.up, gz.HasField("summary"), gz.HasField("last_seen")) == (
        "gz",
        "Guangzhou",
        False,
        False,
        False,
    )
    assert (sz.site_id, sz.up, sz.summary.calls_waiting) == ("sz", True, 4)
    assert rpc.unix_s(sz.last_seen) == pytest.approx(T0)
    central.view.delete("sz")
    reply = await central.stub.GetProvinceStatus(central_pb2.GetProvinceStatusRequest(), timeout=DEADLINE)
    assert not reply.sites[1].up
    assert not reply.sites[1].HasField("summary")
    assert rpc.unix_s(reply.sites[1].last_seen) == pytest.approx(T0)
