"""`vcc bench bridge`: what a mixing bridge (site_node/media/bridge.py, one GStreamer process per
supervised or conferenced call) costs: CPU per bridged call and packets lost, with N bridges up
at once, each with three parties talking (barge-in: every leg hears the other two).

The parties are UDP sockets of this process sending G.711 A-law at 50 packets/s each; what each
leg is sent back is counted against what a mix of 20 ms packets should be over the window.
"""

from __future__ import annotations

import asyncio
import math
import struct
import time
from pathlib import Path
from typing import Any, cast

import psutil

from site_node.callcontrol.supervision import who_hears
from site_node.media.bridge import Leg, MixBridge, free_rtp_port

ROLES = ("caller", "agent", "supervisor")
PACKET_S = 0.02


class _Party(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.received += max(0, len(data) - 12)  # G.711: one byte per sample


def _payload(hz: float) -> bytes:
    # One 20 ms A-law frame of a tone (a constant frame: the mixer's cost does not depend on it).
    step = 2 * math.pi * hz / 8000
    out = bytearray()
    for k in range(160):
        x = int(6000 * math.sin(step * k))
        sign = 0x80 if x >= 0 else 0
        v = min(abs(x), 32635) >> 3
        code = v >> 1 if v < 32 else ((v.bit_length() - 5) << 4) | ((v >> (v.bit_length() - 5)) & 0x0F)
        out.append((code | sign) ^ 0x55)
    return bytes(out)


async def bench_bridge(run_dir: Path, calls: int, seconds: float) -> dict[str, Any]:
    await asyncio.to_thread(run_dir.mkdir, parents=True, exist_ok=True)
    loop = asyncio.get_running_loop()
    bridges: list[MixBridge] = []
    parties: list[list[tuple[_Party, int]]] = []
    frame = {role: _payload(hz) for role, hz in zip(ROLES, (440.0, 1000.0, 1700.0), strict=True)}
    try:
        for i in range(calls):
            legs, mine = [], []
            for _role in ROLES:
                party = _Party()
                await loop.create_datagram_endpoint(lambda p=party: p, local_addr=("127.0.0.1", 0))  # type: ignore[misc]
                assert party.transport is not None
                listen = free_rtp_port()
                legs.append(Leg(_role, listen, party.transport.get_extra_info("sockname")[1]))
                mine.append((party, listen))
            bridge = MixBridge(f"bench-{i}", legs, run_dir / f"bridge-{i}.log")
            await bridge.start(who_hears("barge"))
            bridges.append(bridge)
            parties.append(mine)
        procs = [psutil.Process(b.pid) for b in bridges if b.pid is not None]
        stop = time.monotonic() + seconds + 1.0
        seq = 0

        async def talk() -> None:
            nonlocal seq
            while time.monotonic() < stop:
                for mine in parties:
                    for (party, listen), role in zip(mine, ROLES, strict=True):
                        assert party.transport is not None
                        header = struct.pack("!BBHII", 0x80, 8, seq & 0xFFFF, seq * 160, hash(role) & 0xFFFF)
                        party.transport.sendto(header + frame[role], ("127.0.0.1", listen))
                seq += 1
                await asyncio.sleep(PACKET_S)

        talking = asyncio.create_task(talk())
        await asyncio.sleep(1.0)  # the mixers started their clocks
        for p in procs:
            p.cpu_percent(None)
        got_before = sum(p.received for mine in parties for p, _ in mine)
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - t0
        cpu = sum(p.cpu_percent(None) for p in procs)
        got = sum(p.received for mine in parties for p, _ in mine) - got_before
        await talking
        expected = calls * len(ROLES) * elapsed * 8000
        return {
            "bridged_calls": calls,
            "seconds": round(elapsed, 2),
            "bridges_cpu_percent_of_a_core": round(cpu, 1),
            "cpu_per_bridged_call_percent": round(cpu / calls, 2),
            "mixed_samples_received": got,
            "mixed_samples_expected": round(expected),
            "loss": round(max(0.0, 1 - got / expected), 4) if expected else None,
            "load_average": [round(x, 2) for x in psutil.getloadavg()],
        }
    finally:
        for bridge in bridges:
            await bridge.stop()
        for mine in parties:
            for party, _ in mine:
                if party.transport is not None:
                    party.transport.close()
