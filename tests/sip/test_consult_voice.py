"""A consultation with a colleague of the same site carries voice: the serving agent's phone
(baresip, 1000 Hz) consults a colleague whose phone (baresip, 1700 Hz) is rung onto the call's
bridge, while the caller (an RTP socket, 440 Hz) is held; then all three are conferenced, then the
colleague keeps the caller. What each party heard is checked for the others' tones (GStreamer's
audiomixer mixes, rtpengine pairs, Python carries no audio)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from site_node.app import SiteNode
from tests.helpers import eventually
from tests.integration.support import Desktop
from tests.sip.audio import peak_level, steady_level
from tests.sip.voice import (
    dial,
    dumps,
    hang_up,
    heard_wav,
    phone,
    read_dump,
    start_phone,
    stop_phones,
)
from tools.province.rtp_ear import RtpEar
from tools.province.sipp import SippResult
from vcc import rpc
from vcc.v1 import common_pb2, cti_pb2

pytestmark = [pytest.mark.timeout(120)]

CALLER_HZ, AGENT_HZ, COLLEAGUE_HZ = 440.0, 1000.0, 1700.0
HEARD, SILENT = 400.0, 120.0
PHASE_S = 2.5
EDGE_S = 0.6


def levels(samples: list[int]) -> dict[float, float]:
    """Each tone's mean level over the half seconds of `samples`, and (as `-hz`) its loudest half
    second: a tone heard is loud on average, one not heard is quiet in every half second (one
    Goertzel over a stretch let pieces of a tone out of phase cancel: docs/RELIABILITY.md)."""
    tones = (CALLER_HZ, AGENT_HZ, COLLEAGUE_HZ)
    return {hz: round(steady_level(samples, hz)) for hz in tones} | {
        -hz: round(peak_level(samples, hz)) for hz in tones
    }


async def test_a_consultation_with_a_colleague_here_its_conference_and_completion_carry_voice(
    sip_node: SiteNode, tmp_path: Path
) -> None:
    assert sip_node.sip is not None and sip_node.registrar is not None and sip_node.phones is not None
    voice, phones_here = sip_node.consult_voice, sip_node.phones
    assert voice is not None
    sb, registrar, sip = sip_node.switchboard, sip_node.registrar, sip_node.sip.address
    agent = next(a.code for a in sip_node.site.agents if "general" in a.skills)
    colleague = next(a.code for a in sip_node.site.agents if "billing" in a.skills)
    phones = [
        await start_phone(phone(tmp_path / f"phone-{code}", code, sip, hz))
        for code, hz in ((agent, AGENT_HZ), (colleague, COLLEAGUE_HZ))
    ]
    desk_a, desk_b = (
        Desktop(rpc.channel(sip_node.address), agent),
        Desktop(rpc.channel(sip_node.address), colleague),
    )
    ear = await RtpEar.open()
    caller: asyncio.Task[SippResult] | None = None
    talking: asyncio.Task[None] | None = None
    phases: dict[str, tuple[float, float, int, int]] = {}
    try:

        async def registered() -> bool:
            return registrar.phone_of(agent) is not None and registrar.phone_of(colleague) is not None

        await eventually(registered, what="both phones registered")
        for desk in (desk_a, desk_b):
            await desk.login()
            await desk.ready()
        caller = await dial(ear, sip, tmp_path / "sipp")
        await ear.send_digit("1")

        async def answered() -> bool:
            return phones_here.answered == 1

        await eventually(answered, timeout_s=30, what="the agent's phone answered")
        talking = asyncio.create_task(ear.speak_apart(CALLER_HZ, 40))
        [call] = list(sb.calls.values())
        t0 = 0.0

        async def consult(n: int) -> None:
            nonlocal t0
            await desk_a.transfer(call.call_id, cti_pb2.TRANSFER_KIND_CONSULT, agent_code=colleague)

            async def bridged() -> bool:
                return voice.stats.bridged == n

            await eventually(bridged, timeout_s=20, what="the colleague's phone on the bridge")
            await desk_a.transfer_stage("consult-connected")  # the phone's answer is the colleague's
            t0 = time.monotonic()

        async def phase(name: str) -> None:
            await asyncio.sleep(0.5)  # the bridge (re)started, the pairing done
            start, split = time.monotonic() - t0, len(ear.packets)
            await asyncio.sleep(PHASE_S)
            phases[name] = (start, time.monotonic() - t0, split, len(ear.packets))

        await consult(1)
        await phase("consult")
        await desk_a.stub.CancelTransfer(
            cti_pb2.CancelTransferRequest(idempotency_key=uuid.uuid4().hex, session_token=desk_a.token,
                                          call_id=call.call_id), timeout=5,
        )  # fmt: skip

        async def back() -> bool:
            return voice.stats.returned == 1 and call.call_id not in phones_here.consult_legs

        await eventually(back, timeout_s=20, what="the caller back with the agent, the colleague hung up")
        await phase("cancelled")
        await consult(2)
        await desk_a.stub.Conference(
            cti_pb2.ConferenceRequest(idempotency_key=uuid.uuid4().hex, session_token=desk_a.token,
                                      call_id=call.call_id), timeout=5,
        )  # fmt: skip
        await phase("conference")
        await desk_a.stub.CompleteTransfer(
            cti_pb2.CompleteTransferRequest(idempotency_key=uuid.uuid4().hex, session_token=desk_a.token,
                                            call_id=call.call_id), timeout=5,
        )  # fmt: skip

        async def handed_over() -> bool:
            leg = phones_here.legs.get(call.call_id)
            return voice.stats.completed == 1 and leg is not None and leg.code == colleague

        await eventually(handed_over, timeout_s=20, what="the colleague's phone is the call's")
        await phase("completed")
        talking.cancel()
        agent_after = (await desk_a.state()).state
        await desk_b.hang_up(call.call_id)

        async def ended() -> bool:
            return call.call_id not in sb.calls

        await eventually(ended, what="the call's end")
    finally:
        if talking is not None:
            talking.cancel()
        ear.close()
        for desk in (desk_a, desk_b):
            await desk.close()
        await stop_phones(phones)
        await hang_up(caller)

    # The serving agent left the call on completion (wrap-up or ready, not on the call).
    assert agent_after not in (common_pb2.AGENT_STATE_TALKING, common_pb2.AGENT_STATE_HELD), agent_after
    assert voice.stats.failed == 0 and voice.stats.without_media == 0, voice.stats

    def at_caller(name: str) -> dict[float, float]:
        _, _, a, b = phases[name]
        edge = int(EDGE_S * 50)
        return levels(ear.audio_between(a + edge, b - edge))

    # Consulting: the held caller hears neither agent.
    c = at_caller("consult")
    assert c[-AGENT_HZ] < SILENT and c[-COLLEAGUE_HZ] < SILENT, c
    # Cancelled: back with the first agent only.
    c = at_caller("cancelled")
    assert c[AGENT_HZ] > HEARD and c[-COLLEAGUE_HZ] < SILENT, c
    # Conference: the caller hears both agents.
    c = at_caller("conference")
    assert c[AGENT_HZ] > HEARD and c[COLLEAGUE_HZ] > HEARD, c
    # Completed: the colleague alone (the first agent's phone is hung up).
    c = at_caller("completed")
    assert c[COLLEAGUE_HZ] > HEARD and c[-AGENT_HZ] < SILENT, c
    # The colleague's phone, consulting: the first agent, never the held caller. Its dump starts
    # when it answered, a little before the bridge: the phase read from its start is within it.
    first, second = dumps(tmp_path / f"phone-{colleague}")
    start, end, _, _ = phases["consult"]
    heard = levels(heard_wav(first, start + EDGE_S, end - EDGE_S))
    assert heard[AGENT_HZ] > HEARD and heard[-CALLER_HZ] < SILENT, heard
    # The second time, through the conference and the completion: the caller and the first agent.
    heard = levels(read_dump(second))
    assert heard[AGENT_HZ] > HEARD and heard[CALLER_HZ] > HEARD, heard
