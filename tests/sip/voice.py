"""What the SIP voice tests share: agents' phones (baresip, each saying a tone of its own), the
caller's line (SIPp dialling with the tool's RTP ear, tools/province/rtp_ear.py, as its media),
a site node of their own, and how what a party heard is read (its dumps) and judged (a tone's
level in half-second windows, tests/sip/audio.py)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import struct
import uuid
import wave
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from site_node.app import SiteNode
from tests.helpers import eventually
from tests.integration.support import DEFAULT_PASSWORD
from tests.sip.conftest import PHONE_PASSWORD
from tools.province.rtp_ear import RtpEar
from tools.province.sipp import SippResult, call_scenario, run_sipp
from tools.simulation.sip_callers import phone_folder
from vcc.config import parse_province

# How long a phone is given to hang up (SIGTERM) before it is killed.
PHONE_STOP_S = 5.0


def tone_wav(path: Path, hz: float, seconds: int = 60, amplitude: int = 8000) -> None:
    """A 16-bit mono 8 kHz WAV of one sine: what a phone says (its `audio_source`)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        step = 2 * math.pi * hz / 8000
        w.writeframes(
            b"".join(struct.pack("<h", int(amplitude * math.sin(step * i))) for i in range(8000 * seconds))
        )


def phone(folder: Path, code: str, registrar: str, hz: float) -> Path:
    """An auto-answering baresip for agent `code`, registering at `registrar`, saying `hz`."""
    phone_folder(folder, [code], registrar, PHONE_PASSWORD)
    tone_wav(folder / "tone.wav", hz)
    return folder


async def start_phone(folder: Path, *, log: bool = False) -> asyncio.subprocess.Process:
    """baresip on `folder`; with `log`, its output in `folder/log` (a registration is seen there)."""
    out: Any = asyncio.subprocess.DEVNULL
    if log:
        out = (folder / "log").open("wb")
    try:
        return await asyncio.create_subprocess_exec(
            "baresip", "-f", str(folder), stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
        )
    finally:
        if log:
            out.close()


async def stop_phones(procs: Sequence[asyncio.subprocess.Process]) -> None:
    """Each phone hangs up (SIGTERM) and is killed if it has not ended within PHONE_STOP_S."""
    for p in procs:
        if p.returncode is None:
            p.terminate()
    for p in procs:
        try:
            await asyncio.wait_for(p.wait(), PHONE_STOP_S)
        except TimeoutError:
            p.kill()
            await p.wait()


def registered_in_log(folder: Path) -> bool:
    """The phone's log (start_phone(log=True)) shows its registration answered."""
    path = folder / "log"
    return path.exists() and b"200 OK" in path.read_bytes()


async def dial(ear: RtpEar, sip: str, folder: Path, *, hold_ms: int = 60_000) -> asyncio.Task[SippResult]:
    """SIPp calls `sip` with `ear` as its media and stays `hold_ms`; returned once the caller hears
    the menu (the engine sends to the ear: digits and a voice can go back)."""
    scenario = call_scenario("", media_port=str(ear.port), settle_ms=0)
    # SIPp's own deadline beyond the call's (at its deadline SIPp quits without a BYE).
    caller = asyncio.create_task(
        run_sipp(scenario, sip, folder, hold_ms=hold_ms, timeout_s=hold_ms / 1000 + 30)
    )

    async def prompted() -> bool:
        if caller.done():
            caller.result()  # SIPp failed: its error, not a timeout
        return ear.source is not None

    await eventually(prompted, timeout_s=30, what="the caller hears the menu")
    return caller


async def hang_up(caller: asyncio.Task[SippResult] | None) -> None:
    if caller is not None and not caller.done():
        caller.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await caller


@contextlib.asynccontextmanager
async def site_node(raw: dict[str, Any], site_id: str = "gz") -> AsyncIterator[SiteNode]:
    """A site node of this process on the province config `raw` (tests/sip/conftest.py's)."""
    node = SiteNode(parse_province(raw), site_id)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def console_login(console: httpx.AsyncClient, code: str) -> None:
    """A group leader logs in on the console (its HTTP API, where leaders act)."""
    body = {"idempotency_key": uuid.uuid4().hex, "agent_code": code, "password": DEFAULT_PASSWORD}
    r = await console.post("/api/login", json=body)
    assert r.status_code == 200, r.text


def with_leader(raw: dict[str, Any], *, desktop: str) -> dict[str, Any]:
    """The billing agent of `raw`'s first site leads the general group; the console's API (where
    leaders act) listens on `desktop`."""
    site = raw["sites"][0]
    leader = next(a for a in site["agents"] if "billing" in a["skills"])
    leader["role"], leader["leads"] = "group_leader", ["general"]
    site["desktop_listen"] = desktop
    return raw


# What a phone heard: baresip's dumps of what it decoded ---------------------------------------


def dumps(folder: Path) -> list[Path]:
    """A phone's dumps of what it heard, one per call, in the order the calls ended."""
    return sorted(folder.glob("dump-*-dec.wav"), key=lambda p: p.stat().st_mtime)


def read_dump(path: Path) -> list[int]:
    """A phone's dump, 16-bit mono. A baresip killed before it closed the file (a busy machine: it
    did not stop within its grace) leaves a header that counts no frames: the data is read anyway."""
    with wave.open(str(path), "rb") as w:
        frames = w.readframes(w.getnframes())
    if not frames:
        raw = path.read_bytes()
        at = raw.find(b"data")
        frames = raw[at + 8 :] if at >= 0 else b""
        frames = frames[: len(frames) // 2 * 2]
    return list(struct.unpack(f"<{len(frames) // 2}h", frames))


def dump_bytes(path: Path) -> int:
    """Bytes of audio a phone's dump holds so far (its header is written whole only at the end)."""
    raw = path.read_bytes()
    at = raw.find(b"data")
    return max(0, len(raw) - at - 8) if at >= 0 else 0


def heard_wav(path: Path, start_s: float, end_s: float) -> list[int]:
    """The samples of a dump between two times (seconds from its start)."""
    samples = read_dump(path)
    return samples[int(start_s * 8000) : int(end_s * 8000)]


def all_heard(folder: Path) -> list[int]:
    """Everything a phone heard, its calls one after the other."""
    return [s for dump in dumps(folder) for s in read_dump(dump)]
