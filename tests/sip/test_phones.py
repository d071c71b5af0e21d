"""An agent's SIP phone (baresip, registered with digest, answering by itself) rings when the
call control offers it a call; its answer is the agent's answer and connects the caller through
rtpengine: the audio SIPp's caller sends is found at the phone."""

from __future__ import annotations

import asyncio
import math
import struct
import uuid
import wave
from pathlib import Path

from site_node.app import SiteNode
from tests.helpers import eventually
from tests.integration.support import Desktop
from tests.sip.conftest import PHONE_PASSWORD
from tests.sip.raw import RawPeer, header
from tests.sip.test_registrar import answer, register
from tools.province.rtp_ear import linear_to_alaw
from tools.province.sipp import call_scenario, run_sipp
from tools.simulation.sip_callers import phone_folder
from vcc import rpc
from vcc.v1 import common_pb2, cti_pb2

K = common_pb2.CallEventKind


def baresip_config(folder: Path, code: str, registrar: str) -> None:
    """One auto-answering baresip account for `code` (what `vcc agents --sip` runs), saying a tone."""
    phone_folder(folder, [code], registrar, PHONE_PASSWORD)


def rms(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        frames = w.readframes(w.getnframes())
    samples = struct.unpack(f"<{len(frames) // 2}h", frames)
    return math.sqrt(sum(x * x for x in samples) / len(samples)) if samples else 0.0


async def test_the_agents_phone_rings_answers_and_hears_the_caller(
    sip_node: SiteNode, tmp_path: Path
) -> None:
    assert sip_node.sip is not None and sip_node.registrar is not None and sip_node.phones is not None
    registrar, phones, sb = sip_node.registrar, sip_node.phones, sip_node.switchboard
    code = next(a.code for a in sip_node.site.agents if "general" in a.skills)
    phone_dir = tmp_path / "phone"
    baresip_config(phone_dir, code, sip_node.sip.address)
    phone = await asyncio.create_subprocess_exec(
        "baresip", "-f", str(phone_dir), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    # The caller speaks all call long (a looped tone), not one recording played while it waits in
    # the queue: on a busy machine the phone answered after the recording had ended.
    voice = tmp_path / "caller.al"
    voice.write_bytes(
        bytes(linear_to_alaw(int(8000 * math.sin(2 * math.pi * 440 * k / 8000))) for k in range(8000))
    )
    desk = Desktop(rpc.channel(sip_node.address), code)
    try:

        async def registered() -> bool:
            return registrar.phone_of(code) is not None

        await eventually(registered, what="the phone registered")
        await desk.login()
        await desk.ready()
        caller = asyncio.create_task(
            run_sipp(call_scenario("1", stream=voice), sip_node.sip.address, tmp_path / "sipp", hold_ms=8000)
        )

        async def talking() -> bool:
            return phones.answered == 1

        await eventually(talking, what="the phone answered")
        # Hold from the desktop: the caller hears the music, the agent's voice is blocked; retrieve.
        [call] = list(sb.calls.values())
        await desk.stub.Hold(
            cti_pb2.HoldRequest(
                idempotency_key=uuid.uuid4().hex, session_token=desk.token, call_id=call.call_id
            ),
            timeout=5,
        )
        trunk = sip_node.sip

        async def held() -> bool:
            return trunk.hear.blocks[True] == 1 and trunk.hear.plays["queue"] >= 1

        await eventually(held, what="hold blocks the agent and plays the music")
        await desk.stub.Retrieve(
            cti_pb2.RetrieveRequest(
                idempotency_key=uuid.uuid4().hex, session_token=desk.token, call_id=call.call_id
            ),
            timeout=5,
        )

        async def retrieved() -> bool:
            return trunk.hear.blocks[False] == 1

        await eventually(retrieved, what="retrieve lets the agent through again")
        result = await caller
        assert result.ok, result.stdout + result.errors
        [call_id] = result.vcc_call_ids

        async def ended() -> list[str] | None:
            events = [e for _, e in await sip_node.outbox.pending(10_000) if e.call_id == call_id]
            kinds = [K.Name(e.kind).removeprefix("CALL_EVENT_KIND_") for e in events]
            return kinds if "ENDED" in kinds else None

        kinds = await eventually(ended, what="the call's end")
        assert "RINGING" in kinds and "ANSWERED" in kinds and "HELD" in kinds and "CALLER_HUNG_UP" in kinds
        assert phones.rang == 1 and phones.answered == 1 and phones.unreachable == 0
        assert sb.counters.answered == 1
    finally:
        await desk.close()
        phone.terminate()
        await phone.wait()
    # What the phone heard: the caller's recording, not silence.
    [heard] = list(phone_dir.glob("dump-*-dec.wav"))
    assert rms(heard) > 200, rms(heard)


async def test_a_phone_that_refuses_the_ring_turns_its_agent_not_ready(
    sip_node: SiteNode, tmp_path: Path
) -> None:
    assert sip_node.sip is not None and sip_node.registrar is not None and sip_node.phones is not None
    sip = sip_node.sip.address
    code = next(a.code for a in sip_node.site.agents if "general" in a.skills)
    phone = await RawPeer.open()
    desk = Desktop(rpc.channel(sip_node.address), code)
    try:
        phone.send(register(phone, sip, code), sip)
        status, challenge = await phone.status()
        assert status == 401
        phone.send(register(phone, sip, code, cseq=2, auth=answer(challenge, code, sip, PHONE_PASSWORD)), sip)
        assert (await phone.status())[0] == 200
        await desk.login()
        await desk.ready()
        caller = asyncio.create_task(run_sipp(call_scenario("1"), sip, tmp_path / "sipp", hold_ms=4000))
        invite = await phone.receive(timeout_s=15)
        assert invite.startswith(b"INVITE ") and header(invite, "X-VCC-Call-ID")
        # Busy: the phone says no. The site ACKs it and the agent is made not ready.
        busy = invite.split(b"\r\n\r\n")[0].decode()
        lines = [
            ln
            for ln in busy.split("\r\n")[1:]
            if ln.split(":")[0].lower() in ("via", "from", "to", "call-id", "cseq")
        ]
        reply = (
            "SIP/2.0 486 Busy Here\r\n"
            + "\r\n".join(ln + (";tag=busyphone" if ln.lower().startswith("to:") else "") for ln in lines)
            + "\r\nContent-Length: 0\r\n\r\n"
        )
        phone.send(reply.encode(), sip)
        ack = await phone.receive()
        assert ack.startswith(b"ACK ")

        async def not_ready() -> bool:
            agent = await desk.state()
            return agent.state == common_pb2.AGENT_STATE_NOT_READY

        await eventually(not_ready, what="the agent made not ready")
        assert sip_node.phones.unreachable == 1
        result = await caller
        assert result.ok, result.stdout + result.errors
    finally:
        await desk.close()
        phone.close()
