"""A supervised consultation and conference carry voice, on the call's one bridge: a group leader's
phone (baresip, 1700 Hz) monitors an agent (baresip, 1000 Hz) who consults a colleague (baresip,
1300 Hz) while the caller (an RTP socket, a tone of its own in each phase) is held; then the
leader whispers to the agent over the conference of all three, then barges in. What each party
heard is checked for the others' tones; the caller's tone tells which phase a phone heard."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from site_node.app import SiteNode
from tests.helpers import eventually
from tests.integration.support import Desktop
from tests.sip.audio import peak_level, steady_level, tone_level, windows
from tests.sip.conftest import sip_config_dict
from tests.sip.voice import (
    all_heard,
    console_login,
    dial,
    dumps,
    hang_up,
    phone,
    site_node,
    start_phone,
    stop_phones,
    with_leader,
)
from tools.province.etcd_server import EtcdServer
from tools.province.netutil import free_port
from tools.province.rtp_ear import RtpEar, Speaker
from tools.province.sipp import SippResult
from vcc import rpc
from vcc.v1 import cti_pb2

pytestmark = [pytest.mark.timeout(150)]

AGENT_HZ, COLLEAGUE_HZ, LEADER_HZ = 1000.0, 1300.0, 1700.0
# The caller's tone in each phase.
TONES = {"talk": 440.0, "consult": 520.0, "whisper": 600.0, "barge": 680.0}
HEARD, SILENT = 400.0, 120.0
PHASE_S = 2.5
EDGE_S = 0.6


TONES_HEARD = {AGENT_HZ, COLLEAGUE_HZ, LEADER_HZ, *TONES.values()}


def levels(samples: list[int]) -> dict[float, float]:
    return {hz: round(tone_level(samples, hz)) for hz in TONES_HEARD}


def phase_levels(samples: list[int]) -> dict[float, float]:
    """A phase at the caller: each tone's mean level over its half seconds, and (as `-hz`) its
    loudest half second (one Goertzel over the phase let pieces of a tone out of phase cancel)."""
    return {hz: round(steady_level(samples, hz)) for hz in TONES_HEARD} | {
        -hz: round(peak_level(samples, hz)) for hz in TONES_HEARD
    }


@pytest.fixture
async def node(tmp_path: Path, etcd_server: EtcdServer, prompts_dir: Path) -> AsyncIterator[SiteNode]:
    raw = sip_config_dict(tmp_path, prompts_dir, etcd_server.endpoint, agents=2)
    async with site_node(with_leader(raw, desktop=f"127.0.0.1:{free_port()}")) as n:
        yield n


async def test_a_supervised_consultation_and_conference_carry_each_partys_voice_on_one_bridge(
    node: SiteNode, tmp_path: Path
) -> None:
    assert node.sip is not None and node.registrar is not None and node.phones is not None
    bridges, voice, media = node.bridges, node.consult_voice, node.supervisor_media
    assert bridges is not None and voice is not None and media is not None
    sb, registrar, sip, phones_here = node.switchboard, node.registrar, node.sip.address, node.phones
    agent, colleague = [a.code for a in node.site.agents if "general" in a.skills and a.role == "agent"][:2]
    leader = next(a.code for a in node.site.agents if a.role == "group_leader")
    procs = [
        await start_phone(phone(tmp_path / f"phone-{code}", code, sip, hz), log=True)
        for code, hz in ((agent, AGENT_HZ), (colleague, COLLEAGUE_HZ), (leader, LEADER_HZ))
    ]
    desk_a, desk_b = Desktop(rpc.channel(node.address), agent), Desktop(rpc.channel(node.address), colleague)
    assert node.desktop_url
    console = httpx.AsyncClient(base_url=node.desktop_url.rstrip("/"), timeout=10)
    ear = await RtpEar.open()
    caller: asyncio.Task[SippResult] | None = None
    talking: Speaker | None = None
    phases: dict[str, tuple[int, int]] = {}

    async def lead(path: str, body: dict[str, str] | None = None) -> None:
        r = await console.post(path, json={"idempotency_key": uuid.uuid4().hex, **(body or {})})
        assert r.status_code == 200, r.text

    async def phase(name: str) -> None:
        await asyncio.sleep(0.5)  # the mixer (re)started
        split = len(ear.packets)
        await asyncio.sleep(PHASE_S)
        phases[name] = (split, len(ear.packets))

    try:

        async def registered() -> bool:
            return all(registrar.phone_of(c) is not None for c in (agent, colleague, leader))

        await eventually(registered, what="the three phones registered")
        await desk_a.login()
        await desk_a.ready()
        await console_login(console, leader)
        caller = await dial(ear, sip, tmp_path / "sipp")
        await ear.send_digit("1")

        async def answered() -> bool:
            return phones_here.answered == 1

        await eventually(answered, timeout_s=30, what="the agent's phone answered")
        # The colleague is ready only now: the caller went to the agent.
        await desk_b.login()
        await desk_b.ready()
        talking = await ear.speaker(TONES["talk"], 60)
        [call] = list(sb.calls.values())

        # The leader monitors the agent, then the agent consults the colleague: one bridge for both.
        await lead(f"/api/team/{agent}/supervise", {"mode": "monitor"})

        async def monitored() -> bool:
            return media.stats.bridged == 1

        await eventually(monitored, timeout_s=20, what="the leader's phone on the bridge")
        await talking.say(TONES["consult"])
        await desk_a.transfer(call.call_id, cti_pb2.TRANSFER_KIND_CONSULT, agent_code=colleague)

        async def consulting() -> bool:
            return voice.stats.bridged == 1

        await eventually(consulting, timeout_s=20, what="the colleague's phone on the same bridge")
        assert bridges.stats.started == 1 and bridges.stats.shared == 1, bridges.stats
        await phase("consult")
        # Whisper over the conference of all three, then barge in.
        await talking.say(TONES["whisper"])
        await asyncio.sleep(0.3)
        await lead(f"/api/team/{agent}/supervise", {"mode": "whisper"})
        await desk_a.stub.Conference(
            cti_pb2.ConferenceRequest(idempotency_key=uuid.uuid4().hex, session_token=desk_a.token,
                                      call_id=call.call_id), timeout=5,
        )  # fmt: skip

        async def conferenced() -> bool:
            b = bridges.calls.get(call.call_id)
            return b is not None and b.uses == {"consult": "conference", "supervision": "whisper"}

        await eventually(conferenced, timeout_s=20, what="the conference, whispered to")
        await phase("whisper")
        await talking.say(TONES["barge"])
        await asyncio.sleep(0.3)
        await lead(f"/api/team/{agent}/supervise", {"mode": "barge"})
        await phase("barge")
        await talking.stop()
        await lead("/api/team/leave")
        # The colleague leaves the conference: the caller back with the agent, off the bridge.
        await desk_b.hang_up(call.call_id)

        async def back() -> bool:
            return voice.stats.returned == 1 and not bridges.calls and bridges.stats.restored == 1

        await eventually(back, timeout_s=20, what="the caller with the agent again, the bridge stopped")
        await desk_a.hang_up(call.call_id)

        async def ended() -> bool:
            return call.call_id not in sb.calls and not bridges.calls

        await eventually(ended, timeout_s=20, what="the call's end, its bridge stopped")
    finally:
        if talking is not None:
            await talking.stop()
        ear.close()
        for desk in (desk_a, desk_b):
            await desk.close()
        await console.aclose()
        await stop_phones(procs)
        await hang_up(caller)

    assert bridges.stats.started == 1 and bridges.stats.lost == 0 and bridges.stats.failed == 0, bridges.stats
    assert voice.stats.failed == 0 and media.stats.failed == 0

    def at_caller(name: str) -> dict[float, float]:
        a, b = phases[name]
        edge = int(EDGE_S * 50)
        return phase_levels(ear.audio_between(a + edge, b - edge))

    def heard_by(code: str) -> list[dict[float, float]]:
        return [levels(w) for w in windows(all_heard(tmp_path / f"phone-{code}"))]

    # What each phone's dumps hold (bytes), for a failure's message: a phone that heard too little
    # is told apart from one that heard the wrong party. (Its log, phone-CODE/log, says when
    # baresip reopened a dump: at each re-INVITE that is not sendrecv.)
    kept = {
        c: [(d.name, d.stat().st_size) for d in dumps(tmp_path / f"phone-{c}")]
        for c in (agent, colleague, leader)
    }

    def held(w: dict[float, float]) -> bool:
        """No tone of the caller's in this half second: the caller is held (or not on the call)."""
        return max(w[hz] for hz in TONES.values()) < SILENT

    def saying(windows: list[dict[float, float]], name: str) -> list[dict[float, float]]:
        return [w for w in windows if w[TONES[name]] > HEARD]

    # The caller: held while they consult (nobody), the two agents in the conference whispered to,
    # the leader too once barged in.
    c = at_caller("consult")
    # (Averaged over the phase, not in its loudest half second: the hold music itself has 1,300 Hz
    # up to 204 in some half seconds.)
    assert max(c[AGENT_HZ], c[COLLEAGUE_HZ], c[LEADER_HZ]) < SILENT, c
    c = at_caller("whisper")
    assert c[AGENT_HZ] > HEARD and c[COLLEAGUE_HZ] > HEARD and c[-LEADER_HZ] < SILENT, c
    c = at_caller("barge")
    assert c[AGENT_HZ] > HEARD and c[COLLEAGUE_HZ] > HEARD and c[LEADER_HZ] > HEARD, c
    # The leader heard the consultation (both agents, not the held caller), then all three.
    led = heard_by(leader)
    assert any(w[AGENT_HZ] > HEARD and w[COLLEAGUE_HZ] > HEARD and held(w) for w in led), led
    assert any(w[AGENT_HZ] > HEARD and w[COLLEAGUE_HZ] > HEARD for w in saying(led, "whisper")), led
    # The agent: the colleague while consulting, never the leader then (monitor); the leader's
    # whisper and barge-in over the conference. (The first and last half second of a phase may
    # hold the next or the one before: a dump has no samples for the gap of a re-pairing.)
    heard_a = heard_by(agent)
    consult_a = [w for w in heard_a if w[COLLEAGUE_HZ] > HEARD and held(w)]
    assert len(consult_a) >= 3 and all(w[LEADER_HZ] < SILENT for w in consult_a[1:-1]), (kept, heard_a)
    whispered = saying(heard_a, "whisper")
    assert sum(w[LEADER_HZ] > HEARD and w[COLLEAGUE_HZ] > HEARD for w in whispered) >= 2, heard_a
    assert sum(w[LEADER_HZ] > HEARD for w in saying(heard_a, "barge")) >= 2, heard_a
    # The colleague: the agent while consulting; the caller and the agent but not the whisper;
    # the leader once barged in.
    heard_b = heard_by(colleague)
    assert any(w[AGENT_HZ] > HEARD and held(w) for w in heard_b), heard_b
    whispered = saying(heard_b, "whisper")
    assert len(whispered) >= 3 and all(w[AGENT_HZ] > HEARD for w in whispered[1:-1]), (kept, heard_b)
    assert all(w[LEADER_HZ] < SILENT for w in whispered[1:-1]), heard_b
    assert sum(w[LEADER_HZ] > HEARD for w in saying(heard_b, "barge")) >= 2, heard_b
