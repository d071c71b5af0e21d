"""In-band digits: with `sip.media.inband_dtmf`, a caller who plays the tone pair of a digit (697 +
1209 Hz for 1, no RFC 4733 event) chooses the menu item as if it had sent the event; rtpengine
hears the tones (a real engine, SIPp streaming the tones as G.711)."""

from __future__ import annotations

import asyncio
import math
import struct
import subprocess
import wave
from pathlib import Path

from site_node.app import SiteNode
from tests.helpers import eventually
from tests.sip.conftest import sip_config_dict
from tools.province.etcd_server import EtcdServer
from tools.province.sipp import call_scenario, run_sipp
from vcc.config import parse_province
from vcc.v1 import common_pb2

# The DTMF pair of each key (ITU-T Q.23).
PAIRS = {"1": (697.0, 1209.0), "2": (697.0, 1336.0)}


def dtmf_alaw(folder: Path, digit: str) -> Path:
    """One key pressed for 0.2 s, then 1.8 s of silence, as raw A-law (SIPp loops it)."""
    low, high = PAIRS[digit]
    pcm = [int(6000 * (math.sin(2 * math.pi * low * i / 8000) + math.sin(2 * math.pi * high * i / 8000)))
           for i in range(1600)] + [0] * 14400  # fmt: skip
    wav = folder / f"dtmf-{digit}.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(struct.pack(f"<{len(pcm)}h", *pcm))
    raw = folder / f"dtmf-{digit}.al"
    subprocess.run(["sox", str(wav), "-t", "al", str(raw)], check=True)
    return raw


async def test_a_digit_played_as_tones_chooses_the_menu_item(
    tmp_path: Path, etcd_server: EtcdServer, prompts_dir: Path
) -> None:
    raw = sip_config_dict(tmp_path, prompts_dir, etcd_server.endpoint)
    raw["sites"][0]["sip"]["media"]["inband_dtmf"] = True
    node = SiteNode(parse_province(raw), "gz")
    await node.start()
    try:
        assert node.sip is not None
        tones = await asyncio.to_thread(dtmf_alaw, tmp_path, "2")
        result = await run_sipp(
            call_scenario("", stream=tones, events=False), node.sip.address, tmp_path / "sipp", hold_ms=4000
        )
        assert result.ok, result.stdout + result.errors
        [call_id] = result.vcc_call_ids

        async def digits() -> list[common_pb2.CallEvent] | None:
            events = [e for _, e in await node.outbox.pending(10_000) if e.call_id == call_id]
            return [e for e in events if e.kind == common_pb2.CALL_EVENT_KIND_DIGITS] or None

        [chosen, *_] = await eventually(digits, what="the digit heard in the caller's audio")
        assert dict(chosen.data).get("digits", "").startswith("2"), chosen
        queued = [e for _, e in await node.outbox.pending(10_000)
                  if e.call_id == call_id and e.kind == common_pb2.CALL_EVENT_KIND_QUEUED]  # fmt: skip
        assert queued and queued[0].skill_group == "billing"
    finally:
        await node.stop()
