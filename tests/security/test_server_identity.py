"""A client checks whom it reached: a site dialling city X accepts only X's certificate there, one
dialling central only a central replica's; another province certificate answering is refused at
the handshake, before any request reaches it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from site_node.app import SiteNode
from tests.security.conftest import Certs
from tools.province.etcd_server import EtcdServer
from tools.province.generate import DEFAULT_PASSWORD, SiteSpec, generate_province, hash_password
from tools.province.netutil import free_port
from vcc import rpc, tls
from vcc.config import parse_province
from vcc.v1 import central_pb2, central_pb2_grpc, peer_pb2, peer_pb2_grpc

Code = grpc.StatusCode


class _Answering(peer_pb2_grpc.SitePeerServiceServicer, central_pb2_grpc.CentralServiceServicer):
    """Whoever listens at an address; counts the requests that reach it."""

    def __init__(self) -> None:
        self.reached = 0

    async def Ping(self, request: peer_pb2.PingRequest, context: Any) -> peer_pb2.PingResponse:
        self.reached += 1
        return peer_pb2.PingResponse()

    async def RouteCall(
        self, request: central_pb2.RouteCallRequest, context: Any
    ) -> central_pb2.RouteCallResponse:
        self.reached += 1
        return central_pb2.RouteCallResponse()


@pytest.fixture
async def listener(certs: Certs) -> AsyncIterator[tuple[str, _Answering, list[grpc.aio.Server]]]:
    """An address and a server factory: `start(stem)` serves there with that certificate."""
    servicer = _Answering()
    servers: list[grpc.aio.Server] = []
    address = f"127.0.0.1:{free_port()}"
    yield address, servicer, servers
    for server in servers:
        await server.stop(None)


async def serve_as(
    address: str, servicer: _Answering, servers: list[grpc.aio.Server], certs: Certs, stem: str
) -> None:
    for old in servers:
        await old.stop(None)
    servers.clear()
    server = grpc.aio.server()
    peer_pb2_grpc.add_SitePeerServiceServicer_to_server(servicer, server)
    central_pb2_grpc.add_CentralServiceServicer_to_server(servicer, server)
    server.add_secure_port(address, tls.server_credentials(certs.files(stem)))
    await server.start()
    servers.append(server)


async def ping(ch: grpc.aio.Channel) -> Code:
    try:
        await peer_pb2_grpc.SitePeerServiceStub(ch).Ping(peer_pb2.PingRequest(), timeout=5)
        return Code.OK
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    finally:
        await ch.close()


async def test_a_peer_address_answered_by_another_city_is_refused(
    listener: tuple[str, _Answering, list[grpc.aio.Server]], certs: Certs
) -> None:
    address, answering, servers = listener
    gz = certs.files("site-gz")
    # fs's certificate (a good one, of this province) where gz dials sz: refused, nothing reached.
    await serve_as(address, answering, servers, certs, "site-fs")
    assert await ping(rpc.channel(address, tls=gz, expect=tls.site_server("sz"))) == Code.UNAVAILABLE
    assert await ping(rpc.channel(address, tls=gz, expect=tls.central_server())) == Code.UNAVAILABLE
    assert answering.reached == 0
    # The same address answered by sz itself: served (the check is on the identity, not the host).
    await serve_as(address, answering, servers, certs, "site-sz")
    assert await ping(rpc.channel(address, tls=gz, expect=tls.site_server("sz"))) == Code.OK
    assert answering.reached == 1
    # Without `expect` (a tool dialling an address), any province certificate answers: the old check.
    await serve_as(address, answering, servers, certs, "site-fs")
    assert await ping(rpc.channel(address, tls=gz)) == Code.OK


async def test_central_is_a_central_replica_and_the_probed_leader_that_replica(
    listener: tuple[str, _Answering, list[grpc.aio.Server]], certs: Certs
) -> None:
    address, answering, servers = listener
    gz = certs.files("site-gz")
    await serve_as(address, answering, servers, certs, "site-sz")  # a site posing as central
    assert await ping(rpc.channel(address, tls=gz, expect=tls.central_server())) == Code.UNAVAILABLE
    assert answering.reached == 0
    await serve_as(address, answering, servers, certs, "central-1")
    assert await ping(rpc.channel(address, tls=gz, expect=tls.central_server())) == Code.OK
    # A follower probing replica 2 at that address finds replica 1 there: not the leader it meant.
    replica = certs.files("central-1")
    assert await ping(rpc.channel(address, tls=replica, expect=tls.identity_dns(tls.CENTRAL, "2"))) == (
        Code.UNAVAILABLE
    )
    assert await ping(rpc.channel(address, tls=replica, expect=tls.identity_dns(tls.CENTRAL, "1"))) == Code.OK


async def test_a_site_node_refuses_an_impostor_at_its_peer_and_central_addresses(
    tmp_path: Path, etcd_server: EtcdServer, certs: Certs
) -> None:
    """The product's own links: the peer legs' and the central link's channels check the identity."""
    sz_listen = f"127.0.0.1:{free_port()}"
    central_listen = f"127.0.0.1:{free_port()}"
    config = generate_province(
        [SiteSpec(s, s.upper(), trunk_channels=2, agents={"general": 1}) for s in ("gz", "sz", "fs")],
        etcd_endpoint=etcd_server.endpoint,
        central_listen=central_listen,
        database_url="sqlite+aiosqlite:///unused.db",
        password_hash=hash_password(DEFAULT_PASSWORD),
        outbox_dir=tmp_path,
    )
    config["sites"][1]["listen"] = sz_listen
    node = SiteNode(parse_province(config), "gz", certs.files("site-gz"))
    await node.start()
    impostor = _Answering()
    servers: list[grpc.aio.Server] = []
    try:
        await serve_as(sz_listen, impostor, servers, certs, "site-fs")
        peer_channel = node.peer_links._channel(sz_listen, "sz")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await peer_pb2_grpc.SitePeerServiceStub(peer_channel).Ping(peer_pb2.PingRequest(), timeout=5)
        assert refused.value.code() == Code.UNAVAILABLE
        # Central's address answered by a site: the routing question never reaches it.
        await serve_as(central_listen, impostor, servers, certs, "site-fs")
        node.central_link._address = lambda: central_listen
        stub = node.central_link._stub()
        assert stub is not None
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.RouteCall(central_pb2.RouteCallRequest(), timeout=5)
        assert refused.value.code() == Code.UNAVAILABLE
        assert impostor.reached == 0
    finally:
        for server in servers:
            await server.stop(None)
        await node.stop()


