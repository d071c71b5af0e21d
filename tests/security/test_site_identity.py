"""A site node over mutual TLS: the peer path speaks only for the certificate's site, a duplicate
offer leaves the live leg alone, sizes are bounded, and each client kind stays in its lane."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from site_node.app import SiteNode
from tests.security.conftest import Certs
from tools.province.etcd_server import EtcdServer
from tools.province.generate import DEFAULT_PASSWORD, SiteSpec, generate_province, hash_password
from tools.province.netutil import free_port
from vcc import rpc
from vcc.config import parse_province
from vcc.tls import TlsFiles, channel_credentials
from vcc.v1 import common_pb2, cti_pb2, cti_pb2_grpc, peer_pb2, peer_pb2_grpc, trunk_pb2, trunk_pb2_grpc

Code = grpc.StatusCode
HASH = hash_password(DEFAULT_PASSWORD)


@pytest.fixture
async def node(tmp_path: Path, etcd_server: EtcdServer, certs: Certs) -> AsyncIterator[SiteNode]:
    config = generate_province(
        [SiteSpec(s, s.upper(), trunk_channels=3, agents={"general": 1}) for s in ("gz", "sz", "fs")],
        etcd_endpoint=etcd_server.endpoint,
        central_listen=f"127.0.0.1:{free_port()}",
        database_url="sqlite+aiosqlite:///unused.db",
        password_hash=HASH,
        outbox_dir=tmp_path,
        ring_timeout_s=60,
    )
    site = SiteNode(parse_province(config), "gz", certs.files("site-gz"))
    await site.start()
    yield site
    await site.stop()


async def ready_agent(node: SiteNode, certs: Certs) -> tuple[grpc.aio.Channel, str, str]:
    ch = rpc.channel(node.address, tls=certs.files("desktop-robots"))
    stub = cti_pb2_grpc.AgentDesktopServiceStub(ch)
    code = node.site.agents[0].code
    login = await stub.Login(
        cti_pb2.LoginRequest(idempotency_key=uuid.uuid4().hex, agent_code=code, password=DEFAULT_PASSWORD),
        timeout=10,
    )
    await stub.SetState(
        cti_pb2.SetStateRequest(
            idempotency_key=uuid.uuid4().hex,
            session_token=login.session_token,
            state=common_pb2.AGENT_STATE_READY,
        ),
        timeout=5,
    )
    return ch, code, login.session_token


async def agent_state(ch: grpc.aio.Channel, token: str, code: str) -> tuple[int, str]:
    reply = await cti_pb2_grpc.AgentDesktopServiceStub(ch).GetAgent(
        cti_pb2.GetAgentRequest(session_token=token), timeout=5
    )
    return reply.agent.state, reply.agent.call_id


def offer(
    origin: str, offer_id: str = "sz-offer-1", call_id: str = "call-1", purpose: str = "overflow"
) -> peer_pb2.ServeCallRequest:
    return peer_pb2.ServeCallRequest(
        offer=peer_pb2.RemoteOffer(
            call_id=call_id,
            origin_site_id=origin,
            offer_id=offer_id,
            skill_group="general",
            ani="13800000001",
            dnis="10000",
            purpose=purpose,
        )
    )


async def first_reply(node: SiteNode, certs: Certs, stem: str, request: peer_pb2.ServeCallRequest) -> object:
    """The first reply to an offer, or the status that ended the call. On gRPC's blocking API: a
    refusal may come before the offer is written (the interceptor aborts at once), and grpc.aio
    then reports INTERNAL in place of the server's status (grpc/grpc#36066; seen on a busy
    machine); the blocking API reports the server's."""
    return await asyncio.to_thread(_first_reply_blocking, node.address, certs.files(stem), request)


