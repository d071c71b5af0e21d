"""A trunk group link (TrunkIngressService.Signalling) on a real site node: a bad signal gets an
error for its call reference alone and changes nothing else; a malformed link is refused and ends
its calls; the link cut ends every call on it; a stopping site ends every call on the link."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from site_node.app import SiteNode
from tests.helpers import eventually
from tools.province.etcd_server import EtcdServer
from tools.province.generate import DEFAULT_PASSWORD, SiteSpec, generate_province, hash_password
from tools.province.netutil import free_port
from vcc import rpc
from vcc.call_events import Outcome
from vcc.config import parse_province
from vcc.v1 import trunk_pb2, trunk_pb2_grpc

HASH = hash_password(DEFAULT_PASSWORD)
Code = grpc.StatusCode


class _Node:
    """The site node, stopped by the test or else at teardown."""

    def __init__(self, site: SiteNode) -> None:
        self.site = site
        self.stopped = False

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.site.stop()


@pytest.fixture
async def node(tmp_path: Path, etcd_server: EtcdServer) -> AsyncIterator[_Node]:
    config = generate_province(
        [SiteSpec("gz", "Guangzhou", trunk_channels=4, agents={"general": 2})],
        etcd_endpoint=etcd_server.endpoint,
        central_listen=f"127.0.0.1:{free_port()}",  # no central: records wait in the outbox
        database_url="sqlite+aiosqlite:///unused.db",
        password_hash=HASH,
        outbox_dir=tmp_path,
        ring_timeout_s=30,
    )
    site = _Node(SiteNode(parse_province(config), "gz"))
    await site.site.start()
    yield site
    await site.stop()


def ref() -> str:
    return uuid.uuid4().hex


def offer(call_ref: str, ani: str = "13800000001", dnis: str = "10000") -> trunk_pb2.CallSignal:
    return trunk_pb2.CallSignal(call_ref=call_ref, offer=trunk_pb2.CallOffer(ani=ani, dnis=dnis))


def hang_up(call_ref: str) -> trunk_pb2.CallSignal:
    return trunk_pb2.CallSignal(call_ref=call_ref, hang_up=trunk_pb2.CallerHangUp())


def digits(call_ref: str, keys: str = "1") -> trunk_pb2.CallSignal:
    return trunk_pb2.CallSignal(call_ref=call_ref, digits=trunk_pb2.CallerDigits(digits=keys))


class Link:
    """The gateway's end of one link, read by hand: every report kept by call reference."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.call = trunk_pb2_grpc.TrunkIngressServiceStub(channel).Signalling(timeout=120)
        self.progress: dict[str, list[str]] = {}
        self.errors: list[tuple[str, str]] = []
        self.messages = 0

    async def send(self, *signals: trunk_pb2.CallSignal) -> None:
        await self.call.write(trunk_pb2.SignallingRequest(signals=signals))

    async def until(self, done: Callable[[], bool], what: str) -> None:
        """Reads until `done()` (a bound of 30 s for a busy machine: a guarantee, not a figure)."""
        async with asyncio.timeout(30):
            while not done():
                message = await self.call.read()
                assert message is not grpc.aio.EOF, f"the link ended before {what}"
                assert isinstance(message, trunk_pb2.SignallingResponse)
                self.messages += 1
                for report in message.reports:
                    if report.WhichOneof("report") == "error":
                        self.errors.append((report.call_ref, report.error.code))
                    else:
                        kind = report.progress.WhichOneof("progress") or "?"
                        self.progress.setdefault(report.call_ref, []).append(kind)

    def has(self, call_ref: str, kind: str) -> Callable[[], bool]:
        return lambda: kind in self.progress.get(call_ref, [])


def ended_as(node: _Node, call_ref: str) -> Outcome | None:
    over = node.site.switchboard.ended_outcome(call_ref)
    return over[1] if over is not None else None


