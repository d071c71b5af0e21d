"""One site node with its real rtpengine (no central: records and index entries wait at the site),
a recording board of one channel and in-band digits on, shared by:

- recording channels are a board resource: with two answered SIP calls talking at once, the first
  is recorded and the second goes on unrecorded, counted (SIPp callers, desktop answers);
- in-band digits: a caller who plays the tone pair of a digit (697 + 1336 Hz for 2, no RFC 4733
  event offered) chooses the menu item as if it had sent the event; rtpengine hears the tones.

And the pcap reader fed broken files: what cannot be read is refused, a truncated capture keeps
what came before the cut."""

from __future__ import annotations

import asyncio
import json
import math
import struct
import subprocess
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

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


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(
    tmp_path_factory: pytest.TempPathFactory, etcd_server: EtcdServer, prompts_dir: Path
) -> AsyncIterator[SiteNode]:
    raw = sip_config_dict(tmp_path_factory.mktemp("site"), prompts_dir, etcd_server.endpoint)
    raw["sites"][0]["boards"].append({"id": "rec", "kind": "recording", "channels": 1})
    raw["sites"][0]["sip"]["media"]["inband_dtmf"] = True
    started = SiteNode(parse_province(raw), "gz")
    await started.start()
    yield started
    await started.stop()


@pytest.mark.asyncio(loop_scope="module")
async def test_with_every_recording_channel_busy_an_answered_call_goes_on_unrecorded_and_is_counted(
    node: SiteNode, tmp_path: Path
) -> None:
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


@pytest.mark.asyncio(loop_scope="module")
async def test_a_digit_played_as_tones_chooses_the_menu_item(node: SiteNode, tmp_path: Path) -> None:
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


def _tone_packets(src: int, dst: int, hz: float, count: int, ssrc: int) -> list[bytes]:
    from tools.province.rtp_ear import linear_to_alaw

    step = 2 * math.pi * hz / 8000
    out = []
    for i in range(count):
        pcm = bytes(linear_to_alaw(int(8000 * math.sin(step * (i * 160 + k)))) for k in range(160))
        rtp = struct.pack("!BBHII", 0x80, 8, i, 1000 + i * 160, ssrc) + pcm
        udp = struct.pack("!HHHH", src, dst, 8 + len(rtp), 0) + rtp
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes(4), bytes(4))
        out.append(ip + udp)
    return out


def test_a_voice_the_engine_handled_in_bursts_is_recorded_whole_by_its_rtp_clock(tmp_path: Path) -> None:
    """On a busy machine rtpengine handles packets in bursts after a stall: ten packets (200 ms of
    voice) captured within a millisecond. Placed by capture time they landed on each other (most of
    the agent's side lost, what was left out of phase); placed by their RTP timestamps the tone is
    whole, every half second of it, and in phase over the whole call."""
    from tests.sip.audio import tone_level

    caller = _tone_packets(5000, 30000, 440.0, 150, ssrc=1)
    agent = _tone_packets(6000, 30002, 1000.0, 150, ssrc=2)
    # The caller's packets captured on time; the agent's in bursts of ten, every 200 ms, and a
    # little late (2-5 ms of jitter) inside each burst.
    frames = [(i * 20, f) for i, f in enumerate(caller)]
    frames += [(40 + (i // 10) * 200 + (i % 10) // 3, f) for i, f in enumerate(agent)]
    (tmp_path / "b.pcap").write_bytes(_pcap(101, sorted(frames, key=lambda x: x[0])))
    made = pcap_to_wav(tmp_path / "b.pcap", tmp_path / "b.wav", caller_port=30000)
    assert made.caller_packets == 150 and made.other_packets == 150
    with wave.open(str(tmp_path / "b.wav"), "rb") as w:
        data = w.readframes(w.getnframes())
    samples = struct.unpack(f"<{len(data) // 2}h", data)
    left, right = list(samples[0::2]), list(samples[1::2])
    # Every half second of the agent's three seconds holds its tone; the caller's side only its own.
    windows = [right[i : i + 4000] for i in range(800, 3 * 8000 - 4000, 4000)]
    assert all(tone_level(w, 1000.0) > 2000 for w in windows), [round(tone_level(w, 1000.0)) for w in windows]
    assert tone_level(left[:20000], 440.0) > 2000 and tone_level(left[:20000], 1000.0) < 100
    # In phase over the whole of it: one coherent tone (a burst placed by capture time breaks it).
    assert tone_level(right[800:23000], 1000.0) > 2000
