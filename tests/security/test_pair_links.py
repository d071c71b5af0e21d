"""The origin's end of a pair's stream (PairLinks) against a real target site over mutual TLS:
a leg rides on it and is reserved; when the stream breaks every leg on it is lost at the origin
(the caller goes back to its queue) and ended at the target (the agent stops ringing); the
stream is re-opened at once, without waiting for the next offer, and the next leg rides on it."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc

from site_node.app import SiteNode
from site_node.callcontrol.domain import OfferRemote
from site_node.grpc_api.peer_pairs import PairLinks
from tests.security.conftest import Certs
from tests.security.test_pair_stream import until_not_ringing
from tests.security.test_site_identity import agent_state, node, ready_agent
from vcc import rpc
from vcc.tls import site_server
from vcc.v1 import common_pb2

__all__ = ["node"]  # the fixture, shared with test_site_identity


class Origin:
    """What PairLinks carries into the origin's switchboard, recorded: (operation, offer id, ...)."""

    def __init__(self) -> None:
        self.said: list[tuple[Any, ...]] = []
        self.sb = self

    site_id = "sz"

    def do(self, op: Any) -> list[Any]:
        return op(0.0)  # type: ignore[no-any-return]

    def loop_soon(self, action: Any) -> None:
        asyncio.get_running_loop().call_soon(action)

    def __getattr__(self, name: str) -> Any:
        def record(_now: float, offer_id: str = "", **kw: Any) -> list[Any]:
            self.said.append((name, offer_id, *kw.values()))
            return []

        return record

    async def told(self, name: str, offer_id: str) -> tuple[Any, ...]:
        for _ in range(200):
            found = [s for s in self.said if s[:2] == (name, offer_id)]
            if found:
                return found[0]
            await asyncio.sleep(0.05)
        raise AssertionError(f"{name} for {offer_id} never came; said {self.said}")


def leg(call_id: str) -> OfferRemote:
    return OfferRemote(
        offer_id=uuid.uuid4().hex,
        call_id=call_id,
        target_site_id="gz",
        decision_id="d",
        skill_group="general",
        priority=0,
        arrived_at=0.0,
        ani="13800000001",
        dnis="10000",
        attached=(),
        customer=None,
        purpose="overflow",
    )


async def test_a_broken_pair_stream_loses_its_legs_and_is_re_opened(node: SiteNode, certs: Certs) -> None:
    desk, code, token = await ready_agent(node, certs)
    origin = Origin()
    channels: list[grpc.aio.Channel] = []

    def channel_of(address: str, site_id: str) -> grpc.aio.Channel:
        channels.append(rpc.channel(address, tls=certs.files("site-sz"), expect=site_server(site_id)))
        return channels[-1]

    links = PairLinks(origin, lambda _site: node.address, channel_of)  # type: ignore[arg-type]
    try:
        first = leg("call-1")
        links.offer(first)
        assert (await origin.told("remote_reserved", first.offer_id))[2] == code
        assert await agent_state(desk, token, code) == (common_pb2.AGENT_STATE_RINGING, "call-1")
        broken = links._pairs["gz"]

        # The stream breaks under its leg: lost at the origin, ended at the target.
        broken._call.cancel()
        await origin.told("remote_lost", first.offer_id)
        assert await until_not_ringing(desk, token, code) != common_pb2.AGENT_STATE_RINGING

        # Re-opened by itself (no offer waiting for it), and up.
        for _ in range(100):
            again = links._pairs.get("gz")
            if again is not None and again is not broken and not again.closed:
                break
            await asyncio.sleep(0.05)
        assert again is not None and again is not broken
        await asyncio.wait_for(again.ready(), 10)

        # The agent is free again (wrap-up aside): the next leg rides on the new stream.
        for _ in range(100):
            if (await agent_state(desk, token, code))[0] == common_pb2.AGENT_STATE_READY:
                break
            await asyncio.sleep(0.1)
        second = leg("call-2")
        links.offer(second)
        await origin.told("remote_reserved", second.offer_id)
        assert second.offer_id in again.legs
    finally:
        await links.close()
        for ch in channels:
            await ch.close()
        await desk.close()
