"""Recording channels are a board resource: with one channel and two answered SIP calls talking at
once, the first is recorded and the second goes on unrecorded, counted (a site node with its real
rtpengine, SIPp callers, agents answering on the desktop; no central: the index entry waits at the
site). And the pcap reader fed broken files: what cannot be read is refused, a truncated capture
keeps what came before the cut."""

from __future__ import annotations

import asyncio
import json
import struct
import wave
from pathlib import Path

import pytest

from site_node.app import SiteNode
from site_node.media.recording import RecordingError, pcap_to_wav, read_pcap
from tests.helpers import eventually
from tests.integration.support import Desktop
from tests.sip.conftest import sip_config_dict
from tools.province.etcd_server import EtcdServer
from tools.province.sipp import call_scenario, run_sipp
from vcc import rpc
from vcc.config import parse_province
from vcc.v1 import common_pb2


async def test_with_every_recording_channel_busy_an_answered_call_goes_on_unrecorded_and_is_counted(
    tmp_path: Path, etcd_server: EtcdServer, prompts_dir: Path
) -> None:
    raw = sip_config_dict(tmp_path, prompts_dir, etcd_server.endpoint)
    raw["sites"][0]["boards"].append({"id": "rec", "kind": "recording", "channels": 1})
    node = SiteNode(parse_province(raw), "gz")
    await node.start()
    assert node.sip is not None and node.recorder is not None and node.recordings_dir is not None
    general = next(a.code for a in node.site.agents if "general" in a.skills)
    billing = next(a.code for a in node.site.agents if "billing" in a.skills)
    desks = [Desktop(rpc.channel(node.address), code) for code in (general, billing)]
    try:
        for desk in desks:
            await desk.login()
            await desk.ready()
        first = asyncio.create_task(
            run_sipp(call_scenario("1"), node.sip.address, tmp_path / "first", hold_ms=5000, name="first")
        )
        await desks[0].answer_next()
        second = asyncio.create_task(
            run_sipp(call_scenario("2"), node.sip.address, tmp_path / "second", hold_ms=2500, name="second")
        )
        await desks[1].answer_next()
        results = [await first, await second]
        for result in results:
            assert result.ok, result.stdout + result.errors
        recorder = node.recorder

        async def kept() -> bool:
            return recorder.stats.recorded == 1

        await eventually(kept, what="the first call's recording kept")
        assert recorder.stats.unrecorded_no_channel == 1 and recorder.stats.failed == 0
        board = node.switchboard.boards["rec"]
        assert board.refused == 1 and board.busy == 0
        # One file and one index entry: the first call's, waiting for central (there is none here).
        first_id = results[0].vcc_call_ids[0]
        assert [p.name for p in node.recordings_dir.glob("*.wav")] == [f"{first_id}.wav"]
        [pending] = list((node.recordings_dir / "index" / "pending").glob("*.json"))
        entry = json.loads(pending.read_text())
        assert entry["call_id"] == first_id and entry["agent_codes"] == [general]
        # Both calls were answered and end with their records, recorded or not.
        answered = {
            e.call_id
            for _, e in await node.outbox.pending(10_000)
            if e.kind == common_pb2.CALL_EVENT_KIND_ANSWERED
        }
        assert answered == {first_id, results[1].vcc_call_ids[0]}
    finally:
        for desk in desks:
            await desk.close()
        await node.stop()


def _pcap(link: int, frames: list[tuple[int, bytes]]) -> bytes:
    """A pcap of (capture time in ms, frame)."""
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, link)
    for at_ms, frame in frames:
        out += struct.pack("<IIII", 1000 + at_ms // 1000, at_ms % 1000 * 1000, len(frame), len(frame)) + frame
    return out


def _rtp_over_ip(src: int, dst: int, seq: int, payload: bytes, pt: int = 8) -> bytes:
    rtp = struct.pack("!BBHII", 0x80, pt, seq, seq * 160, 7) + payload
    udp = struct.pack("!HHHH", src, dst, 8 + len(rtp), 0) + rtp
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes(4), bytes(4)) + udp


def test_the_pcap_reader_refuses_what_is_not_a_raw_ip_capture() -> None:
    with pytest.raises(RecordingError):
        read_pcap(b"RIFF....WAVEfmt " + bytes(40))
    with pytest.raises(RecordingError):
        read_pcap(_pcap(113, []))  # Linux cooked capture: not what rtpengine writes


def test_a_truncated_capture_keeps_what_came_before_the_cut_and_sorts_the_parties(tmp_path: Path) -> None:
    caller = [_rtp_over_ip(5000, 30000, i, bytes([0xD5 ^ 0x40]) * 160) for i in range(10)]
    agent = [_rtp_over_ip(6000, 30002, i, bytes([0xD5 ^ 0x20]) * 160) for i in range(10)]
    played = [_rtp_over_ip(30000, 5000, i, bytes([0x00]) * 160) for i in range(10)]  # sent out: not kept
    dtmf = [_rtp_over_ip(5000, 30000, 99, bytes(4), pt=101)]
    frames = [(i * 20, f) for i, trio in enumerate(zip(caller, agent, played, strict=True)) for f in trio]
    data = _pcap(101, [*frames, (200, dtmf[0])])
    cut = data[: len(data) - 30]  # the engine died while writing the last record
    (tmp_path / "c.pcap").write_bytes(cut)
    made = pcap_to_wav(tmp_path / "c.pcap", tmp_path / "c.wav", caller_port=30000)
    assert made.caller_packets == 10 and made.other_packets == 10
    with wave.open(str(tmp_path / "c.wav"), "rb") as w:
        assert w.getnchannels() == 2 and abs(w.getnframes() - 10 * 160) <= 160
        frames = w.readframes(w.getnframes())
    samples = struct.unpack(f"<{len(frames) // 2}h", frames)
    left, right = samples[0::2], samples[1::2]
    assert any(left) and any(right) and set(left) != set(right)
