"""Supervision with voice: a group leader's SIP phone (baresip) monitors, whispers, barges in and
intercepts a call between a caller (an RTP socket that talks and listens, a tone of its own in
each phase of the call) and an agent's phone (baresip, 1000 Hz); the leader's phone says 1700 Hz.
What each party heard is checked for the others' tones: the bridge (GStreamer's audiomixer) mixes,
rtpengine re-pairs, Python carries no audio. Killing the bridge mid-call pairs the caller and the
agent again and ends the supervision: each of them hears the other after it."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from site_node.app import SiteNode
from site_node.sip.bridging import CallBridges
from tests.helpers import eventually
from tests.integration.support import Desktop
from tests.sip.audio import peak_level, steady_level, tone_level, windows
from tests.sip.conftest import sip_config_dict
from tests.sip.voice import (
    console_login,
    dial,
    dumps,
    hang_up,
    phone,
    read_dump,
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
from vcc.v1 import common_pb2

K = common_pb2.CallEventKind
CALLER_HZ, AGENT_HZ, LEADER_HZ = 440.0, 1000.0, 1700.0
# The caller says each phase of the call in its own tone, so what a phone heard tells which phase it
# heard, however its dump's clock ran (a dump holds no samples for the gaps of each re-pairing).
TONES = {"monitor": CALLER_HZ, "whisper": 520.0, "barge": 600.0, "alone": 680.0, "killed": 760.0,
         "after-loss": 840.0, "intercept": 920.0}  # fmt: skip
HEARD, SILENT = 400.0, 120.0
# Each phase of the call lasts this long; the checks read its middle (a busy machine shifts edges).
PHASE_S = 2.5
EDGE_S = 0.7


def levels(samples: list[int]) -> dict[float, float]:
    return {hz: round(tone_level(samples, hz)) for hz in {AGENT_HZ, LEADER_HZ, *TONES.values()}}


def phase_levels(samples: list[int]) -> dict[float, float]:
    """A phase at the caller: each tone's mean level over its half seconds, and (as `-hz`) its
    loudest half second: a tone heard is loud on average, one not heard is quiet in every half
    second (one Goertzel over the phase let pieces of a tone out of phase cancel)."""
    tones = {AGENT_HZ, LEADER_HZ, *TONES.values()}
    return {hz: round(steady_level(samples, hz)) for hz in tones} | {
        -hz: round(peak_level(samples, hz)) for hz in tones
    }


@pytest.fixture
async def node(tmp_path: Path, etcd_server: EtcdServer, prompts_dir: Path) -> AsyncIterator[SiteNode]:
    raw = sip_config_dict(tmp_path, prompts_dir, etcd_server.endpoint)
    async with site_node(with_leader(raw, desktop=f"127.0.0.1:{free_port()}")) as n:
        yield n


async def test_monitor_whisper_barge_and_intercept_carry_the_voices_they_should(
    node: SiteNode, tmp_path: Path
) -> None:
    assert node.sip is not None and node.registrar is not None and node.phones is not None
    media, bridges = node.supervisor_media, node.bridges
    assert media is not None and bridges is not None
    sb, registrar, sip = node.switchboard, node.registrar, node.sip.address
    agent = next(a.code for a in node.site.agents if "general" in a.skills and a.role == "agent")
    leader = next(a.code for a in node.site.agents if a.role == "group_leader")
    phones = [
        await start_phone(phone(tmp_path / f"phone-{code}", code, sip, hz))
        for code, hz in ((agent, AGENT_HZ), (leader, LEADER_HZ))
    ]
    desk = Desktop(rpc.channel(node.address), agent)
    assert node.desktop_url
    console = httpx.AsyncClient(base_url=node.desktop_url.rstrip("/"), timeout=10)
    ear = await RtpEar.open()
    caller: asyncio.Task[SippResult] | None = None
    talking: Speaker | None = None

    def act(op: object) -> None:
        node.runtime.do(op)  # type: ignore[arg-type]

    async def lead(path: str, body: dict[str, str] | None = None) -> None:
        """A leader's click on the console: its HTTP API."""
        r = await console.post(path, json={"idempotency_key": uuid.uuid4().hex, **(body or {})})
        assert r.status_code == 200, r.text

    try:

        async def registered() -> bool:
            return registrar.phone_of(agent) is not None and registrar.phone_of(leader) is not None

        await eventually(registered, what="both phones registered")
        await desk.login()
        await desk.ready()
        await console_login(console, leader)
        caller = await dial(ear, sip, tmp_path / "sipp")
        await ear.send_digit("1")

        async def answered() -> bool:
            return node.phones.answered == 1 if node.phones is not None else False

        await eventually(answered, timeout_s=30, what="the agent's phone answered")
        agent_t0 = time.monotonic()
        talking = await ear.speaker(CALLER_HZ, 60)
        [call] = list(sb.calls.values())
        phases: dict[str, tuple[float, float, int, int]] = {}

        async def say(name: str) -> None:
            assert talking is not None
            await talking.say(TONES[name])
            await asyncio.sleep(0.3)  # the new tone on its way before the mix changes

        async def phase(name: str, mode: str | None) -> None:
            await say(name)
            if mode is not None:
                await lead(f"/api/team/{agent}/supervise", {"mode": mode})
            if name == "monitor":

                async def bridged() -> bool:
                    return media.stats.bridged == 1

                await eventually(bridged, timeout_s=20, what="the leader's phone on the bridge")
            await asyncio.sleep(0.5)  # the bridge (re)started
            start, split = time.monotonic() - agent_t0, len(ear.packets)
            await asyncio.sleep(PHASE_S)
            phases[name] = (start, time.monotonic() - agent_t0, split, len(ear.packets))

        await phase("monitor", "monitor")
        await phase("whisper", "whisper")
        await phase("barge", "barge")
        await lead("/api/team/leave")

        async def restored() -> bool:
            return bridges.stats.restored == 1 and not node.phones.supervisor_legs  # type: ignore[union-attr]

        await eventually(restored, timeout_s=20, what="caller and agent paired again")
        await phase("alone", None)

        # A bridge that dies: the supervision ends, the caller and the agent talk again.
        await say("killed")
        await lead(f"/api/team/{agent}/supervise", {"mode": "barge"})

        async def second_bridge() -> int | None:
            b = bridges.calls.get(call.call_id)
            up = media.stats.bridged == 2 and b is not None and b.bridge is not None
            return b.bridge.pid if up and b is not None and b.bridge is not None else None

        pid = await eventually(second_bridge, timeout_s=20, what="the second bridge")
        os.kill(pid, signal.SIGKILL)

        async def lost() -> bool:
            return media.stats.bridge_lost == 1 and call.call_id not in sb.supervision.by_call

        await eventually(lost, timeout_s=20, what="the supervision ended with its bridge")
        await eventually(_count(bridges, 2), timeout_s=20, what="paired again after the loss")
        await phase("after-loss", None)

        # Monitor once more, then intercept: the leader's phone (already up) takes the call over,
        # the agent's phone is hung up.
        await say("intercept")
        await lead(f"/api/team/{agent}/supervise", {"mode": "monitor"})

        async def third_bridge() -> bool:
            return media.stats.bridged == 3

        await eventually(third_bridge, timeout_s=20, what="the leader on the bridge again")
        leader_leg = node.phones.supervisor_legs[call.call_id]
        await lead(f"/api/team/{agent}/supervise", {"mode": "intercept"})

        async def taken() -> bool:
            leg = node.phones.legs.get(call.call_id) if node.phones is not None else None
            return leg is leader_leg and leg.state == "answered"

        await eventually(taken, timeout_s=20, what="the leader's phone took the call")
        await asyncio.sleep(1.0)
        await phase("intercept", None)
        await talking.stop()
        act(lambda now: sb.agent_hang_up(now, leader, call.call_id))

        async def ended() -> list[str] | None:
            events = [e for _, e in await node.outbox.pending(10_000) if e.call_id == call.call_id]
            kinds = [K.Name(e.kind).removeprefix("CALL_EVENT_KIND_") for e in events]
            return kinds if "ENDED" in kinds else None

        kinds = await eventually(ended, what="the call's end")
    finally:
        if talking is not None:
            await talking.stop()
        ear.close()
        await desk.close()
        await console.aclose()
        await stop_phones(phones)
        await hang_up(caller)

    # The call's history shows the supervisor's part in every case.
    assert kinds.count("SUPERVISED") == 5 and "INTERCEPTED" in kinds, kinds
    assert kinds.count("SUPERVISION_ENDED") == 2, kinds

    def at_caller(name: str) -> dict[float, float]:
        _, _, a, b = phases[name]
        edge = int(EDGE_S * 50)
        return phase_levels(ear.audio_between(a + edge, b - edge))

    agent_dump = dumps(tmp_path / f"phone-{agent}")
    leader_dumps = dumps(tmp_path / f"phone-{leader}")
    # What the agent's phone heard, in half seconds, each told by the caller's tone in it.
    heard = [levels(w) for w in windows(read_dump(agent_dump[0]))]

    def agent_heard(name: str) -> list[dict[float, float]]:
        return [w for w in heard if w[TONES[name]] > HEARD]

    # Monitor: the leader hears both, nobody hears the leader. (At each change one half second of
    # the agent's dump may hold the end of one phase and the start of the next: its dump has no
    # samples for the gap of a re-pairing. The first and last half second of a phase are such.)
    c = at_caller("monitor")
    assert c[AGENT_HZ] > HEARD and c[-LEADER_HZ] < SILENT, c
    monitored = agent_heard("monitor")
    assert len(monitored) >= 3 and all(w[LEADER_HZ] < SILENT for w in monitored[1:-1]), heard
    # Whisper: the agent hears the leader, the caller does not.
    c = at_caller("whisper")
    assert c[AGENT_HZ] > HEARD and c[-LEADER_HZ] < SILENT, c
    assert sum(w[LEADER_HZ] > HEARD for w in agent_heard("whisper")) >= 2, heard
    # Barge-in: everyone hears everyone.
    c = at_caller("barge")
    assert c[AGENT_HZ] > HEARD and c[LEADER_HZ] > HEARD, c
    assert sum(w[LEADER_HZ] > HEARD for w in agent_heard("barge")) >= 2, heard
    # The leader's phone heard the caller in each mode, and the agent (its dump: monitor to barge).
    led = [levels(w) for w in windows(read_dump(leader_dumps[0]))]
    for name in ("monitor", "whisper", "barge"):
        assert any(w[TONES[name]] > HEARD for w in led), (name, led)
    assert sum(w[AGENT_HZ] > HEARD for w in led) >= 3, led
    # Alone again, and after the bridge was lost: caller and agent only, as each of them hears it.
    for name in ("alone", "after-loss"):
        c = at_caller(name)
        assert c[AGENT_HZ] > HEARD and c[-LEADER_HZ] < SILENT, (name, c)
        alone = agent_heard(name)
        assert len(alone) >= 3 and all(w[LEADER_HZ] < SILENT for w in alone[1:-1]), (name, heard)
    # Intercept: the caller hears the leader, not the agent (whose phone was hung up).
    c = at_caller("intercept")
    assert c[LEADER_HZ] > HEARD and c[-AGENT_HZ] < SILENT, c
    assert media.stats.intercepted == 1 and media.stats.failed == 0


def _count(bridges: CallBridges, n: int):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return bridges.stats.restored >= n

    return check
