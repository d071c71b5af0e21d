"""The caller's ear, as a media engine receives it: RFC 4733 key presses and G.711 speech.

Pure logic over two real UDP sockets on this host (no site): the packets are read as another
receiver would read them.
"""

from __future__ import annotations

import asyncio
import struct

from tools.province.rtp_ear import ALAW, PCMA, RtpEar, linear_to_alaw


async def _pair() -> tuple[RtpEar, RtpEar]:
    """Two ears, each the other's media engine (a first packet tells an ear where to send)."""
    a, b = await RtpEar.open(), await RtpEar.open()
    assert a.transport is not None and b.transport is not None
    a.transport.sendto(b"\x80\x00" + b"\x00" * 10, ("127.0.0.1", b.port))
    b.transport.sendto(b"\x80\x00" + b"\x00" * 10, ("127.0.0.1", a.port))
    for _ in range(200):
        if a.source is not None and b.source is not None:
            break
        await asyncio.sleep(0.01)
    a.packets.clear()
    b.packets.clear()
    return a, b


def _events(raw: list[bytes]) -> list[tuple[int, int, int, bool]]:
    """(seq, timestamp, event, end) of each telephone-event packet."""
    out = []
    for data in raw:
        seq, stamp = struct.unpack("!HI", data[2:8])
        event, flags, _ = struct.unpack("!BBH", data[12:16])
        out.append((seq, stamp, event, bool(flags & 0x80)))
    return out


class _Tap(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.raw: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.raw.append(data)


async def test_each_key_press_is_a_new_event_with_sequence_numbers_going_on() -> None:
    ear = await RtpEar.open()
    loop = asyncio.get_running_loop()
    transport, tap = await loop.create_datagram_endpoint(_Tap, local_addr=("127.0.0.1", 0))
    try:
        ear.source = transport.get_extra_info("sockname")
        await ear.send_digit("1")
        await ear.send_digit("1")  # the same key again: a second press, not a repeat of the first
        await ear.send_digit("#")
        for _ in range(200):
            if len(tap.raw) == 24:
                break
            await asyncio.sleep(0.01)
        events = _events(tap.raw)
    finally:
        transport.close()
        ear.close()
    assert len(events) == 24
    seqs = [seq for seq, *_ in events]
    # RFC 3550/4733: every packet its own sequence number, one more than the one before.
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(24)]
    presses = [events[i : i + 8] for i in (0, 8, 16)]
    stamps = [{stamp for _, stamp, _, _ in press} for press in presses]
    assert all(len(s) == 1 for s in stamps)  # one timestamp per press: the event's start
    assert len(set.union(*stamps)) == 3  # and a new one for each press
    assert [{e for _, _, e, _ in press} for press in presses] == [{1}, {1}, {11}]
    assert [end for *_, end in presses[0]] == [False] * 5 + [True] * 3


async def test_a_tone_said_is_heard_as_g711() -> None:
    a, b = await _pair()
    try:
        await a.speak(440, 0.2)
        for _ in range(200):
            if len(b.packets) >= 10:
                break
            await asyncio.sleep(0.01)
    finally:
        a.close()
        b.close()
    assert len(b.packets) == 10 and {pt for _, pt, _ in b.packets} == {PCMA}
    heard = b.audio()
    assert len(heard) == 1600 and max(heard) > 7000 and min(heard) < -7000


def test_a_law_round_trips_within_its_step() -> None:
    for sample in (-32000, -1000, -5, 0, 5, 1000, 32000):
        back = ALAW[linear_to_alaw(sample)]
        assert abs(back - sample) <= max(16, abs(sample) // 16)
