"""The pair's PeerLink stream over mutual TLS: the same guarantees as a ServeCall leg's, for each
leg on it. An offer speaks only for the certificate's site, a duplicate offer id is refused
without touching the live leg (on the same stream, another one, or ServeCall), sizes are
bounded, bad input changes nothing and leaves the stream serving, and a broken stream ends every
guest call on it."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from site_node.app import SiteNode
from tests.security.conftest import Certs
from tests.security.test_site_identity import (
    _first_reply_blocking,
    agent_state,
    first_reply,
    node,
    offer,
    ready_agent,
)
from vcc import rpc
from vcc.v1 import common_pb2, peer_pb2, peer_pb2_grpc

__all__ = ["node"]  # the fixture, shared with test_site_identity

Code = grpc.StatusCode


def on_link(
    request: peer_pb2.ServeCallRequest, offer_id: str = "", traceparent: str = ""
) -> peer_pb2.PeerLinkRequest:
    named = offer_id or request.offer.offer_id
    return peer_pb2.PeerLinkRequest(offer_id=named, traceparent=traceparent, leg=request)


async def reply(
    link: grpc.aio.StreamStreamCall[peer_pb2.PeerLinkRequest, peer_pb2.PeerLinkResponse],
) -> peer_pb2.PeerLinkResponse:
    got = await asyncio.wait_for(link.read(), 10)
    assert isinstance(got, peer_pb2.PeerLinkResponse)
    return got


async def until_not_ringing(desk: grpc.aio.Channel, token: str, code: str) -> int:
    """The agent's state once it no longer rings (within 10 s), else its ringing state."""
    for _ in range(100):
        state, _ = await agent_state(desk, token, code)
        if state != common_pb2.AGENT_STATE_RINGING:
            return state
        await asyncio.sleep(0.1)
    return state


async def test_a_pair_stream_offers_only_its_own_site_s_calls(node: SiteNode, certs: Certs) -> None:
    desk, code, token = await ready_agent(node, certs)
    async with rpc.channel(node.address, tls=certs.files("site-fs")) as ch:
        link = peer_pb2_grpc.SitePeerServiceStub(ch).PeerLink(timeout=30)
        # fs's certificate claiming sz's call: refused on that offer, nothing reserved.
        await link.write(on_link(offer("sz")))
        got = await reply(link)
        assert got.WhichOneof("message") == "error" and got.error.code == "permission-denied"
        assert await agent_state(desk, token, code) == (common_pb2.AGENT_STATE_READY, "")
        # The stream goes on serving fs's own calls.
        await link.write(on_link(offer("fs", offer_id="fs-offer-1")))
        got = await reply(link)
        assert got.offer_id == "fs-offer-1" and got.leg.WhichOneof("message") == "reserved"
        link.cancel()
    # A desktop, a trunk or a tool cannot open a pair stream at all.
    for stem in ("desktop-robots", "trunk-gateway", "tool-cli"):
        status = await asyncio.to_thread(
            _first_reply_blocking, node.address, certs.files(stem), on_link(offer("sz")), "PeerLink"
        )
        assert status == Code.PERMISSION_DENIED, stem
    await desk.close()


async def test_a_duplicate_offer_id_leaves_the_live_leg_alone(node: SiteNode, certs: Certs) -> None:
    desk, code, token = await ready_agent(node, certs)
    async with rpc.channel(node.address, tls=certs.files("site-sz")) as ch:
        stub = peer_pb2_grpc.SitePeerServiceStub(ch)
        live = stub.PeerLink(timeout=60)
        await live.write(on_link(offer("sz")))
        got = await reply(live)
        assert got.offer_id == "sz-offer-1" and got.leg.WhichOneof("message") == "reserved"
        assert await agent_state(desk, token, code) == (common_pb2.AGENT_STATE_RINGING, "call-1")

        # The same offer id again: on the same stream, on a second pair stream, on ServeCall.
        await live.write(on_link(offer("sz", call_id="call-2")))
        got = await reply(live)
        assert got.offer_id == "sz-offer-1" and got.error.code == "offer-exists"
        other = stub.PeerLink(timeout=60)
        await other.write(on_link(offer("sz")))
        got = await reply(other)
        assert got.error.code == "offer-exists"
        other.cancel()
        assert await first_reply(node, certs, "site-sz", offer("sz")) == Code.ALREADY_EXISTS

        # The live leg is untouched: the agent still rings for it, and it still carries messages.
        assert await agent_state(desk, token, code) == (common_pb2.AGENT_STATE_RINGING, "call-1")
        gone = peer_pb2.ServeCallRequest(caller_gone=peer_pb2.CallerGone(reason="caller-hung-up"))
        await live.write(on_link(gone, offer_id="sz-offer-1"))
        assert await until_not_ringing(desk, token, code) != common_pb2.AGENT_STATE_RINGING
        live.cancel()
    await desk.close()


@pytest.mark.parametrize(
    "request_",
    [
        on_link(offer("sz", call_id="c" * 1_000_000)),
        on_link(offer("sz", offer_id="o" * 1_000_000)),
        on_link(offer("sz", purpose="p" * 10_000)),
        on_link(offer("sz"), traceparent="t" * 10_000),
        on_link(offer("sz"), offer_id="another-offer"),
    ],
    ids=["call-id", "offer-id", "purpose", "traceparent", "offer-id-mismatch"],
)
async def test_pair_stream_sizes_are_bounded(
    node: SiteNode, certs: Certs, request_: peer_pb2.PeerLinkRequest
) -> None:
    desk, code, token = await ready_agent(node, certs)
    async with rpc.channel(node.address, tls=certs.files("site-sz")) as ch:
        link = peer_pb2_grpc.SitePeerServiceStub(ch).PeerLink(timeout=30)
        await link.write(request_)
        got = await reply(link)
        assert got.WhichOneof("message") == "error", got
        # An offer id too long to name is not echoed back.
        assert len(got.offer_id) <= 128
        assert await agent_state(desk, token, code) == (common_pb2.AGENT_STATE_READY, "")
        # Nothing changed, and the stream still serves a good offer.
        await link.write(on_link(offer("sz", offer_id="sz-offer-9", call_id="call-9")))
        got = await reply(link)
        assert got.offer_id == "sz-offer-9" and got.leg.WhichOneof("message") == "reserved"
        link.cancel()
    await desk.close()


async def test_a_broken_pair_stream_ends_its_guest_calls(node: SiteNode, certs: Certs) -> None:
    desk, code, token = await ready_agent(node, certs)
    async with rpc.channel(node.address, tls=certs.files("site-sz")) as ch:
        link = peer_pb2_grpc.SitePeerServiceStub(ch).PeerLink(timeout=60)
        await link.write(on_link(offer("sz")))
        got = await reply(link)
        assert got.leg.WhichOneof("message") == "reserved"
        assert await agent_state(desk, token, code) == (common_pb2.AGENT_STATE_RINGING, "call-1")
        # The origin's end goes away without a word: the agent's call ends by itself.
        link.cancel()
    assert await until_not_ringing(desk, token, code) != common_pb2.AGENT_STATE_RINGING
    await desk.close()