def _first_reply_blocking(
    address: str, files: TlsFiles, request: object, method: str = "ServeCall"
) -> object:
    """`method`: ServeCall, or PeerLink (the pair's stream, tests/security/test_pair_stream.py)."""
    done = threading.Event()

    def requests() -> Iterator[object]:
        yield request
        done.wait(10)  # the leg stays open (not half-closed) until the reply is read

    with grpc.secure_channel(address, channel_credentials(files), options=rpc.CHANNEL_OPTIONS) as ch:
        replies = getattr(peer_pb2_grpc.SitePeerServiceStub(ch), method)(requests(), timeout=10)
        try:
            return next(replies)
        except grpc.RpcError as exc:
            return exc.code()
        finally:
            done.set()
            replies.cancel()


async def test_a_site_offers_only_its_own_calls(node: SiteNode, certs: Certs) -> None:
    desk, code, token = await ready_agent(node, certs)
    # fs's certificate claiming to be sz: refused, nothing reserved.
    assert await first_reply(node, certs, "site-fs", offer("sz")) == Code.PERMISSION_DENIED
    assert await agent_state(desk, token, code) == (common_pb2.AGENT_STATE_READY, "")
    # A desktop or a trunk cannot open a peer leg at all.
    for stem in ("desktop-robots", "trunk-gateway", "tool-cli"):
        assert await first_reply(node, certs, stem, offer("sz")) == Code.PERMISSION_DENIED
    assert await agent_state(desk, token, code) == (common_pb2.AGENT_STATE_READY, "")
    await desk.close()


async def test_a_duplicate_offer_is_refused_and_the_live_leg_stays(node: SiteNode, certs: Certs) -> None:
    desk, code, token = await ready_agent(node, certs)
    async with rpc.channel(node.address, tls=certs.files("site-sz")) as ch:
        live = peer_pb2_grpc.SitePeerServiceStub(ch).ServeCall(timeout=30)
        await live.write(offer("sz"))
        reserved = await live.read()
        assert reserved.WhichOneof("message") == "reserved"
        assert await agent_state(desk, token, code) == (common_pb2.AGENT_STATE_RINGING, "call-1")

        # The same offer id again (by the same site, on a second stream): refused.
        assert await first_reply(node, certs, "site-sz", offer("sz")) == Code.ALREADY_EXISTS
        # The live leg is untouched: the agent still rings for it, and it still carries messages.
        assert await agent_state(desk, token, code) == (common_pb2.AGENT_STATE_RINGING, "call-1")
        await live.write(peer_pb2.ServeCallRequest(caller_gone=peer_pb2.CallerGone(reason="caller-hung-up")))
        await live.done_writing()
        while await live.read() is not grpc.aio.EOF:
            pass
    state, _ = await agent_state(desk, token, code)
    assert state != common_pb2.AGENT_STATE_RINGING
    await desk.close()


@pytest.mark.parametrize(
    "request_",
    [
        offer("sz", call_id="c" * 1_000_000),
        offer("sz", offer_id="o" * 1_000_000),
        offer("sz", purpose="p" * 10_000),
        peer_pb2.ServeCallRequest(
            offer=peer_pb2.RemoteOffer(
                call_id="call-2",
                origin_site_id="sz",
                offer_id="sz-offer-2",
                skill_group="general",
                attached_data={f"k{i}": "v" * 100 for i in range(100)},
            )
        ),
    ],
    ids=["call-id", "offer-id", "purpose", "attached-data"],
)
async def test_peer_sizes_are_bounded(
    node: SiteNode, certs: Certs, request_: peer_pb2.ServeCallRequest
) -> None:
    desk, code, token = await ready_agent(node, certs)
    assert await first_reply(node, certs, "site-sz", request_) == Code.INVALID_ARGUMENT
    assert await agent_state(desk, token, code) == (common_pb2.AGENT_STATE_READY, "")
    await desk.close()