def settles(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def checked() -> bool:
        return check()

    return checked


async def test_a_bad_signal_gets_an_error_for_its_call_only(node: _Node) -> None:
    sb = node.site.switchboard
    async with rpc.channel(node.site.address) as ch:
        link = Link(ch)
        live = ref()
        await link.send(offer(live))
        await link.until(link.has(live, "prompt"), "the live call's menu")
        call_id = sb.call_for_key(live)
        assert call_id in sb.calls
        # All in one message: each is refused for its own reference, in order.
        bad = ref()
        await link.send(
            digits("nobody"),  # a reference the link never had
            offer(live, ani="13800000002"),  # a second offer under a live reference, other details
            trunk_pb2.CallSignal(call_ref="no-action"),  # no action
            trunk_pb2.CallSignal(digits=trunk_pb2.CallerDigits(digits="1")),  # no reference
            offer(bad, ani="138-0000"),  # an offer the site refuses: no call made
            trunk_pb2.CallSignal(call_ref="x" * 129, hang_up=trunk_pb2.CallerHangUp()),
            offer(live),  # the same offer again: idempotent, its last step again
        )
        await link.until(lambda: len(link.errors) >= 6 and link.progress[live].count("prompt") == 2, "errors")
        codes = dict(link.errors)
        assert [r for r, _ in link.errors] == ["nobody", live, "no-action", "", bad, ""]
        assert codes["nobody"] == "unknown-call-ref"
        assert codes[live] == "call-ref-live"
        assert codes["no-action"] == "action-required"
        assert codes[""] == "call-ref-invalid"
        assert codes[bad] and sb.call_for_key(bad) is None
        # Nothing changed for the live call: one call offered, and its caller still drives it.
        assert len(sb.calls) == 1 and sb.call_for_key(live) == call_id
        await link.send(hang_up(live))
        await link.until(link.has(live, "ended"), "the live call's end")
        assert ended_as(node, live) == Outcome.ABANDONED
        # Once over: a re-offer says how it ended and makes nothing; a late digit is no error.
        errors = len(link.errors)
        await link.send(digits(live), offer(live))
        await link.until(lambda: link.progress[live].count("ended") == 2, "the re-offer's answer")
        assert len(link.errors) == errors and sb.calls == {}
        link.call.cancel()


async def test_a_malformed_link_is_refused_and_ends_its_calls(node: _Node) -> None:
    async with rpc.channel(node.site.address) as ch:
        link = Link(ch)
        live = ref()
        await link.send(offer(live))
        await link.until(link.has(live, "accepted"), "the call's acceptance")
        await link.call.write(trunk_pb2.SignallingRequest())  # a message with no signal at all
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await link.until(lambda: False, "the refusal")
        assert refused.value.code() == Code.INVALID_ARGUMENT
    # The link's end is its caller hanging up.
    assert await eventually(settles(lambda: ended_as(node, live) == Outcome.ABANDONED), what="the call ended")
    assert node.site.switchboard.calls == {}


async def test_a_cut_link_hangs_up_every_caller_on_it(node: _Node) -> None:
    sb = node.site.switchboard
    async with rpc.channel(node.site.address) as ch:
        link = Link(ch)
        refs = [ref() for _ in range(3)]
        await link.send(*(offer(r) for r in refs))
        await link.until(lambda: all(link.has(r, "prompt")() for r in refs), "every call's menu")
        # Another link's call is not touched by this one's end.
        other = Link(ch)
        kept = ref()
        await other.send(offer(kept))
        await other.until(other.has(kept, "accepted"), "the other link's call")
        assert len(sb.calls) == 4
        link.call.cancel()  # the network cut (the client's cancel)
        assert await eventually(settles(lambda: len(sb.calls) == 1), what="the cut link's calls ended")
        assert all(ended_as(node, r) == Outcome.ABANDONED for r in refs)
        assert sb.call_for_key(kept) in sb.calls
        other.call.cancel()
    assert await eventually(settles(lambda: sb.calls == {}), what="the other link's call ended")


async def test_a_stopping_site_ends_every_call_on_the_link(node: _Node) -> None:
    async with rpc.channel(node.site.address) as ch:
        link = Link(ch)
        refs = [ref() for _ in range(2)]
        await link.send(*(offer(r) for r in refs))
        await link.until(lambda: all(link.has(r, "accepted")() for r in refs), "both calls accepted")
        stopping = asyncio.create_task(node.stop())
        await link.until(lambda: all(link.has(r, "ended")() for r in refs), "every call's end")
        # Then the link itself ends: the site is gone.
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await link.until(lambda: False, "the link's end")
        assert ended.value.code() in (Code.UNAVAILABLE, Code.CANCELLED)
        await stopping
