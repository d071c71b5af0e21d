"""rtpengine's ng control protocol: `<cookie> <bencoded dict>` over UDP, one reply per request.

Every request has a deadline and a bounded retry (tenacity). A retry re-sends the same cookie:
rtpengine answers a cookie it has seen from its cache instead of running the command twice, so
a lost reply never doubles an offer.

At most `window` requests are out at once; the others wait their turn here (bounded too). One
rtpengine thread reads the ng socket and runs its commands one after the other: a burst of a few
hundred requests (50 new calls a second after a stall of the site or the engine) overflowed the
socket's receive queue (silent drops) and left the rest queued past their deadline, whose retries
queued more (docs/BENCHMARKS.md, SIP). A request's deadline starts when it is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Mapping

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from site_node.media.bencode import BencodeError, Decoded, Value, decode, encode

log = logging.getLogger(__name__)

ATTEMPTS = 3
# Requests out at once: well inside the engine's ng receive queue (212 KB by default, about 2 KB a
# datagram as the kernel counts it), and enough to keep its one control thread busy.
WINDOW = 32


class MediaError(Exception):
    """The media engine did not do what was asked."""

    id = "media-error"


class MediaTimeout(MediaError):
    """No reply within the deadline, after every attempt: the engine counts as gone."""

    id = "media-engine-unreachable"


class MediaRefused(MediaError):
    """The engine answered `result: error` (its reason in the message)."""

    id = "media-refused"


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, client: NgClient) -> None:
        self._client = client

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self._client._received(data)


class NgClient:
    def __init__(
        self,
        address: str,
        timeout_s: float = 0.5,
        attempts: int = ATTEMPTS,
        window: int = WINDOW,
        turn_timeout_s: float | None = None,
    ) -> None:
        host, port = address.rsplit(":", 1)
        self.target = (host, int(port))
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.window = window
        # How long a request may wait for its turn: by default what it may take once sent.
        self.turn_timeout_s = timeout_s * attempts if turn_timeout_s is None else turn_timeout_s
        self._slots = asyncio.Semaphore(window)
        # Requests in flight now and at most so far (the bench reports them), and turns waited.
        self.in_flight = 0
        self.most_in_flight = 0
        self.waited = 0
        self.timeouts = 0
        self.queued = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._pending: dict[bytes, asyncio.Future[dict[str, Decoded]]] = {}

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), remote_addr=self.target)
        self._transport = transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(MediaTimeout("ng client closed"))
        self._pending.clear()

    def _received(self, data: bytes) -> None:
        cookie, _, body = data.partition(b" ")
        fut = self._pending.get(cookie)
        if fut is None or fut.done():
            return  # a late reply to a request already answered or given up
        try:
            reply = decode(body)
        except BencodeError as exc:
            fut.set_exception(MediaError(f"undecodable reply: {exc}"))
            return
        if not isinstance(reply, dict):
            fut.set_exception(MediaError("reply is not a dictionary"))
            return
        fut.set_result(reply)

    async def request(self, command: str, **args: Value) -> dict[str, Decoded]:
        """Send one command; its reply dict. MediaTimeout when the engine stays silent."""
        message: dict[str, Value] = {"command": command, **args}
        cookie = secrets.token_hex(8).encode()
        payload = cookie + b" " + encode(message)
        if self._slots.locked():
            self.waited += 1
        self.queued += 1
        try:
            async with asyncio.timeout(self.turn_timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise MediaTimeout(
                f"rtpengine {self.target}: {command} not sent, {self.window} requests unanswered"
            ) from None
        finally:
            self.queued -= 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            reply = await self._attempts(command, cookie, payload)
        finally:
            self.in_flight -= 1
            self._slots.release()
        result = reply.get("result")
        if log.isEnabledFor(logging.DEBUG) and command != "ping":
            log.debug("ng %s %s -> %s", command, _ids(args), _summary(reply))
        if result == b"error":
            reason = reply.get("error-reason", b"")
            raise MediaRefused(f"{command}: {_text(reason)}")
        if result not in (b"ok", b"pong", None):
            log.debug("rtpengine %s: result %r", command, result)
        return reply

    @property
    def busy(self) -> bool:
        """A whole window out and as many again waiting: new work (a new call) should wait."""
        return self.queued >= self.window

    async def _attempts(self, command: str, cookie: bytes, payload: bytes) -> dict[str, Decoded]:
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.attempts),
                wait=wait_fixed(0.0),
                retry=retry_if_exception_type(TimeoutError),
                reraise=True,
            ):
                with attempt:
                    return await self._once(cookie, payload)
        except TimeoutError:
            raise MediaTimeout(
                f"rtpengine {self.target}: no reply to {command} after {self.attempts} tries"
            ) from None
        raise AssertionError("unreachable: tenacity stops by raising")  # pragma: no cover

    async def _once(self, cookie: bytes, payload: bytes) -> dict[str, Decoded]:
        if self._transport is None:
            raise MediaTimeout("ng client not open")
        fut: asyncio.Future[dict[str, Decoded]] = asyncio.get_running_loop().create_future()
        self._pending[cookie] = fut
        try:
            self._transport.sendto(payload)
            try:
                async with asyncio.timeout(self.timeout_s):
                    return await asyncio.shield(fut)
            except TimeoutError:
                self.timeouts += 1
                raise
        finally:
            if self._pending.get(cookie) is fut and not fut.done():
                fut.cancel()
            self._pending.pop(cookie, None)
            with contextlib.suppress(asyncio.CancelledError, MediaError):
                if fut.done() and not fut.cancelled():
                    fut.exception()

    async def ping(self) -> bool:
        try:
            reply = await self.request("ping")
        except MediaError:
            return False
        return reply.get("result") == b"pong"


def _ids(args: Mapping[str, Value]) -> str:
    """A request's parties and flags, for the debug log (the SDP by its audio port only)."""
    shown = [f"{k}={_text(v) if isinstance(v, bytes) else v}" for k, v in args.items()
             if k in ("call-id", "from-tag", "to-tag", "flags", "file")]  # fmt: skip
    sdp = args.get("sdp")
    if isinstance(sdp, bytes | str):
        shown.append(f"sdp={_audio(sdp)}")
    return " ".join(shown)


def _summary(reply: Mapping[str, Decoded]) -> str:
    sdp = reply.get("sdp")
    port = f" sdp={_audio(sdp)}" if isinstance(sdp, bytes) else ""
    return f"{_text(reply.get('result'))}{port}"


def _audio(sdp: bytes | str) -> str:
    """`host:port` of an SDP's audio stream (its last c= line before m=audio)."""
    body = sdp.decode(errors="replace") if isinstance(sdp, bytes) else sdp
    host, port = "?", "?"
    for line in body.splitlines():
        if line.startswith("c=IN IP4 "):
            host = line[9:].strip()
        elif line.startswith("m=audio "):
            port = line.split()[1]
            break
    return f"{host}:{port}"


def _text(value: Decoded | None) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def text(reply: Mapping[str, Decoded], key: str) -> str:
    """A string field of a reply ('' when missing)."""
    value = reply.get(key)
    return value.decode(errors="replace") if isinstance(value, bytes) else ""