async def test_each_client_kind_stays_in_its_lane(node: SiteNode, certs: Certs) -> None:
    # A site certificate cannot place trunk calls nor log agents in; a trunk cannot use the desktop.
    async with rpc.channel(node.address, tls=certs.files("site-sz")) as ch:
        call = cti_pb2_grpc.AgentDesktopServiceStub(ch).Login(
            cti_pb2.LoginRequest(idempotency_key="k", agent_code="1001", password=DEFAULT_PASSWORD), timeout=5
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == Code.PERMISSION_DENIED
        stream = trunk_pb2_grpc.TrunkIngressServiceStub(ch).PlaceCall(timeout=5)
        await stream.write(
            trunk_pb2.PlaceCallRequest(offer=trunk_pb2.CallOffer(idempotency_key="k", ani="1", dnis="10000"))
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stream.read()
        assert info.value.code() == Code.PERMISSION_DENIED
        # Nor open a trunk link (the same kind as PlaceCall: the trunk's).
        link = trunk_pb2_grpc.TrunkIngressServiceStub(ch).Signalling(timeout=5)
        trunk_offer = trunk_pb2.CallOffer(ani="13800000001", dnis="10000")
        signal = trunk_pb2.CallSignal(call_ref="k", offer=trunk_offer)
        await link.write(trunk_pb2.SignallingRequest(signals=[signal]))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await link.read()
        assert info.value.code() == Code.PERMISSION_DENIED
    assert node.switchboard.calls == {}


async def test_a_message_from_another_city_speaks_only_for_its_site(
    tmp_path: Path, etcd_server: EtcdServer, certs: Certs
) -> None:
    """DeliverMessage: only a site's certificate, only for itself and one of its agents, to an agent
    here; bad input refused with nothing kept; a retried key kept once."""
    config = generate_province(
        [SiteSpec(s, s.upper(), trunk_channels=3, agents={"general": 1}) for s in ("gz", "sz")],
        etcd_endpoint=etcd_server.endpoint,
        central_listen=f"127.0.0.1:{free_port()}",
        database_url="sqlite+aiosqlite:///unused.db",
        password_hash=HASH,
        outbox_dir=tmp_path,
        desktop=True,
    )
    province = parse_province(config)
    here, there = province.site("gz").agents[0].code, province.site("sz").agents[0].code
    site = SiteNode(province, "gz", certs.files("site-gz"))
    await site.start()
    try:
        assert site.desk is not None

        def message(**kw: str) -> peer_pb2.DeliverMessageRequest:
            fields = {"from_site_id": "sz", "sender": there, "to": here, "text": "hello", "message_key": "k1"}
            return peer_pb2.DeliverMessageRequest(**{**fields, **kw})

        async def deliver(stem: str, request: peer_pb2.DeliverMessageRequest) -> object:
            async with rpc.channel(site.address, tls=certs.files(stem)) as ch:
                try:
                    return await peer_pb2_grpc.SitePeerServiceStub(ch).DeliverMessage(request, timeout=10)
                except grpc.aio.AioRpcError as exc:
                    return exc.code()

        assert await deliver("site-fs", message()) == Code.PERMISSION_DENIED  # fs posing as sz
        for stem in ("desktop-robots", "trunk-gateway", "tool-cli"):
            assert await deliver(stem, message()) == Code.PERMISSION_DENIED
        assert await deliver("site-sz", message(sender=here)) == Code.INVALID_ARGUMENT  # not sz's agent
        assert await deliver("site-sz", message(message_key="")) == Code.INVALID_ARGUMENT
        assert await deliver("site-sz", message(text=" ")) == Code.INVALID_ARGUMENT
        assert await deliver("site-sz", message(text="x" * 501)) == Code.INVALID_ARGUMENT
        assert await deliver("site-sz", message(to="9999")) == Code.NOT_FOUND
        assert site.desk.messages.inbox(here) == []

        first = await deliver("site-sz", message())
        again = await deliver("site-sz", message())  # the same key: kept once
        assert isinstance(first, peer_pb2.DeliverMessageResponse) and first == again
        [kept] = site.desk.messages.inbox(here)
        assert (kept.sender, kept.to, kept.text) == (there, (here,), "hello")
    finally:
        await site.stop()
