"""The caller's ear and voice: an RTP socket that keeps what arrives (G.711 decoded on demand),
sends RFC 4733 key presses and says tones back to the media engine. Written for the tests and
`vcc call --sip` apart from the site's own media code, so a check made with it does not trust the
part it checks."""

from __future__ import annotations

import asyncio
import math
import struct
import sys
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


def linear_to_alaw(sample: int) -> int:
    """G.711 A-law of one 16-bit sample (the nearest code, by the decoding table)."""
    sign = 0x80 if sample >= 0 else 0x00
    x = min(abs(sample), 32635) >> 3
    if x < 32:
        code = x >> 1
    else:
        exp = x.bit_length() - 5
        code = (exp << 4) | ((x >> exp) & 0x0F)
    return (code | sign) ^ 0x55


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
        # Voice packets said so far (`speak`): one stream, its sequence and clock going on from
        # one tone to the next (a receiver's jitter buffer drops a stream that starts again).
        self._spoken = 0

    @classmethod
    async def open(cls, port: int = 0) -> RtpEar:
        """An ear on `port` (0: an even port that is free now)."""
        ear = cls()
        loop = asyncio.get_running_loop()
        while not port:
            port = free_udp_port()
            if port % 2:
                port = 0
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

    async def speak(
        self, hz: float, seconds: float, amplitude: int = 8000, *, to: tuple[str, int] | None = None
    ) -> None:
        """Say a tone (G.711 A-law, 20 ms packets) to the media engine, as a caller talks; `to`: to
        another address than the one the engine sends from (a mixer sends from other ports than
        it listens on)."""
        dest = to or self.source
        assert self.transport is not None and dest is not None, "nothing heard yet"
        ssrc, step = 0x7A1C, 2 * math.pi * hz / 8000
        for i in range(self._spoken, self._spoken + int(seconds * 50)):
            pcm = [int(amplitude * math.sin(step * (i * 160 + k))) for k in range(160)]
            header = struct.pack("!BBHII", 0x80, PCMA, (5000 + i) & 0xFFFF, (i * 160) & 0xFFFFFFFF, ssrc)
            self.transport.sendto(header + bytes(linear_to_alaw(x) for x in pcm), dest)
            self._spoken = i + 1
            await asyncio.sleep(0.02)

    async def speak_apart(self, hz: float, seconds: float, amplitude: int = 8000) -> None:
        """Say a tone from a process of its own on this ear's socket (shared by its descriptor):
        the caller keeps its pace when the test's event loop, shared with the site node, is busy."""
        assert self.transport is not None and self.source is not None, "nothing heard yet"
        sock = self.transport.get_extra_info("socket")
        host, port = str(self.source[0]), int(self.source[1])
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _SPEAKER, str(sock.fileno()), host, str(port), str(hz), str(seconds),
            str(amplitude), pass_fds=(sock.fileno(),), stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    async def speaker(self, hz: float, seconds: float, amplitude: int = 8000) -> Speaker:
        """Like `speak_apart`, but the tone can be changed while it talks (`Speaker.say`): each
        phase of a call said in its own tone tells, in what a party heard, which phase it heard."""
        assert self.transport is not None and self.source is not None, "nothing heard yet"
        sock = self.transport.get_extra_info("socket")
        host, port = str(self.source[0]), int(self.source[1])
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _SPEAKER, str(sock.fileno()), host, str(port), str(hz), str(seconds),
            str(amplitude), pass_fds=(sock.fileno(),), stdin=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return Speaker(proc)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def audio_between(self, start: int, end: int) -> list[int]:
        """What was heard between two counts of packets received, as 16-bit samples (G.711)."""
        out: list[int] = []
        for _, pt, payload in self.packets[start:end]:
            table = ALAW if pt == PCMA else ULAW if pt == PCMU else None
            if table is not None:
                out.extend(table[b] for b in payload)
        return out

    def audio(self) -> list[int]:
        """What was heard, in sequence order, as 16-bit samples (G.711 packets only)."""
        out: list[int] = []
        for _, pt, payload in sorted(self.packets, key=lambda p: p[0]):
            table = ALAW if pt == PCMA else ULAW if pt == PCMU else None
            if table is not None:
                out.extend(table[b] for b in payload)
        return out


class Speaker:
    """A caller's tone from its own process; `say` changes the tone from the next packet on."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def say(self, hz: float) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{hz}\n".encode())
        await self.proc.stdin.drain()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


# The speaker process: G.711 A-law tone packets every 20 ms, paced by the clock (not by sleeps);
# a line on its stdin (when it has one) is the tone from the next packet on.
_SPEAKER = """
import math, select, socket, struct, sys, time
fd, host, port, hz, seconds, amp = sys.argv[1:]
s = socket.socket(fileno=int(fd))
hz, amp, n = float(hz), int(amp), int(float(seconds) * 50)
def alaw(x):
    sign = 0x80 if x >= 0 else 0
    v = min(abs(x), 32635) >> 3
    code = v >> 1 if v < 32 else ((v.bit_length() - 5) << 4) | ((v >> (v.bit_length() - 5)) & 0x0F)
    return (code | sign) ^ 0x55
control = sys.stdin
step = 2 * math.pi * hz / 8000
t0 = time.monotonic()
for i in range(n):
    if control is not None and select.select([control], [], [], 0)[0]:
        line = control.readline()
        if not line:
            control = None
        elif line.strip():
            hz = float(line)
            step = 2 * math.pi * hz / 8000
    pcm = bytes(alaw(int(amp * math.sin(step * (i * 160 + k)))) for k in range(160))
    s.sendto(struct.pack("!BBHII", 0x80, 8, (5000 + i) & 0xFFFF, i * 160, 0x7A1C) + pcm, (host, int(port)))
    delay = t0 + (i + 1) * 0.02 - time.monotonic()
    if delay > 0:
        time.sleep(delay)
s.detach()
"""
