"""Voicemail with sound over SIP: a SIPp caller reaches a flow that ends in voicemail and says a
1 kHz tone for a few seconds; the site records the caller's side on rtpengine (the call
control's recording channel) and keeps it as the message's mono WAV. The saved message holds the
caller's tone (the same check finds none in the spoken prompt), and the agent the message is
assigned to fetches the same bytes with VoicemailService; anyone else is refused."""

from __future__ import annotations

import asyncio
import math
import struct
import subprocess
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from site_node.app import SiteNode
from site_node.media.prompts import flow_prompt_name
from tests.helpers import eventually
from tests.integration.support import Desktop
from tests.sip.audio import read_wav
from tests.sip.conftest import sip_config_dict
from tests.sip.test_flow_prompts import publish_as
from tools.province.etcd_server import EtcdServer
from tools.province.prompts import build_prompts
from tools.province.sipp import call_scenario, run_sipp
from vcc import rpc
from vcc.config import parse_province
from vcc.ivr.validate import load_flow
from vcc.v1 import voicemail_pb2, voicemail_pb2_grpc

pytestmark = [pytest.mark.timeout(120)]

PREFIX = "/vcc-voicemail-audio"
TONE_HZ = 1000.0
GREETING = "Please leave your message after the tone."
FLOW = f"""
id: leave-word
version: 1
languages: [en]
start: message
on_fail: message
key_prompt: key
prompts:
  key: {{en: ", press {{key}}."}}
  greeting: {{en: "{GREETING}"}}
nodes:
  message: {{kind: voicemail, prompt: greeting, box: general}}
"""
CATALOG = """
services:
  - id: leave-word
    name: {en: Leave a word}
    numbers: ["10000"]
    flow: leave-word
    cities: [gz]
    skill_groups: [general]
"""


@pytest.fixture
async def node(tmp_path_factory: pytest.TempPathFactory, etcd_server: EtcdServer) -> AsyncIterator[SiteNode]:
    tmp = tmp_path_factory.mktemp("voicemail-audio")
    prompts = tmp / "prompts"
    raw = sip_config_dict(tmp, prompts, etcd_server.endpoint)
    raw["etcd"]["prefix"] = PREFIX
    raw["sites"][0]["boards"].append({"id": "rec", "kind": "recording", "channels": 2})
    config = parse_province(raw)
    flow = load_flow(FLOW)
    build_prompts(config, prompts, flows=[flow])
    await publish_as(etcd_server, PREFIX, config.province.id, flow, CATALOG)
    started = SiteNode(config, "gz")
    await started.start()

    async def has_flow() -> bool:
        return started.flows.current("leave-word") is not None and started.flows.catalog is not None

    await eventually(has_flow, what="the site holds the flow and the catalog")
    yield started
    await started.stop()


def tone_alaw(folder: Path) -> Path:
    """Two seconds of a 1 kHz tone as raw A-law (SIPp streams it in a loop)."""
    pcm = [int(8000 * math.sin(2 * math.pi * TONE_HZ * i / 8000)) for i in range(16000)]
    wav = folder / "tone.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(struct.pack(f"<{len(pcm)}h", *pcm))
    raw = folder / "tone.al"
    subprocess.run(["sox", str(wav), "-t", "al", str(raw)], check=True)
    return raw


def tone_share(samples: list[int], hz: float = TONE_HZ) -> float:
    """The share of the sound's energy at `hz` (Goertzel over 20 ms blocks): near 1 for a pure
    tone, small for speech or silence."""
    block, total, at_tone = 160, 0.0, 0.0
    coeff = 2 * math.cos(2 * math.pi * hz / 8000)
    for start in range(0, len(samples) - block + 1, block):
        s1 = s2 = 0.0
        energy = 0.0
        for x in samples[start : start + block]:
            s1, s2 = x + coeff * s1 - s2, s1
            energy += x * x
        power = s1 * s1 + s2 * s2 - coeff * s1 * s2
        at_tone += 2 * power / block
        total += energy
    return at_tone / total if total else 0.0


async def test_the_callers_voice_is_the_saved_message_and_its_agent_fetches_it(
    node: SiteNode, tmp_path: Path
) -> None:
    assert node.sip is not None and node.recorder is not None and node.recordings_dir is not None
    tone = await asyncio.to_thread(tone_alaw, tmp_path)
    result = await run_sipp(
        call_scenario("", stream=tone, settle_ms=0), node.sip.address, tmp_path / "sipp", hold_ms=4000
    )
    assert result.ok, result.stdout + result.errors
    [call_id] = result.vcc_call_ids
    message_id = f"{call_id}-vm"
    saved = node.recordings_dir / "voicemail" / f"{message_id}.wav"

    async def kept() -> bool:
        return saved.is_file()

    await eventually(kept, what="the message's WAV made from rtpengine's capture")
    message = node.switchboard.flows.voicemail.box.get(message_id)
    assert message.state == "new" and message.recording == f"voicemail/{message_id}.wav"
    voice = read_wav(saved)  # mono, 8 kHz, 16 bit (read_wav checks)
    assert len(voice) >= 2 * 8000, len(voice)  # seconds of it, not a packet or two
    assert tone_share(voice) > 0.8, tone_share(voice)
    # The check tells a tone from speech: the greeting the caller heard is not the message.
    assert node.sip.hear.prompts_dir is not None
    greeting = node.sip.hear.prompts_dir / f"{flow_prompt_name('leave-word', 'greeting', GREETING, 'en')}.wav"
    assert tone_share(read_wav(greeting)) < 0.3
    # No call recording was made for it (nobody talked with the caller), and the channel is back.
    assert not list(node.recordings_dir.glob("*.wav")) and node.switchboard.boards["rec"].busy == 0

    general = [a.code for a in node.site.agents if "general" in a.skills]
    billing = next(a.code for a in node.site.agents if "general" not in a.skills)
    async with rpc.channel(node.address) as ch:
        box = voicemail_pb2_grpc.VoicemailServiceStub(ch)
        desk, outsider = Desktop(ch, general[0]), Desktop(ch, billing)
        await desk.login()
        await outsider.login()

        async def fetch(token: str) -> bytes:
            request = voicemail_pb2.FetchVoicemailAudioRequest(session_token=token, message_id=message_id)
            return b"".join([c.data async for c in box.FetchVoicemailAudio(request, timeout=10)])

        with pytest.raises(grpc.aio.AioRpcError) as early:
            await fetch(desk.token)  # not taken yet
        assert early.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        await box.TakeVoicemail(
            voicemail_pb2.TakeVoicemailRequest(session_token=desk.token, message_id=message_id), timeout=5
        )
        assert await fetch(desk.token) == saved.read_bytes()
        with pytest.raises(grpc.aio.AioRpcError) as other:
            await fetch(outsider.token)
        assert other.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            request = voicemail_pb2.FetchVoicemailAudioRequest(session_token=desk.token, message_id="nope-vm")
            await box.FetchVoicemailAudio(request, timeout=10).read()
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        await box.PlayVoicemail(
            voicemail_pb2.PlayVoicemailRequest(session_token=desk.token, message_id=message_id), timeout=5
        )
        done = await box.FinishVoicemail(
            voicemail_pb2.FinishVoicemailRequest(session_token=desk.token, message_id=message_id), timeout=5
        )
        assert done.message.state == "done"
        await desk.close()
        await outsider.close()
