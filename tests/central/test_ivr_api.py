"""Central's IvrService on a real grpc.aio server, handing flows to a site through a real etcd.

A call that started on a version finishes on it while a newer one is pushed; new calls take the
newer one. Bad flows are refused with every fault; versions never change once stored.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path

import aetcd
import grpc
import pytest
import yaml

from central.audit import AuditEntry
from central.customer_pins import DEMO_PIN, CustomerPins
from central.db.engine import create_engine
from central.db.migrate import upgrade
from central.flow_publisher import FlowPublisher
from central.flows import FlowStore
from central.ivr_api import SERVICE_NAME, IvrService
from central.ivr_lookups import Lookups
from central.store import Store
from site_node.callcontrol.ivr_flow import FlowRun, Heard, ToQueue
from site_node.links.flow_catalog import FlowCatalog, FlowCatalogWatcher
from tests.central.province import province_data
from tests.helpers import eventually
from tests.ivr.flows import FLOWS, OFFICE_HOURS
from tools.province.etcd_server import EtcdServer
from vcc import rpc
from vcc.config import ProvinceConfig, parse_province
from vcc.errors import from_rpc_error
from vcc.ivr.keys import flow_key, ivr_prefix
from vcc.v1 import ivr_pb2, ivr_pb2_grpc

DEADLINE = rpc.DEFAULT_DEADLINE_S
POSTAL_GROUPS = ["parcel", "complaints", "savings", "philately"]


def postal_province(etcd_endpoint: str, prefix: str) -> ProvinceConfig:
    data = province_data(etcd_endpoint=etcd_endpoint, etcd_prefix=prefix)
    for site in data["sites"]:
        site["skill_groups"] += [{"id": g, "name": g} for g in POSTAL_GROUPS]
    return parse_province(data)


def flow_text(name: str = "postal-185") -> str:
    return (FLOWS / f"{name}.yaml").read_text(encoding="utf-8")


def catalog_text(cities: list[str]) -> str:
    data = yaml.safe_load((FLOWS / "catalog.yaml").read_text(encoding="utf-8"))
    for service in data["services"]:
        service["cities"] = cities
    return yaml.safe_dump(data, allow_unicode=True)


def version_2() -> str:
    data = yaml.safe_load(flow_text())
    data["version"] = 2
    data["prompts"]["opt_parcel"] = {"zh": "查询邮件和包裹", "en": "For parcels and letters"}
    return yaml.safe_dump(data, allow_unicode=True)


@dataclass
class Ivr:
    stub: ivr_pb2_grpc.IvrServiceAsyncStub
    flows: FlowStore
    publisher: FlowPublisher
    catalog: FlowCatalog
    watcher: FlowCatalogWatcher
    etcd: aetcd.Client
    config: ProvinceConfig
    audited: list[AuditEntry]


@pytest.fixture
async def ivr(tmp_path: Path, etcd_server: EtcdServer) -> AsyncIterator[Ivr]:
    url = f"sqlite+aiosqlite:///{tmp_path}/central.db"
    await upgrade(url)
    engine = create_engine(url)
    # A prefix of its own: the session's etcd is shared by every test.
    config = postal_province(etcd_server.endpoint, f"/vcc-ivr-{uuid.uuid4().hex[:8]}")
    store = Store(engine)
    await store.sync_province(config)
    await store.seed_demo_customers(3)
    pins = CustomerPins(engine, store)
    await pins.seed_demo(["demo-0000", "demo-0001", "demo-0002"])
    flows = FlowStore(store, time.time)
    publisher = FlowPublisher([etcd_server.endpoint], config.etcd.prefix, config.province.id)
    server = rpc.Server([SERVICE_NAME])
    audited: list[AuditEntry] = []

    async def record(entry: AuditEntry) -> None:
        audited.append(entry)

    service = IvrService(flows, config, publisher, lookups=Lookups(store, pins), audit=record)
    ivr_pb2_grpc.add_IvrServiceServicer_to_server(service, server.grpc)
    port = await server.start("127.0.0.1:0")
    catalog = FlowCatalog("gz")
    watcher = FlowCatalogWatcher(catalog, [etcd_server.endpoint], config.etcd.prefix, config.province.id)
    watch = asyncio.create_task(watcher.run())
    host, _, etcd_port = etcd_server.endpoint.rpartition(":")
    etcd = aetcd.Client(host=host, port=int(etcd_port), timeout=3)
    try:
        async with rpc.channel(f"127.0.0.1:{port}") as channel:
            stub = ivr_pb2_grpc.IvrServiceStub(channel)
            yield Ivr(stub, flows, publisher, catalog, watcher, etcd, config, audited)
    finally:
        watch.cancel()
        await asyncio.wait({watch})
        await etcd.close()
        await publisher.close()
        await server.stop(0)
        await engine.dispose()


async def expect_error(call: object, code: grpc.StatusCode, error_id: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == code, info.value.details()
    assert from_rpc_error(info.value).error_id == error_id
    return info.value.details() or ""


async def push(ivr: Ivr, text: str) -> ivr_pb2.PushFlowResponse:
    return await ivr.stub.PushFlow(ivr_pb2.PushFlowRequest(document=text), timeout=DEADLINE)


async def test_a_pushed_flow_reaches_the_site_and_a_call_finishes_its_own_version(ivr: Ivr) -> None:
    reply = await push(ivr, flow_text())
    assert reply.created and (reply.flow.flow_id, reply.flow.version, reply.flow.nodes) == (
        "postal-185",
        1,
        53,
    )

    async def at_site(version: int) -> bool:
        current = ivr.catalog.current("postal-185")
        return current is not None and current.version == version

    await eventually(lambda: at_site(1), what="version 1 at the site")
    v1 = ivr.catalog.current("postal-185")
    assert v1 is not None
    # A call starts on version 1 and is in the parcel menu when version 2 arrives.
    in_progress = FlowRun()
    in_progress.start(v1, {"customer.level": "normal"}, OFFICE_HOURS)
    in_progress.on_digits("1", OFFICE_HOURS + 1)
    reply = await push(ivr, version_2())
    assert reply.created and reply.flow.version == 2
    await eventually(lambda: at_site(2), what="version 2 at the site")
    v2 = ivr.catalog.current("postal-185")
    assert v2 is not None
    new_call = FlowRun()
    new_call.start(v2, {"customer.level": "normal"}, OFFICE_HOURS + 2)
    in_progress.on_digits("*", OFFICE_HOURS + 3)
    in_progress.on_digits("0", OFFICE_HOURS + 4)
    assert in_progress.ended == ToQueue("general", 0) and in_progress.flow.version == 1
    old_texts = [h.text for h in in_progress.trace if isinstance(h, Heard) and h.prompt_id == "opt_parcel"]
    new_texts = [h.text for h in new_call.trace if isinstance(h, Heard) and h.prompt_id == "opt_parcel"]
    assert old_texts == ["邮件查询，请按1。", "邮件查询，请按1。"]
    assert new_texts == ["查询邮件和包裹，请按1。"]
    # Both versions are kept, at central and at the site.
    listed = await ivr.stub.ListFlows(ivr_pb2.ListFlowsRequest(flow_id="postal-185"), timeout=DEADLINE)
    assert [f.version for f in listed.flows] == [2, 1]
    assert ivr.catalog.versions() == {"postal-185": [1, 2]}
    got = await ivr.stub.GetFlow(ivr_pb2.GetFlowRequest(flow_id="postal-185", version=1), timeout=DEADLINE)
    assert got.document == flow_text()
    newest = await ivr.stub.GetFlow(ivr_pb2.GetFlowRequest(flow_id="postal-185"), timeout=DEADLINE)
    assert newest.flow.version == 2


async def test_versions_never_change_once_stored(ivr: Ivr) -> None:
    await push(ivr, version_2())
    again = await push(ivr, version_2())
    # The same content again (a retried push): a no-op.
    assert not again.created
    changed = yaml.safe_load(version_2())
    changed["prompts"]["welcome"]["en"] = "Hello."
    await expect_error(
        push(ivr, yaml.safe_dump(changed, allow_unicode=True)),
        grpc.StatusCode.ALREADY_EXISTS,
        "flow-version-exists",
    )
    await expect_error(push(ivr, flow_text()), grpc.StatusCode.FAILED_PRECONDITION, "flow-version-stale")


async def test_a_bad_flow_is_refused_with_every_fault(ivr: Ivr) -> None:
    data = yaml.safe_load(flow_text())
    data["nodes"]["main"]["options"].append({"prompt": "opt_parcel", "next": "parcel"})
    data["nodes"]["pickup_queue"]["skill_group"] = "pickups"
    data["nodes"]["documents"]["next"] = "documents"
    details = await expect_error(
        push(ivr, yaml.safe_dump(data, allow_unicode=True)), grpc.StatusCode.INVALID_ARGUMENT, "invalid-flow"
    )
    assert "node main: too wide: 6 options, at most 5" in details
    assert "node pickup_queue: skill_group: no skill group 'pickups' in the province" in details
    assert "node documents: a loop with no exit through documents" in details
    await expect_error(push(ivr, ""), grpc.StatusCode.INVALID_ARGUMENT, "missing-document")
    await expect_error(
        ivr.stub.GetFlow(ivr_pb2.GetFlowRequest(flow_id="nope"), timeout=DEADLINE),
        grpc.StatusCode.NOT_FOUND,
        "flow-not-found",
    )
    listed = await ivr.stub.ListFlows(ivr_pb2.ListFlowsRequest(), timeout=DEADLINE)
    assert list(listed.flows) == []


async def test_the_service_catalog(ivr: Ivr) -> None:
    empty = await ivr.stub.GetServiceCatalog(ivr_pb2.GetServiceCatalogRequest(), timeout=DEADLINE)
    assert empty.revision == 0 and not empty.services
    document = catalog_text(["gz", "sz"])
    # It names flows central does not have yet.
    await expect_error(
        ivr.stub.PushServiceCatalog(ivr_pb2.PushServiceCatalogRequest(document=document), timeout=DEADLINE),
        grpc.StatusCode.FAILED_PRECONDITION,
        "unknown-flow",
    )
    # The shipped catalog names Foshan, which this province lacks.
    details = await expect_error(
        ivr.stub.PushServiceCatalog(
            ivr_pb2.PushServiceCatalogRequest(document=(FLOWS / "catalog.yaml").read_text(encoding="utf-8")),
            timeout=DEADLINE,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid-catalog",
    )
    assert "services.postal-185.cities: no site 'fs' in the province" in details
    await push(ivr, flow_text())
    await push(ivr, flow_text("bank"))
    reply = await ivr.stub.PushServiceCatalog(
        ivr_pb2.PushServiceCatalogRequest(document=document), timeout=DEADLINE
    )
    assert (reply.revision, reply.created) == (1, True)
    again = await ivr.stub.PushServiceCatalog(
        ivr_pb2.PushServiceCatalogRequest(document=document), timeout=DEADLINE
    )
    assert (again.revision, again.created) == (1, False)
    found = await ivr.stub.GetServiceCatalog(
        ivr_pb2.GetServiceCatalogRequest(number="11185", site_id="sz"), timeout=DEADLINE
    )
    [service] = found.services
    assert (service.service_id, service.flow_id, service.flow_version) == ("postal-185", "postal-185", 1)
    assert service.name["zh"] == "邮政185客户服务"
    assert [(list(h.days)[:1], getattr(h, "from"), h.to) for h in service.hours] == [
        (["mon"], "08:00", "20:00")
    ]
    await expect_error(
        ivr.stub.GetServiceCatalog(ivr_pb2.GetServiceCatalogRequest(service_id="lottery"), timeout=DEADLINE),
        grpc.StatusCode.NOT_FOUND,
        "service-not-found",
    )

    # The site answers a dialled number with the service and the flow to start.
    async def entry() -> bool:
        found = ivr.catalog.entry("95580")
        return found is not None and found.flow.id == "bank" and found.service.id == "phone-banking"

    await eventually(entry, what="the catalog at the site")
    assert ivr.catalog.entry("12345") is None


async def test_a_new_leader_writes_back_what_etcd_lost(ivr: Ivr) -> None:
    await push(ivr, flow_text())
    await eventually(lambda: _has(ivr, "postal-185"), what="the flow at the site")
    config = ivr.config
    await ivr.etcd.delete_prefix(ivr_prefix(config.etcd.prefix, config.province.id).encode())
    assert (
        await ivr.etcd.get(flow_key(config.etcd.prefix, config.province.id, "postal-185", 1).encode()) is None
    )

    async def withdrawn() -> bool:
        return not await _has(ivr, "postal-185")

    await eventually(withdrawn, what="the site saw the version go")
    assert await ivr.publisher.republish(ivr.flows) == 1
    assert await ivr.publisher.republish(ivr.flows) == 0
    assert (
        await ivr.etcd.get(flow_key(config.etcd.prefix, config.province.id, "postal-185", 1).encode())
        is not None
    )
    await eventually(lambda: _has(ivr, "postal-185"), what="the flow back at the site")


async def _has(ivr: Ivr, flow_id: str) -> bool:
    return ivr.catalog.current(flow_id) is not None


async def test_look_ups_answered_by_central(ivr: Ivr) -> None:
    def lookup(name: str, **args: str) -> Awaitable[ivr_pb2.LookupResponse]:
        return ivr.stub.Lookup(ivr_pb2.LookupRequest(name=name, args=args, site_id="gz"), timeout=DEADLINE)

    found = await lookup("customer", phone="13800000001")
    assert found.found and dict(found.fields) == {
        "level": "silver",
        "name": "客户 0001 / Customer 0001",
        "city": "Shenzhen",
    }
    nobody = await lookup("customer", phone="13999999999")
    assert not nobody.found and not nobody.fields
    right = await lookup("verify_pin", card="13800000001", pin=DEMO_PIN)
    assert right.found and dict(right.fields) == {"verified": "true"}
    wrong = await lookup("verify_pin", card="A000001", pin="000000")
    assert wrong.found and dict(wrong.fields) == {"verified": "false"}
    await expect_error(lookup("verify_pin", card="1"), grpc.StatusCode.INVALID_ARGUMENT, "bad-lookup-args")
    await expect_error(lookup("horoscope"), grpc.StatusCode.INVALID_ARGUMENT, "unknown-lookup")
    await expect_error(lookup("customer", card="1"), grpc.StatusCode.INVALID_ARGUMENT, "bad-lookup-args")
    await expect_error(
        lookup("parcel_state", tracking_number="1234567890123"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "lookup-not-available",
    )


async def test_every_push_is_audited_taken_or_refused(ivr: Ivr) -> None:
    await push(ivr, flow_text())
    await push(ivr, flow_text())  # the same again: taken, nothing new
    await expect_error(push(ivr, "version: [not a flow"), grpc.StatusCode.INVALID_ARGUMENT, "invalid-flow")
    # The catalog names a flow central does not have (bank): refused, audited.
    catalog = ivr.stub.PushServiceCatalog(
        ivr_pb2.PushServiceCatalogRequest(document=catalog_text(["gz"])), timeout=DEADLINE
    )
    await expect_error(catalog, grpc.StatusCode.FAILED_PRECONDITION, "unknown-flow")
    seen = [(e.action, e.target, e.outcome, e.detail) for e in ivr.audited]
    assert seen == [
        ("flow-push", "postal-185", "ok", {"version": "1", "created": "true"}),
        ("flow-push", "postal-185", "ok", {"version": "1", "created": "false"}),
        ("flow-push", "", "refused", {"error": "invalid-flow"}),
        ("catalog-push", "", "refused", {"error": "unknown-flow"}),
    ]
    assert all(e.source for e in ivr.audited)  # the peer's address and certificate