def _adopt(monkeypatch: pytest.MonkeyPatch, files: tls.TlsFiles) -> None:
    """This test process dials as `files` (as a tool adopts its identity), undone after the test."""
    for name, value in files.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(tls.DIR_ENV, raising=False)


async def _code(call: Any) -> Code:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return Code.OK


async def test_tools_check_the_site_and_the_central_they_reach(
    listener: tuple[str, _Answering, list[grpc.aio.Server]], certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tools.province.status import site_summary
    from tools.simulation.demo import list_call_records

    address, answering, servers = listener
    _adopt(monkeypatch, certs.files("tool-cli"))
    # `vcc status` asking gz finds fs's certificate there, or central's address answered by a site:
    # refused at the handshake (UNAVAILABLE), nothing reached.
    await serve_as(address, answering, servers, certs, "site-fs")
    assert await _code(site_summary(address, 3.0, "gz")) == Code.UNAVAILABLE
    assert await _code(list_call_records(address)) == Code.UNAVAILABLE
    # The right identities at the same address get the request (this stand-in implements neither
    # method: UNIMPLEMENTED means the handshake passed).
    await serve_as(address, answering, servers, certs, "site-gz")
    assert await _code(site_summary(address, 3.0, "gz")) == Code.UNIMPLEMENTED
    await serve_as(address, answering, servers, certs, "central-1")
    assert await _code(list_call_records(address)) == Code.UNIMPLEMENTED


async def test_an_etcd_client_reaches_only_an_etcd_certificate(
    listener: tuple[str, _Answering, list[grpc.aio.Server]], certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    address, answering, servers = listener
    _adopt(monkeypatch, certs.files("site-gz"))
    host, _, port = address.rpartition(":")

    async def etcd_get() -> str:
        client = tls.etcd_client(host, int(port), timeout=3.0)
        try:
            await client.get(b"/vcc/gd/central/leader")
            return "ok"
        except Exception as exc:  # aetcd wraps the gRPC error in its own kinds
            return str(exc)
        finally:
            await tls.close_etcd_client(client)

    # A site's certificate (a good one of this province) where etcd should be: refused.
    await serve_as(address, answering, servers, certs, "site-fs")
    refused = await etcd_get()
    # etcd's certificate there (this stand-in serves no KV: the handshake passed).
    await serve_as(address, answering, servers, certs, "etcd-server")
    served = await etcd_get()
    assert "method not found" in served.lower(), served
    assert "method not found" not in refused.lower() and refused != "ok", refused
