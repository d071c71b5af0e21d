"""Central over mutual TLS: who may connect, and a site speaks only for itself."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from central import recordings
from central.audit import AuditLog, AuditService
from central.db.engine import create_engine
from central.db.migrate import upgrade
from central.flows import FlowStore
from central.grpc_api import SERVICE_NAME, CentralService
from central.ivr_api import SERVICE_NAME as IVR_SERVICE_NAME
from central.ivr_api import IvrService
from central.ivr_lookups import Lookups
from central.live_state import LiveState
from central.membership_view import MembershipView
from central.router import Router
from central.servicedesk.desk import ServiceDesk
from central.servicedesk.grpc_api import SERVICE_NAMES as DESK_SERVICES
from central.store import Store
from tests.central.province import province
from tests.central.test_grpc_api import batch
from tests.security.conftest import Certs
from tools.province.certs import issue, make_ca
from vcc import rpc
from vcc.authz import Authorizer
from vcc.person_assertion import PersonGate
from vcc.tls import TlsFiles
from vcc.v1 import (
    audit_pb2_grpc,
    central_pb2,
    central_pb2_grpc,
    ivr_pb2_grpc,
    recordings_pb2_grpc,
    site_admin_pb2,
)

DEADLINE = 5.0
Code = grpc.StatusCode


@dataclass
class Central:
    address: str
    engine: AsyncEngine
    router: Router
    denied: list[tuple[str, str]]

    async def stored_events(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(sa.text("select count(*) from call_events"))).scalar_one())


async def serve_central(tmp_path: Path, files: TlsFiles) -> AsyncIterator[Central]:
    url = f"sqlite+aiosqlite:///{tmp_path}/central.db"
    await upgrade(url)
    engine = create_engine(url)
    store = Store(engine)
    config = province()
    await store.sync_province(config)
    view = MembershipView((s.id, s.name) for s in config.sites)
    live = LiveState(((s.id, s.name) for s in config.sites), view.sites, config.routing.max_state_age_s)
    router = Router(config.routing, live, store, config.sites)
    denied: list[tuple[str, str]] = []

    def on_denied(method: str, who: object, peer: str, reason: str) -> None:
        denied.append((method, str(who)))

    # Central's people (the service desk checks the person a site or desktop acts for).
    persons = PersonGate(files.ca, {s.id: {a.code: a.role for a in s.agents} for s in config.sites})
    server = rpc.Server(
        [SERVICE_NAME, *DESK_SERVICES, recordings.SERVICE_NAME, IVR_SERVICE_NAME],
        tls=files,
        interceptors=[Authorizer([s.id for s in config.sites], on_denied=on_denied, persons=persons)],
    )
    service = CentralService(store, config.province.id, [s.id for s in config.sites], view.sites, router)
    central_pb2_grpc.add_CentralServiceServicer_to_server(service, server.grpc)
    audit_pb2_grpc.add_AuditServiceServicer_to_server(
        AuditService(AuditLog(engine), [s.id for s in config.sites]), server.grpc
    )
    ServiceDesk(store, [s.id for s in config.sites], senders={}).add_to(server.grpc)
    recordings_pb2_grpc.add_RecordingIndexServiceServicer_to_server(
        recordings.RecordingIndexService(recordings.RecordingIndex(engine), [s.id for s in config.sites]),
        server.grpc,
    )
    # Central's IVR flows and catalog (without etcd's publisher: what is pushed stays in the database).
    ivr_pb2_grpc.add_IvrServiceServicer_to_server(
        IvrService(
            FlowStore(store, time.time), config, lookups=Lookups(store), audit=AuditLog(engine).record
        ),
        server.grpc,
    )
    port = await server.start("127.0.0.1:0")
    yield Central(f"127.0.0.1:{port}", engine, router, denied)
    await server.stop(0)
    await engine.dispose()


@pytest.fixture
async def central(tmp_path: Path, certs: Certs) -> AsyncIterator[Central]:
    async for c in serve_central(tmp_path, certs.files("central-1")):
        yield c


def stub(
    central: Central, files: TlsFiles
) -> tuple[grpc.aio.Channel, central_pb2_grpc.CentralServiceAsyncStub]:
    ch = rpc.channel(central.address, tls=files)
    return ch, central_pb2_grpc.CentralServiceStub(ch)


async def refused(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value.code()


async def test_a_site_ingests_its_own_records(central: Central, certs: Certs) -> None:
    ch, gz = stub(central, certs.files("site-gz"))
    async with ch:
        reply = await gz.IngestCallEvents(batch("gz"), timeout=DEADLINE)
    assert reply.stored == 8
    assert await central.stored_events() == 8


async def test_a_site_cannot_ingest_as_another_site(central: Central, certs: Certs) -> None:
    ch, gz = stub(central, certs.files("site-gz"))
    async with ch:
        assert (
            await refused(gz.IngestCallEvents(batch("sz", "c-sz"), timeout=DEADLINE))
            == Code.PERMISSION_DENIED
        )
    assert await central.stored_events() == 0
    # The real site's records are then stored as new, not as an impostor's duplicates.
    ch, sz = stub(central, certs.files("site-sz"))
    async with ch:
        reply = await sz.IngestCallEvents(batch("sz", "c-sz"), timeout=DEADLINE)
    assert (reply.stored, reply.duplicates) == (8, 0)


@pytest.mark.parametrize("stem", ["desktop-robots", "trunk-gateway", "tool-cli", "site-xx"])
async def test_only_a_site_of_the_province_may_ingest(central: Central, certs: Certs, stem: str) -> None:
    ch, other = stub(central, certs.files(stem))
    async with ch:
        assert await refused(other.IngestCallEvents(batch("gz"), timeout=DEADLINE)) == Code.PERMISSION_DENIED
    assert await central.stored_events() == 0
    # Certificate use by a peer that may not do this is reported (central audits it).
    assert central.denied == [("/vcc.v1.CentralService/IngestCallEvents", stem.replace("-", "/", 1))]


async def test_plaintext_is_refused(central: Central) -> None:
    async with grpc.aio.insecure_channel(central.address) as ch:
        call = central_pb2_grpc.CentralServiceStub(ch).IngestCallEvents(batch("gz"), timeout=DEADLINE)
        assert await refused(call) == Code.UNAVAILABLE
    assert await central.stored_events() == 0


async def test_a_certificate_from_another_ca_is_refused(central: Central, certs: Certs) -> None:
    # Its own CA as trust root: the server's certificate fails on its side, its own on ours.
    ch, foreign = stub(central, certs.foreign_files("site-gz"))
    async with ch:
        assert await refused(foreign.IngestCallEvents(batch("gz"), timeout=DEADLINE)) == Code.UNAVAILABLE
    # Trusting our CA but showing the foreign certificate: the server refuses the handshake.
    mixed = TlsFiles(certs.folder / "ca.crt", certs.foreign / "site-gz.crt", certs.foreign / "site-gz.key")
    ch, foreign = stub(central, mixed)
    async with ch:
        assert await refused(foreign.IngestCallEvents(batch("gz"), timeout=DEADLINE)) == Code.UNAVAILABLE
    assert await central.stored_events() == 0


def state(site_id: str, seq: int = 1) -> central_pb2.StreamSiteStateRequest:
    return central_pb2.StreamSiteStateRequest(seq=seq, state=site_admin_pb2.SiteSummary(site_id=site_id))


async def test_a_site_cannot_stream_state_as_another_site(central: Central, certs: Certs) -> None:
    ch, gz = stub(central, certs.files("site-gz"))
    async with ch:
        stream = gz.StreamSiteState(timeout=DEADLINE)
        await stream.write(state("sz"))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stream.read()
        assert info.value.code() == Code.PERMISSION_DENIED
    # Central follows nobody: no stream and no state of sz were taken.
    sz = central.router.live.site("sz", now=0.0)
    assert (sz.streaming, sz.summary, sz.seq) == (False, None, 0)


async def test_a_site_cannot_ask_routes_for_another_site(central: Central, certs: Certs) -> None:
    ch, gz = stub(central, certs.files("site-gz"))
    request = central_pb2.RouteCallRequest(call_id="c1", site_id="sz", skill_group="general")
    async with ch:
        assert await refused(gz.RouteCall(request, timeout=DEADLINE)) == Code.PERMISSION_DENIED


async def test_a_renewed_certificate_is_picked_up_without_a_restart(tmp_path: Path) -> None:
    # The server's files are replaced in place by ones from a new CA (the hardest renewal): new
    # handshakes use them at once, the process never restarts.
    old, new = tmp_path / "old", tmp_path / "new"
    for folder in (old, new):
        make_ca(folder, "gd")
        issue(folder, "central", "1")
        issue(folder, "tool", "cli")
    live = tmp_path / "live"
    live.mkdir()
    for name in ("ca.crt", "central-1.crt", "central-1.key"):
        (live / name).write_bytes((old / name).read_bytes())
    files = TlsFiles(live / "ca.crt", live / "central-1.crt", live / "central-1.key")

    def tool(folder: Path) -> TlsFiles:
        return TlsFiles(folder / "ca.crt", folder / "tool-cli.crt", folder / "tool-cli.key")

    async def status(central: Central, client: TlsFiles) -> grpc.StatusCode:
        ch, s = stub(central, client)
        async with ch:
            try:
                await s.GetProvinceStatus(central_pb2.GetProvinceStatusRequest(), timeout=DEADLINE)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return Code.OK

    async for central in serve_central(tmp_path, files):
        assert await status(central, tool(old)) == Code.OK
        assert await status(central, tool(new)) == Code.UNAVAILABLE
        for name in ("ca.crt", "central-1.crt", "central-1.key"):
            tmp = live / f"{name}.tmp"
            tmp.write_bytes((new / name).read_bytes())
            tmp.replace(live / name)
        assert await status(central, tool(new)) == Code.OK
        assert await status(central, tool(old)) == Code.UNAVAILABLE


async def test_a_client_identity_has_a_bounded_number_of_calls_at_once(certs: Certs) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server = rpc.Server(
        [], tls=certs.files("central-1"), interceptors=[Authorizer(["gz"], limits={"tool": 1, "site": 5})]
    )
    port = await server.start("127.0.0.1:0")
    try:
        async with rpc.channel(f"127.0.0.1:{port}", tls=certs.files("tool-cli")) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=10)
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            # One call open: the tool's second is refused while it lasts.
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert info.value.code() == Code.RESOURCE_EXHAUSTED
            # Another identity is not limited by the tool's calls.
            async with rpc.channel(f"127.0.0.1:{port}", tls=certs.files("site-gz")) as other:
                await health_pb2_grpc.HealthStub(other).Check(health_pb2.HealthCheckRequest(), timeout=5)
            watch.cancel()

            async def released() -> bool:
                try:
                    await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                except grpc.aio.AioRpcError:
                    return False
                return True

            from tests.helpers import eventually

            await eventually(released, what="the tool's slot is free again")
    finally:
        await server.stop(0)
