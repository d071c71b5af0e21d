"""The mixing bridge on its own: who hears whom by mode, the pipeline refusing legs that make no
sense, and the real GStreamer process mixing two tones into the third leg, refusing a port that
is taken, and reported when it dies."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path
from unittest import mock

import pytest

from site_node.callcontrol.consults import CONSULT_HEARS
from site_node.callcontrol.supervision import DIRECT, HEARS, supervised_hears, who_hears
from site_node.media.bridge import (
    BridgeError,
    Leg,
    MixBridge,
    free_rtp_port,
    live_changes,
    live_mixing,
    live_pipeline,
    pipeline,
)
from site_node.sip.bridging import BridgedCall
from tests.helpers import eventually
from tests.sip.audio import tone_level
from tools.province.rtp_ear import RtpEar
from vcc.errors import InvalidArgument


def test_nobody_hears_themselves_and_only_whisper_and_barge_let_the_supervisor_be_heard() -> None:
    for mode, hears in HEARS.items():
        assert set(hears) == {"caller", "agent", "supervisor"}, mode
        assert all(party not in heard for party, heard in hears.items()), mode
        assert set(hears["supervisor"]) == {"caller", "agent"}, mode
    assert "supervisor" not in who_hears("monitor")["caller"] + who_hears("monitor")["agent"]
    assert (
        "supervisor" in who_hears("whisper")["agent"] and "supervisor" not in who_hears("whisper")["caller"]
    )
    assert "supervisor" in who_hears("barge")["agent"] and "supervisor" in who_hears("barge")["caller"]
    with pytest.raises(InvalidArgument):
        who_hears("intercept")


def test_a_supervision_over_a_consultation_or_conference_mixes_over_what_the_agent_hears() -> None:
    for mode in HEARS:
        direct = supervised_hears(DIRECT, mode)
        assert {p: set(h) for p, h in direct.items()} == {p: set(h) for p, h in who_hears(mode).items()}
    # Consulting: the held caller hears nobody, is heard by nobody (the supervisor included).
    consult = {mode: supervised_hears(CONSULT_HEARS["consult"], mode) for mode in HEARS}
    assert all(mix["caller"] == () and "caller" not in mix["supervisor"] for mix in consult.values())
    assert set(consult["monitor"]["supervisor"]) == {"agent", "far"}
    assert "supervisor" not in consult["monitor"]["agent"] + consult["monitor"]["far"]
    assert "supervisor" in consult["whisper"]["agent"] and "supervisor" not in consult["whisper"]["far"]
    assert "supervisor" in consult["barge"]["far"] and "supervisor" not in consult["barge"]["caller"]
    # Conference: the supervisor hears all three; whisper reaches the agent only.
    conference = supervised_hears(CONSULT_HEARS["conference"], "whisper")
    assert set(conference["supervisor"]) == {"caller", "agent", "far"}
    assert "supervisor" not in conference["caller"] + conference["far"]
    for mix in [*consult.values(), conference]:
        assert all(party not in heard for party, heard in mix.items())
    with pytest.raises(InvalidArgument):
        supervised_hears(CONSULT_HEARS["consult"], "intercept")


def test_a_bridged_call_mixes_only_the_parties_on_its_bridge() -> None:
    b = BridgedCall("c", ports={}, tags={}, uses={"consult": "conference", "supervision": "barge"})
    b.sends = {"caller": 1, "agent": 2, "far": 3}  # the supervisor's phone not answered yet
    assert b.hears() == {"caller": ("agent", "far"), "agent": ("caller", "far"), "far": ("caller", "agent")}
    b.sends["supervisor"] = 4
    assert set(b.hears()["far"]) == {"caller", "agent", "supervisor"}
    del b.uses["consult"]  # the consultation cancelled, the far party gone: caller and agent, barged
    del b.sends["far"]
    assert {p: set(h) for p, h in b.hears().items()} == {p: set(h) for p, h in who_hears("barge").items()}


def test_the_pipeline_refuses_legs_that_make_no_sense() -> None:
    legs = [Leg("a", 40000, 41000), Leg("b", 40002, 41002)]
    with pytest.raises(ValueError):
        pipeline([*legs, Leg("a", 40004, 41004)], {})
    with pytest.raises(ValueError):
        pipeline(legs, {"a": ["a"]})
    with pytest.raises(ValueError):
        pipeline(legs, {"a": ["c"]})
    with pytest.raises(ValueError):
        pipeline(legs, {"c": ["a"]})
    text = " ".join(pipeline(legs, {"a": ["b"]}))
    # b's voice mixed for a, sent to a's engine port; nothing is sent to b.
    assert "mix_a" in text and "port=41000" in text and "mix_b" not in text and "port=41002" not in text


async def _socket(port: int) -> RtpEar:
    """A party's side of the bridge: the tool's ear on `port` (from the bridges' own range)."""
    return await RtpEar.open(port)


async def _tone(ear: RtpEar, port: int, hz: float, seconds: float) -> None:
    """The party says `hz` to the bridge's leg on `port` (one stream per ear, going on)."""
    await ear.speak(hz, seconds, to=("127.0.0.1", port))


WAYS = [pytest.param(False, id="restarted"), pytest.param(True, id="live")]


@pytest.mark.parametrize("live", WAYS)
async def test_the_bridge_mixes_two_voices_for_the_third_and_reports_its_death(
    tmp_path: Path, live: bool
) -> None:
    if live and not live_mixing():
        pytest.skip("no PyGObject for GStreamer (bash deploy/install-system-deps.sh)")
    names = ("caller", "agent", "supervisor")
    listen = {n: free_rtp_port() for n in names}
    ears = {n: await _socket(free_rtp_port()) for n in names}
    ports = {n: ears[n].port for n in names}
    legs = [Leg(n, listen[n], ports[n]) for n in names]
    bridge = MixBridge("t", legs, tmp_path / "bridge.log", live=live)
    died: list[int] = []
    bridge.on_died = lambda b, code: died.append(code)
    try:
        await bridge.start(who_hears("whisper"))
        await asyncio.sleep(0.3)
        await asyncio.gather(
            _tone(ears["caller"], listen["caller"], 440, 2),
            _tone(ears["agent"], listen["agent"], 1000, 2),
            _tone(ears["supervisor"], listen["supervisor"], 1700, 2),
        )
        await asyncio.sleep(0.3)

        def heard(n: str) -> dict[int, float]:
            samples = ears[n].audio()
            return {hz: tone_level(samples, hz) for hz in (440, 1000, 1700)}

        caller, agent, supervisor = heard("caller"), heard("agent"), heard("supervisor")
        assert caller[1000] > 400 and caller[1700] < 100 and caller[440] < 100, caller
        assert agent[440] > 400 and agent[1700] > 400 and agent[1000] < 100, agent
        assert supervisor[440] > 400 and supervisor[1000] > 400 and supervisor[1700] < 100, supervisor
        pid = bridge.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

        async def reported() -> bool:
            return died == [-signal.SIGKILL]

        await eventually(reported, what="the bridge's death reported")
    finally:
        await bridge.stop()
        for ear in ears.values():
            ear.close()


async def test_a_live_bridge_changes_its_mix_without_a_restart(tmp_path: Path) -> None:
    """Whisper, then monitor, then barge-in on one running mixer: the same process all along, and
    each party hears what the mode says from the moment the change was taken (`rehear` returns
    once the mixer answered it). Each mode's parties say tones of their own, so what was mixed
    before the change, still in flight, is never read as the new mix: no pause is needed."""
    if not live_mixing():
        pytest.skip("no PyGObject for GStreamer (bash deploy/install-system-deps.sh)")
    names = ("caller", "agent", "supervisor")
    tones = {"whisper": (440, 1000, 1700), "monitor": (520, 1100, 1800), "barge": (600, 1200, 1900)}
    listen = {n: free_rtp_port() for n in names}
    ears = {n: await _socket(free_rtp_port()) for n in names}
    ports = {n: ears[n].port for n in names}
    bridge = MixBridge("t", [Leg(n, listen[n], ports[n]) for n in names], tmp_path / "bridge.log", live=True)
    # What each ear heard of each party's tone, by mode.
    levels: dict[str, dict[str, dict[str, float]]] = {}
    try:
        await bridge.start(who_hears("whisper"))
        pid = bridge.pid
        for mode, said in tones.items():
            await bridge.rehear(who_hears(mode))
            split = {n: len(ears[n].packets) for n in names}
            await asyncio.gather(
                *(_tone(ears[n], listen[n], hz, 1.5) for n, hz in zip(names, said, strict=True))
            )
            levels[mode] = {
                n: {party: tone_level(ears[n].audio_between(split[n], len(ears[n].packets)), hz)
                    for party, hz in zip(names, said, strict=True)}
                for n in names
            }  # fmt: skip
        assert bridge.pid == pid and bridge.starts == 1 and bridge.retunes == 2
    finally:
        await bridge.stop()
        for ear in ears.values():
            ear.close()
    # Monitor: nobody hears the supervisor; whisper: the agent does; barge-in: the caller too.
    monitor, whisper, barge = levels["monitor"], levels["whisper"], levels["barge"]
    assert monitor["agent"]["supervisor"] < 100 and monitor["caller"]["supervisor"] < 100, monitor
    assert monitor["supervisor"]["caller"] > 400 and monitor["supervisor"]["agent"] > 400, monitor
    assert whisper["agent"]["supervisor"] > 400 and whisper["caller"]["supervisor"] < 100, whisper
    assert barge["caller"]["supervisor"] > 400 and barge["agent"]["supervisor"] > 400, barge


async def test_a_live_bridge_that_does_not_answer_a_change_is_an_error(tmp_path: Path) -> None:
    """A change the live mixer never confirms (its process stopped, SIGSTOP) is a BridgeError
    within READY_S, not a mix assumed taken."""
    if not live_mixing():
        pytest.skip("no PyGObject for GStreamer (bash deploy/install-system-deps.sh)")
    legs = [Leg("a", free_rtp_port(), 9), Leg("b", free_rtp_port(), 9)]
    bridge = MixBridge("t", legs, tmp_path / "bridge.log", live=True)
    try:
        await bridge.start({"a": ["b"], "b": ["a"]})
        pid = bridge.pid
        assert pid is not None
        await bridge.rehear({"a": ["b"]})  # answered: returns
        os.kill(pid, signal.SIGSTOP)
        with (
            mock.patch("site_node.media.bridge.READY_S", 1.0),
            pytest.raises(BridgeError, match="did not take"),
        ):
            await bridge.rehear({"a": ["b"], "b": ["a"]})
        os.kill(pid, signal.SIGCONT)
    finally:
        await bridge.stop()


def test_a_live_bridge_takes_every_voice_through_a_volume_and_refuses_what_makes_no_sense() -> None:
    legs = [Leg("a", 40000, 41000), Leg("b", 40002, 41002), Leg("c", 40004, 41004)]
    description = " ".join(live_pipeline(legs, {"a": ["b"]}))
    assert "name=v_a_b volume=1" in description and "name=v_a_c volume=0" in description
    assert "name=gate_a drop=false" in description and "name=gate_b drop=true" in description
    assert "gate_b drop true" in live_changes(legs, {"a": ["b"]})
    assert "v_c_a volume 1" in live_changes(legs, {"c": ["a", "b"]})
    with pytest.raises(ValueError):
        live_changes(legs, {"a": ["a"]})
    with pytest.raises(ValueError):
        live_pipeline(legs, {"d": ["a"]})


async def test_a_bridge_that_cannot_listen_is_refused_at_start(tmp_path: Path) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    try:
        port = taken.getsockname()[1]
        bridge = MixBridge("t", [Leg("a", port, 9), Leg("b", free_rtp_port(), 9)], tmp_path / "b.log")
        with pytest.raises(BridgeError):
            await bridge.start({"a": ["b"]})
        assert bridge.pid is None
        await bridge.stop()
    finally:
        taken.close()
