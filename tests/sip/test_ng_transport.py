"""The ng client's transport: never more requests out at once than its window, each answered once,
and a turn that never comes is a bounded, clear failure (loopback UDP, a scripted engine).

The real rtpengine behind it is exercised by every SIP test and by `vcc bench sip`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import pytest

from site_node.media.bencode import decode, encode
from site_node.media.ng import MediaTimeout, NgClient
from tests.helpers import eventually


class ScriptedEngine(asyncio.DatagramProtocol):
    """Answers each cookie after `delay_s` (or never), counting what is out at once."""

    def __init__(self, delay_s: float | None) -> None:
        self.delay_s = delay_s
        self.transport: asyncio.DatagramTransport | None = None
        self.outstanding: set[bytes] = set()
        self.most_outstanding = 0
        self.received: list[bytes] = []
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        cookie, _, body = data.partition(b" ")
        self.received.append(cookie)
        if self.delay_s is None or cookie in self.outstanding:
            return  # silent, or a retry of a request already being answered
        self.outstanding.add(cookie)
        self.most_outstanding = max(self.most_outstanding, len(self.outstanding))
        message = decode(body)
        assert isinstance(message, dict)
        seq = message["seq"]
        assert isinstance(seq, int)
        task = asyncio.get_running_loop().create_task(self._reply(cookie, seq, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _reply(self, cookie: bytes, seq: int, addr: tuple[str | object, int]) -> None:
        assert self.delay_s is not None and self.transport is not None
        await asyncio.sleep(self.delay_s)
        self.outstanding.discard(cookie)
        self.transport.sendto(cookie + b" " + encode({"result": "ok", "seq": seq}), addr)


def _busy(client: NgClient) -> bool:
    return client.busy  # read afresh each time (it changes under the awaits between)


async def _true(condition: bool) -> bool:
    return condition


async def _engine(delay_s: float | None) -> tuple[ScriptedEngine, str]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: ScriptedEngine(delay_s), local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    return protocol, f"127.0.0.1:{port}"


@pytest.fixture
async def slow_engine() -> AsyncIterator[tuple[ScriptedEngine, str]]:
    engine, address = await _engine(0.005)
    yield engine, address
    assert engine.transport is not None
    engine.transport.close()


async def test_a_burst_never_has_more_requests_out_than_the_window_and_each_gets_its_own_reply(
    slow_engine: tuple[ScriptedEngine, str],
) -> None:
    engine, address = slow_engine
    # A generous deadline: what is asserted is the window, not a time.
    client = NgClient(address, timeout_s=30.0, window=8)
    await client.open()
    try:
        replies = await asyncio.gather(*(client.request("offer", seq=i) for i in range(300)))
    finally:
        client.close()
    assert [r["seq"] for r in replies] == list(range(300))
    assert engine.most_outstanding <= 8
    assert client.most_in_flight <= 8 and client.in_flight == 0
    assert len(engine.received) == 300  # no retries were needed: nothing sent was left to time out


async def test_a_turn_that_never_comes_fails_clearly_and_the_waiting_request_is_never_sent() -> None:
    engine, address = await _engine(None)  # an engine that never answers
    client = NgClient(address, timeout_s=0.5, attempts=2, window=1, turn_timeout_s=0.05)
    await client.open()
    try:
        first = asyncio.ensure_future(client.request("offer", seq=1))
        await eventually(
            lambda: _true(client.in_flight == 1), timeout_s=1.0, interval_s=0.001, what="first sent"
        )
        assert not _busy(client)
        second = asyncio.ensure_future(client.request("offer", seq=2))
        await eventually(
            lambda: _true(client.queued == 1), timeout_s=1.0, interval_s=0.001, what="second queued"
        )
        assert _busy(client)  # a window out and as much waiting: new calls are turned away
        with pytest.raises(MediaTimeout, match="not sent"):
            await second
        assert not _busy(client)
        with pytest.raises(MediaTimeout, match="after 2 tries"):
            await first
    finally:
        client.close()
        assert engine.transport is not None
        engine.transport.close()
    # Only the first request reached the engine (twice: the same cookie, the bounded retry).
    assert len(engine.received) == 2 and len(set(engine.received)) == 1
    assert client.in_flight == 0


async def test_each_command_is_in_the_debug_log_with_its_parties_and_media_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What a diagnosis of a call's voice reads (VCC_LOG_LEVEL=DEBUG): the command, its call and
    tags, and where the SDP sent puts the audio; pings are left out."""
    engine, address = await _engine(0.0)
    client = NgClient(address, timeout_s=1.0)
    await client.open()
    try:
        sdp = "v=0\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40222 RTP/AVP 8\r\n"
        with caplog.at_level("DEBUG", logger="site_node.media.ng"):
            await client.request(
                "offer", seq=1, sdp=sdp, **{"call-id": "c1", "from-tag": "t1", "to-tag": "t2"}
            )
            await client.request("ping", seq=2)
        lines = [r.getMessage() for r in caplog.records if r.name == "site_node.media.ng"]
        assert lines == ["ng offer call-id=c1 from-tag=t1 to-tag=t2 sdp=127.0.0.1:40222 -> ok"], lines
    finally:
        client.close()
        assert engine.transport is not None
        engine.transport.close()
