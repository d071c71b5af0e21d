"""SIP callers and SIP robot agents (`vcc traffic --sip`, `vcc agents --sip`).

Callers: SIPp dials a site's SIP trunk at a rate, presses the menu digits (RFC 2833), streams a
tone (G.711 A-law) for the hold time and hangs up. Agents: the robots log in and go ready on the
desktop API as usual, but their calls are answered by real SIP phones: one baresip registers every
robot's account (digest, with the phones' password whose HA1 is in the province config) and
answers by itself, sending its own tone; the robot talks for its handle time and hangs up from the
desktop. Both run as supervised subprocesses, stopped with the command.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import struct
import subprocess
import wave
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from tools.province.sipp import SippResult, call_scenario, run_sipp
from tools.simulation.robots import RobotPolicy, RobotStats, run_robots
from vcc.config import SiteConfig

CALLER_TONE_HZ = 440.0
AGENT_TONE_HZ = 1000.0
REGISTER_TIMEOUT_S = 20.0


def caller_tone(path: Path, hz: float = CALLER_TONE_HZ, seconds: float = 4.0) -> Path:
    """Raw A-law, as SIPp's rtp_stream wants it (sox, offline)."""
    cmd = [
        "sox",
        "-n",
        "-r",
        "8000",
        "-c",
        "1",
        "-t",
        "al",
        str(path),
        "synth",
        str(seconds),
        "sine",
        str(hz),
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    return path


async def run_sip_traffic(
    site: SiteConfig,
    *,
    rate: float,
    duration_s: float,
    hold_s: float,
    digits: str,
    work: Path,
    service: str,
    ani: str = "13800000001",
) -> SippResult:
    """SIPp callers at `rate` calls/s for `duration_s` into the site's SIP trunk."""
    if site.sip is None:
        raise ValueError(f"site {site.id} has no SIP trunk")
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    tone = await asyncio.to_thread(caller_tone, work / "caller.al")
    calls = max(1, round(rate * duration_s))
    return await run_sipp(
        call_scenario(digits, stream=tone), site.sip.listen, work, name="callers", calls=calls, rate=rate,
        hold_ms=int(hold_s * 1000), service=service, ani=ani, timeout_s=duration_s + hold_s + 60,
    )  # fmt: skip


def phone_folder(
    folder: Path, codes: Sequence[str], registrar: str, password: str, talk_s: float = 30.0
) -> Path:
    """A baresip configuration with one auto-answering account per agent; it says a tone for
    `talk_s` seconds (baresip hangs a call up when its audio file ends: AGENT_HUNG_UP)."""
    folder.mkdir(parents=True, exist_ok=True)
    tone = folder / "tone.wav"
    with wave.open(str(tone), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        step = 2 * math.pi * AGENT_TONE_HZ / 8000
        w.writeframes(
            b"".join(struct.pack("<h", int(8000 * math.sin(step * i))) for i in range(int(8000 * talk_s)))
        )
    (folder / "config").write_text(
        "sip_listen 127.0.0.1:0\nnet_interface 127.0.0.1\n"
        f"audio_source aufile,{tone}\naudio_player aubridge,nil\naudio_alert aubridge,nil\n"
        "module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\nmodule aubridge.so\n"
        f"module sndfile.so\nsnd_path {folder}\nmodule_app account.so\n"
    )
    (folder / "accounts").write_text(
        "".join(
            f"<sip:{code}@{registrar}>;auth_pass={password};regint=600;answermode=auto\n" for code in codes
        )
    )
    return folder


async def run_sip_robots(
    site: SiteConfig,
    roster: Sequence[tuple[str, str]],
    policy: RobotPolicy,
    stop: asyncio.Event,
    *,
    work: Path,
    phone_password: str,
    talk_s: float = 30.0,
) -> RobotStats:
    """Robot agents whose calls ring and are answered on real SIP phones (one baresip for all);
    a phone hangs up after `talk_s` seconds at the most (its audio file ends)."""
    if site.sip is None:
        raise ValueError(f"site {site.id} has no SIP trunk")
    folder = await asyncio.to_thread(
        phone_folder, work / "phones", [code for code, _ in roster], site.sip.listen, phone_password, talk_s
    )
    log_path = folder / "baresip.log"
    with log_path.open("wb") as out:
        phone = await asyncio.create_subprocess_exec(
            "baresip", "-f", str(folder), stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        await _registered(log_path, len(roster), phone)
        return await run_robots(site.listen, roster, replace(policy, answer_on_phone=True), stop)
    finally:
        if phone.returncode is None:
            phone.terminate()
            try:
                await asyncio.wait_for(phone.wait(), 5)
            except TimeoutError:
                phone.kill()
                await phone.wait()


async def _registered(log_path: Path, accounts: int, phone: asyncio.subprocess.Process) -> None:
    """Every account answered 200 to its REGISTER (baresip logs one line each)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REGISTER_TIMEOUT_S
    while True:
        text = await asyncio.to_thread(log_path.read_text, errors="replace")
        if text.count("200 OK") >= accounts:
            return
        if phone.returncode is not None or loop.time() > deadline:
            with contextlib.suppress(OSError):
                phone.terminate()
            raise RuntimeError(f"the agents' phones did not register (baresip log: {log_path})")
        await asyncio.sleep(0.2)
