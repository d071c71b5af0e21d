"""The fault proxy and the dial map, on loopback: forwards, cuts both ways, blackholes, silences,
heals; and keepalive on both ends of a gRPC stream across a silent cut."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.helpers import eventually
from tools.province.faultproxy import FaultProxy, Plan, ProxyHost, command, plan_for
from tools.province.generate import SiteSpec, generate_province
from tools.province.netutil import free_port
from vcc import rpc
from vcc.config import parse_province


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()


async def _dial(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, _, port = address.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def _round_trip(address: str, payload: bytes = b"hello") -> bytes:
    reader, writer = await _dial(address)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), 2)
    finally:
        writer.close()


async def test_forwards_then_cut_breaks_open_connections_and_holds_new_ones(echo: str) -> None:
    proxy = FaultProxy(echo)
    address = await proxy.start()
    try:
        assert await _round_trip(address) == b"hello"
        reader, writer = await _dial(address)
        writer.write(b"x")
        assert await asyncio.wait_for(reader.readexactly(1), 2) == b"x"

        proxy.cut()
        # The open connection breaks at once (reset or EOF), it does not hang.
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 2)
        writer.close()
        # A new connection is accepted and blackholed: nothing ever comes back.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(_round_trip(address), 0.5)

        proxy.heal()
        assert await _round_trip(address, b"again") == b"again"
    finally:
        await proxy.stop()


async def test_refusing_cut_closes_new_connections_at_once(echo: str) -> None:
    proxy = FaultProxy(echo)
    address = await proxy.start()
    try:
        proxy.cut(blackhole=False)
        reader, writer = await _dial(address)
        writer.write(b"x")
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 2)
        writer.close()
    finally:
        await proxy.stop()


async def test_latency_delays_but_keeps_order(echo: str) -> None:
    proxy = FaultProxy(echo, latency_s=0.05)
    address = await proxy.start()
    try:
        reader, writer = await _dial(address)
        for chunk in (b"a", b"b", b"c"):
            writer.write(chunk)
            await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(3), 2) == b"abc"
        writer.close()
    finally:
        await proxy.stop()


def test_dial_map_sends_mapped_addresses_to_their_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(rpc.DIAL_MAP_ENV, json.dumps({"127.0.0.1:7000": "127.0.0.1:17000"}))
    assert rpc.dialled("127.0.0.1:7000") == "127.0.0.1:17000"
    assert rpc.dialled("127.0.0.1:7001") == "127.0.0.1:7001"
    monkeypatch.setenv(rpc.DIAL_MAP_ENV, "[1, 2]")
    with pytest.raises(ValueError, match="VCC_DIAL_MAP"):
        rpc.dialled("127.0.0.1:7000")
    monkeypatch.delenv(rpc.DIAL_MAP_ENV)
    assert rpc.dialled("127.0.0.1:7000") == "127.0.0.1:7000"


def _province() -> dict[str, Any]:
    return generate_province(
        [
            SiteSpec("gz", "gz", trunk_channels=2, agents={"general": 1}),
            SiteSpec("sz", "sz", 2, {"general": 1}),
        ],
        etcd_endpoint="127.0.0.1:2379",
        central_listen="127.0.0.1:7000",
        database_url="sqlite+aiosqlite:///central.db",
        outbox_dir=Path("outbox"),
        password_hash="$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$ZmFrZWhhc2hmYWtlaGFzaA",
    )


def test_plan_cuts_a_site_from_central_etcd_and_peers_in_both_directions() -> None:
    config = parse_province(_province(), "province.yaml")
    gz, sz = config.site("gz").listen, config.site("sz").listen
    plan = plan_for(config, ["gz"])
    routes = {(link.dialler, link.target) for link in plan.links}
    assert routes == {("gz", "127.0.0.1:7000"), ("gz", "127.0.0.1:2379"), ("gz", sz), ("sz", gz)}
    env = plan.site_env()
    gz_map = json.loads(env["gz"][rpc.DIAL_MAP_ENV])
    assert set(gz_map) == {"127.0.0.1:7000", "127.0.0.1:2379", sz}
    assert set(json.loads(env["sz"][rpc.DIAL_MAP_ENV])) == {gz}  # sz reaches central directly
    assert Plan.from_json(json.loads(json.dumps(plan.to_json()))) == plan


async def test_proxy_host_cuts_only_the_links_of_the_named_site(echo: str) -> None:
    from tools.province.faultproxy import Link

    plan = Plan(
        f"127.0.0.1:{free_port()}",
        [
            Link("gz", echo, f"127.0.0.1:{free_port()}", ("gz",)),
            Link("sz", echo, f"127.0.0.1:{free_port()}", ("sz",)),
        ],
        sites=["gz", "sz"],
    )
    host = ProxyHost(plan)
    await host.start()
    try:
        gz, sz = plan.links[0].listen, plan.links[1].listen
        reply = await command(plan.control, "cut", "gz")
        assert reply["cut"] == ["gz"]
        assert await _round_trip(sz) == b"hello"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(_round_trip(gz), 0.5)
        await command(plan.control, "heal", "gz")

        async def through() -> bool:
            return await _round_trip(gz) == b"hello"

        await eventually(through, timeout_s=5, what="gz's link healed")
        with pytest.raises(Exception, match="no fault proxies"):
            await command(plan.control, "cut", "xx")
    finally:
        await host.stop()


async def test_silent_cut_keeps_open_connections_but_forwards_nothing(echo: str) -> None:
    proxy = FaultProxy(echo)
    address = await proxy.start()
    try:
        reader, writer = await _dial(address)
        writer.write(b"x")
        assert await asyncio.wait_for(reader.readexactly(1), 2) == b"x"

        proxy.cut(silent=True)
        writer.write(b"lost")
        await writer.drain()  # accepted by the proxy's TCP: the sender learns nothing
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(1), 0.5)
        assert not reader.at_eof() and not writer.is_closing()
        # New connections are held, as in any cut.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(_round_trip(address), 0.5)

        proxy.heal()
        # What was dropped cannot be replayed: the silenced connection is reset, new ones flow.
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 2)
        writer.close()
        assert await _round_trip(address, b"again") == b"again"
    finally:
        await proxy.stop()


async def test_both_ends_of_a_grpc_stream_notice_a_silent_cut(echo: str) -> None:
    """Keepalive both ways (vcc.rpc): the client's pings break its call, the server's pings
    cancel its handler; and pings at the agreed rate never earn a GOAWAY "too_many_pings"."""
    server_gone = asyncio.Event()

    async def chat(requests: AsyncIterator[bytes], _context: object) -> AsyncIterator[bytes]:
        try:
            async for message in requests:
                yield message
        finally:
            server_gone.set()

    server = rpc.Server([])
    server.grpc.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "vcc.test.Echo", {"Chat": grpc.stream_stream_rpc_method_handler(chat)}
            ),
        )
    )
    port = await server.start("127.0.0.1:0")
    proxy = FaultProxy(f"127.0.0.1:{port}")
    address = await proxy.start()
    try:
        async with rpc.channel(address) as channel:
            call: Any = channel.stream_stream("/vcc.test.Echo/Chat")()
            await call.write(b"hello")
            assert await call.read() == b"hello"
            # The period under test, not a wait for a condition: a stream idle for three
            # keepalive intervals, pinged by both ends, must still be up.
            await asyncio.sleep(3 * rpc.KEEPALIVE_TIME_MS / 1000)
            await call.write(b"still")
            assert await call.read() == b"still"
            # And idle again, as a call being talked is: whatever pings that data set off are
            # answered before the cut, so only keepalive can tell either end.
            await asyncio.sleep(rpc.KEEPALIVE_TIME_MS / 1000)

            loop = asyncio.get_running_loop()
            cut_at = loop.time()
            proxy.cut(silent=True)
            with pytest.raises(grpc.aio.AioRpcError) as broken:
                await asyncio.wait_for(call.read(), 60)
            client_s = loop.time() - cut_at
            assert broken.value.code() == grpc.StatusCode.UNAVAILABLE
            await asyncio.wait_for(server_gone.wait(), 60)
            server_s = loop.time() - cut_at
            print(f"silent cut noticed: client {client_s:.2f} s, server {server_s:.2f} s")
    finally:
        await proxy.stop()
        await server.stop(0)


async def test_a_server_slow_to_answer_the_handshake_is_still_reached(echo: str) -> None:
    """A connection attempt gets gRPC's own connect timeout, not the 100 ms of the fast
    reconnect back-off (vcc.rpc): a server whose HTTP/2 SETTINGS come late (as from a process
    starved of CPU on a busy machine) answers the first RPC instead of failing it UNAVAILABLE."""

    async def hello(request: bytes, _context: object) -> bytes:
        return request

    server = rpc.Server([])
    server.grpc.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "vcc.test.Echo", {"Hello": grpc.unary_unary_rpc_method_handler(hello)}
            ),
        )
    )
    port = await server.start("127.0.0.1:0")
    # Every chunk, the server's SETTINGS included, held 0.5 s: five times the old attempt limit.
    proxy = FaultProxy(f"127.0.0.1:{port}", latency_s=0.5)
    address = await proxy.start()
    try:
        async with rpc.channel(address) as channel:
            reply = await channel.unary_unary("/vcc.test.Echo/Hello")(
                b"hello", timeout=rpc.DEFAULT_DEADLINE_S
            )
            assert reply == b"hello"
    finally:
        await proxy.stop()
        await server.stop(0)
