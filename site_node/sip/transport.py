"""The trunk's UDP socket: datagrams in, bytes out, and counts of what came and went."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

Address = tuple[str, int]
Handler = Callable[[bytes, Address], None]


@dataclass(slots=True)
class TransportStats:
    received: int = 0
    sent: int = 0
    handler_errors: int = 0


class UdpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._transport: asyncio.DatagramTransport | None = None
        self.stats = TransportStats()
        self.host = ""
        self.port = 0

    async def open(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self._transport = transport
        self.host, self.port = transport.get_extra_info("sockname")[:2]

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.stats.received += 1
        try:
            self._handler(data, (str(addr[0]), int(addr[1])))
        except Exception:
            # A bug on one datagram must not take the trunk down with it.
            self.stats.handler_errors += 1
            log.exception("SIP datagram from %s:%s not handled", addr[0], addr[1])

    def error_received(self, exc: Exception) -> None:
        log.debug("SIP socket error: %s", exc)

    def send(self, data: bytes, addr: Address) -> None:
        if self._transport is not None:
            self.stats.sent += 1
            self._transport.sendto(data, addr)
