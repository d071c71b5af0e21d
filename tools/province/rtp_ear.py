"""The caller's ear: an RTP socket that keeps what arrives (G.711 decoded on demand) and sends
RFC 4733 key presses back to the media engine. Written for the tests and `vcc call --sip` apart
from the site's own media code, so a check made with it does not trust the part it checks."""

from __future__ import annotations

import asyncio
import struct
from typing import cast

from tools.province.sip import free_udp_port

PCMU, PCMA = 0, 8


def alaw_to_linear(byte: int) -> int:
    a = byte ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a & 0x80 else -t


def ulaw_to_linear(byte: int) -> int:
    u = ~byte & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return (0x84 - t) if u & 0x80 else (t - 0x84)


ALAW = [alaw_to_linear(b) for b in range(256)]
ULAW = [ulaw_to_linear(b) for b in range(256)]


class RtpEar(asyncio.DatagramProtocol):
    """Receives RTP on an even port; keeps (seq, payload type, payload) of each packet."""

    def __init__(self) -> None:
        self.packets: list[tuple[int, int, bytes]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        # Where the media engine sends from: a digit sent back there comes from the caller's own
        # RTP address, so the engine keeps sending to this ear.
        self.source: tuple[str | object, int] | None = None
        self._seq = 999
        self._presses = 0

    @classmethod
    async def open(cls) -> RtpEar:
        ear = cls()
        loop = asyncio.get_running_loop()
        while True:
            port = free_udp_port()
            if port % 2 == 0:
                break
        await loop.create_datagram_endpoint(lambda: ear, local_addr=("127.0.0.1", port))
        ear.port = port
        return ear

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            return
        self.source = addr
        cc = data[0] & 0x0F
        seq = struct.unpack("!H", data[2:4])[0]
        self.packets.append((seq, data[1] & 0x7F, data[12 + 4 * cc :]))

    async def send_digit(self, digit: str, payload_type: int = 101) -> None:
        """One RFC 4733 key press (100 ms, then its three end packets) to the media engine. Each
        press is a new event (its own timestamp, sequence numbers going on): a receiver takes a
        repeated timestamp as the same press again."""
        assert self.transport is not None and self.source is not None, "nothing heard yet"
        event = "0123456789*#".index(digit)
        ssrc = 0x5EC0DE
        self._presses += 1
        stamp = 160_000 + self._presses * 8000
        for i in range(8):
            end = i >= 5
            duration = min(i + 1, 5) * 160
            self._seq = (self._seq + 1) & 0xFFFF
            header = struct.pack(
                "!BBHII", 0x80, payload_type | (0x80 if i == 0 else 0), self._seq, stamp, ssrc
            )
            body = struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration)
            self.transport.sendto(header + body, self.source)
            await asyncio.sleep(0.02)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def audio(self) -> list[int]:
        """What was heard, in sequence order, as 16-bit samples (G.711 packets only)."""
        out: list[int] = []
        for _, pt, payload in sorted(self.packets, key=lambda p: p[0]):
            table = ALAW if pt == PCMA else ULAW if pt == PCMU else None
            if table is not None:
                out.extend(table[b] for b in payload)
        return out
