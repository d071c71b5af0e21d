"""Answering on the desktop while the phone rings connects the voice too: the ring is cancelled
and the phone called again with a request to answer by itself (`Call-Info: answer-after=0`, RFC
7462's auto-answer alert). The phone here is a bare SIP peer that rings on a plain INVITE and
answers by itself only when so asked, with an RTP socket (1300 Hz) for its voice. First a caller's
call (440 Hz) answered on the desktop; then a same-site consultation the colleague answers on
the desktop, the serving agent on a baresip phone (1000 Hz). Each side is checked for the
other's tone."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from pathlib import Path

import pytest

from site_node.app import SiteNode
from tests.helpers import eventually
from tests.integration.support import Desktop
from tests.sip.audio import peak_level, steady_level, window_levels
from tests.sip.conftest import PHONE_PASSWORD
from tests.sip.raw import SDP, RawPeer, header
from tests.sip.test_registrar import answer, register
from tests.sip.voice import all_heard, dial, hang_up, phone, start_phone, stop_phones
from tools.province.rtp_ear import RtpEar
from tools.province.sipp import SippResult
from vcc import rpc
from vcc.v1 import cti_pb2

pytestmark = [pytest.mark.timeout(150)]

CALLER_HZ, AGENT_HZ, DESK_PHONE_HZ = 440.0, 1000.0, 1300.0
HEARD, SILENT = 400.0, 120.0


class DeskPhone:
    """A registered phone that rings on a plain INVITE (180, never answered by hand) and answers
    by itself an INVITE that asks it to (Call-Info answer-after=0 or the auto-answer alert)."""

    def __init__(self, peer: RawPeer, media_port: int, code: str) -> None:
        self.peer, self.media_port, self.code = peer, media_port, code
        self.rung = 0
        self.cancelled = 0
        self.auto_answered = 0
        # The engine's port in the last INVITE answered: where this phone sends its voice.
        self.sends_to = 0
        self._invites: dict[str, tuple[bytes, str]] = {}

    async def register(self, sip: str) -> None:
        self.peer.send(register(self.peer, sip, self.code), sip)
        status, challenge = await self.peer.status()
        assert status == 401
        auth = answer(challenge, self.code, sip, PHONE_PASSWORD)
        self.peer.send(register(self.peer, sip, self.code, cseq=2, auth=auth), sip)
        assert (await self.peer.status())[0] == 200

    async def run(self, sip: str) -> None:
        while True:
            data = await self.peer.receive(timeout_s=3600)
            method = data.split(b" ", 1)[0]
            call_id = header(data, "Call-ID")
            if method == b"INVITE":
                _, tag = self._invites.setdefault(call_id, (data, secrets.token_hex(4)))
                info, alert = header(data, "Call-Info"), header(data, "Alert-Info")
                asked = "answer-after=0" in info or "auto-answer" in alert
                if asked:
                    self.auto_answered += 1
                    m = re.search(rb"(?m)^m=audio (\d+) ", data)
                    self.sends_to = int(m.group(1)) if m else 0
                    self.peer.send(self._reply(data, 200, tag, SDP.format(port=self.media_port)), sip)
                else:
                    self.rung += 1
                    self.peer.send(self._reply(data, 180, tag), sip)
            elif method == b"CANCEL":
                self.cancelled += 1
                self.peer.send(self._reply(data, 200, ""), sip)
                invite, tag = self._invites.get(call_id, (b"", ""))
                if invite:
                    self.peer.send(self._reply(invite, 487, tag), sip)
            elif method == b"BYE":
                self.peer.send(self._reply(data, 200, ""), sip)

    def _reply(self, request: bytes, status: int, tag: str, body: str = "") -> bytes:
        reason = {180: "Ringing", 200: "OK", 487: "Request Terminated"}[status]
        lines = [f"SIP/2.0 {status} {reason}"]
        for name in ("Via", "From", "Call-ID", "CSeq"):
            lines += [f"{name}: {v}" for v in re.findall(rf"(?im)^{name}:\s*(.*?)\r?$", request.decode())]
        to = header(request, "To")
        lines.append(f"To: {to}" + (f";tag={tag}" if tag and ";tag=" not in to else ""))
        lines.append(f"Contact: <sip:{self.code}@127.0.0.1:{self.peer.port}>")
        if body:
            lines.append("Content-Type: application/sdp")
        return ("\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode()


async def test_answering_on_the_desktop_asks_the_phone_to_answer_and_its_voice_connects(
    sip_node: SiteNode, tmp_path: Path
) -> None:
    assert sip_node.sip is not None and sip_node.registrar is not None and sip_node.phones is not None
    voice, phones, sb, sip = (
        sip_node.consult_voice,
        sip_node.phones,
        sip_node.switchboard,
        sip_node.sip.address,
    )
    assert voice is not None
    agent = next(a.code for a in sip_node.site.agents if "general" in a.skills)
    colleague = next(a.code for a in sip_node.site.agents if "billing" in a.skills)
    desk_ear = await RtpEar.open()
    peer = await RawPeer.open()
    desk_phone = DeskPhone(peer, desk_ear.port, colleague)
    folder = phone(tmp_path / f"phone-{agent}", agent, sip, AGENT_HZ)
    baresip = await start_phone(folder)
    desk_a, desk_b = (
        Desktop(rpc.channel(sip_node.address), agent),
        Desktop(rpc.channel(sip_node.address), colleague),
    )
    callers: list[asyncio.Task[SippResult]] = []
    talk: list[asyncio.Task[None]] = []
    ears = [await RtpEar.open(), await RtpEar.open()]
    running: asyncio.Task[None] | None = None
    try:
        await desk_phone.register(sip)
        running = asyncio.create_task(desk_phone.run(sip))

        async def registered() -> bool:
            return sip_node.registrar.phone_of(agent) is not None  # type: ignore[union-attr]

        await eventually(registered, what="the agent's baresip registered")
        await desk_b.login()
        await desk_b.ready()

        # 1. A caller for billing: the colleague's phone rings, the colleague answers on the desktop.
        ear = ears[0]
        callers.append(await dial(ear, sip, tmp_path / "sipp-1"))
        await ear.send_digit("2")

        async def ringing() -> bool:
            return desk_phone.rung == 1

        await eventually(ringing, timeout_s=30, what="the colleague's phone rings")
        offered = await desk_b.answer_next()
        talk.append(asyncio.create_task(ear.speak_apart(CALLER_HZ, 30)))

        async def voiced() -> bool:
            return phones.desk_voice == 1 and desk_phone.sends_to > 0

        await eventually(voiced, timeout_s=20, what="the phone answered by itself, its voice connected")
        desk_ear.source = ("127.0.0.1", desk_phone.sends_to)
        talk.append(asyncio.create_task(desk_ear.speak_apart(DESK_PHONE_HZ, 30)))
        await asyncio.sleep(3.0)
        split_caller, split_phone = len(ear.packets), len(desk_ear.packets)
        await asyncio.sleep(2.0)
        first_caller = ear.audio_between(split_caller, len(ear.packets))
        first_phone = desk_ear.audio_between(split_phone, len(desk_ear.packets))
        for t in talk:
            t.cancel()
        await desk_b.hang_up(offered.call_id)
        assert desk_phone.cancelled == 1 and desk_phone.auto_answered == 1 and phones.desk_no_voice == 0

        async def over() -> bool:
            return offered.call_id not in sb.calls

        await eventually(over, what="the first call's end")

        # 2. The agent's call (its baresip answers); it consults the colleague, who answers on the
        # desktop while its phone rings: the phone, asked to answer, is put on the call's bridge.
        await desk_b.ready()
        await desk_a.login()
        await desk_a.ready()
        ear = ears[1]
        callers.append(await dial(ear, sip, tmp_path / "sipp-2"))
        await ear.send_digit("1")

        async def answered() -> bool:
            return phones.answered == 1

        await eventually(answered, timeout_s=30, what="the agent's phone answered")
        [call] = list(sb.calls.values())
        await desk_a.transfer(call.call_id, cti_pb2.TRANSFER_KIND_CONSULT, agent_code=colleague)

        async def rings_again() -> bool:
            return desk_phone.rung == 2

        await eventually(rings_again, timeout_s=30, what="the colleague's phone rings for the consultation")
        await desk_b.answer_next()

        async def bridged() -> bool:
            seen = (voice.stats, phones.desk_voice, phones.desk_no_voice, desk_phone.auto_answered)
            stats = voice.stats
            assert stats.bridged == 1 and stats.desk_answered == 1 and phones.desk_voice == 2, seen
            return True

        await eventually(bridged, timeout_s=20, what="the colleague's phone on the consultation's bridge")
        desk_ear.source = ("127.0.0.1", desk_phone.sends_to)
        talk.append(asyncio.create_task(desk_ear.speak_apart(DESK_PHONE_HZ, 30)))
        await asyncio.sleep(3.0)
        split_phone = len(desk_ear.packets)
        await asyncio.sleep(2.0)
        second_phone = desk_ear.audio_between(split_phone, len(desk_ear.packets))
    finally:
        for t in talk:
            t.cancel()
        for e in [*ears, desk_ear]:
            e.close()
        for desk in (desk_a, desk_b):
            with contextlib.suppress(Exception):
                await desk.close()
        await stop_phones([baresip])
        if running is not None:
            running.cancel()
        peer.close()
        for c in callers:
            await hang_up(c)

    # The desktop-answered call: caller and phone hear each other.
    assert steady_level(first_caller, DESK_PHONE_HZ) > HEARD, window_levels(first_caller, DESK_PHONE_HZ)
    assert steady_level(first_phone, CALLER_HZ) > HEARD, window_levels(first_phone, CALLER_HZ)
    # The desktop-answered consultation: the agent and the colleague's phone hear each other (the
    # held caller is heard by neither).
    assert steady_level(second_phone, AGENT_HZ) > HEARD and peak_level(second_phone, CALLER_HZ) < SILENT
    heard = window_levels(all_heard(folder), DESK_PHONE_HZ)
    assert sum(level > HEARD for level in heard) >= 3, heard
