"""`vcc call --sip`: the scripted test call over real SIP, to the site's SIP trunk.

SIPp dials the number with our own RTP socket as the caller's ear (tools/province/rtp_ear.py).
Whenever the site has spoken and then been silent for `KEY_AFTER_SILENCE_S`, the next key group
is pressed (RFC 4733 events from the ear). What the caller heard is told from the audio itself:
walking through it, each stretch of voice is matched (normalised correlation over small shifts)
with the prompt files the site can play for this number (every text of the flow, each menu option
with its key, as `vcc prompts build` made them; the site's menu and queue files), the best match
of at least `MATCH` taken, longer files first on a tie (an option said with its key over the
option alone). A stretch nothing matches is reported as `unknown`. How the call ended: who hung
up (SIPp's log), and the outcome and reason from the call's record at central when it is given.
"""

from __future__ import annotations

import asyncio
import time
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from site_node.media.prompts import flow_prompt_files
from tools.province.rtp_ear import ALAW, PCMA, PCMU, ULAW, RtpEar
from tools.province.sipp import listening_scenario, run_sipp
from vcc.config import ProvinceConfig, SiteConfig
from vcc.ivr.flow import Flow

RATE = 8000
# The site has said its prompts once it has been this long silent: the next keys are pressed.
KEY_AFTER_SILENCE_S = 0.8
LOUD = 300
# A prompt is taken as heard when its start correlates at least this well with the audio.
MATCH = 0.85
# Correlate at most this much of a prompt (enough to tell prompts apart, cheap to compute).
COMPARE_S = 2.0
SHIFT = 160  # samples either way (a packet of jitter in where playback began)

Samples = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Candidate:
    prompt: str  # a flow's prompt id, or "menu" / "queue" (the site's files)
    text: str
    samples: Samples  # the voiced part of its file


def _loud(payload_type: int, payload: bytes) -> bool:
    table = ALAW if payload_type == PCMA else ULAW if payload_type == PCMU else None
    return table is not None and any(abs(table[b]) > LOUD for b in payload)


def read_wav(path: Path) -> Samples:
    with wave.open(str(path), "rb") as w:
        if w.getframerate() != RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: not an 8 kHz mono 16-bit WAV")
        raw = w.readframes(w.getnframes())
    return np.frombuffer(raw, dtype="<i2").astype(np.float64)


def voiced(samples: Samples) -> Samples:
    loud = np.flatnonzero(np.abs(samples) > LOUD)
    return samples[loud[0] : loud[-1] + 1] if len(loud) else samples[:0]


def candidates(
    flows: Sequence[Flow], prompts_dir: Path, site_files: dict[str, tuple[Path, str]]
) -> list[Candidate]:
    """Every file the caller may hear, that exists (a prompt not built is not listened for)."""
    found: list[Candidate] = []
    for flow in flows:
        for prompt_id, spec in flow_prompt_files(flow):
            path = prompts_dir / f"{spec.name}.wav"
            if path.is_file():
                found.append(Candidate(prompt_id, spec.text, voiced(read_wav(path))))
    for name, (path, text) in site_files.items():
        if path.is_file():
            found.append(Candidate(name, text, voiced(read_wav(path))))
    return [c for c in found if len(c.samples) > SHIFT * 2]


def _score(audio: Samples, at: int, ref: Samples) -> tuple[float, int]:
    """The best normalised correlation of `ref` with the audio starting near `at`, and where."""
    lo = max(0, at - SHIFT)
    seg = audio[lo : at + SHIFT + len(ref)]
    if len(seg) < len(ref):
        return 0.0, at
    dots = np.correlate(seg, ref, mode="valid")
    energy = np.concatenate(([0.0], np.cumsum(seg * seg)))
    windows = energy[len(ref) :] - energy[: len(seg) - len(ref) + 1]
    norm = np.sqrt(np.maximum(windows, 1e-9) * float(ref @ ref))
    scores = dots / norm
    best = int(np.argmax(scores))
    return float(scores[best]), lo + best


def heard_prompts(audio: Samples, options: Sequence[Candidate]) -> list[dict[str, Any]]:
    """What was said, in order: each stretch of voice matched with the files it can be."""
    heard: list[dict[str, Any]] = []
    loud = np.abs(audio) > LOUD
    at = _next_loud(loud, 0)
    compare = int(COMPARE_S * RATE)
    while at is not None:
        scored = []
        for c in options:
            score, start = _score(audio, at, c.samples[:compare])
            scored.append((score, len(c.samples), start, c))
        good = [s for s in scored if s[0] >= MATCH]
        if good:
            # The longest of those within a whisker of the best: a keyed option over the option alone.
            top = max(s[0] for s in good)
            score, length, start, c = max((s for s in good if s[0] >= top - 0.05), key=lambda s: s[1])
            heard.append({"prompt": c.prompt, "text": c.text, "heard_at_s": round(start / RATE, 2),
                          "match": round(score, 3)})  # fmt: skip
            at = _next_loud(loud, start + length)
        else:
            end = _silence_after(loud, at)
            heard.append({"prompt": "unknown", "text": "", "heard_at_s": round(at / RATE, 2), "match": 0.0})
            at = _next_loud(loud, end)
    return heard


def _next_loud(loud: npt.NDArray[np.bool_], start: int) -> int | None:
    found = np.flatnonzero(loud[start:])
    return start + int(found[0]) if len(found) else None


def _silence_after(loud: npt.NDArray[np.bool_], start: int, quiet_s: float = 0.3) -> int:
    """The end of the stretch of voice at `start`: the first pause of `quiet_s`."""
    quiet = int(quiet_s * RATE)
    at = start
    while at < len(loud):
        nxt = _next_loud(loud, at + 1)
        if nxt is None or nxt - at > quiet:
            return at + 1
        at = nxt
    return at


async def sip_call(
    sip_address: str,
    number: str,
    digit_groups: Sequence[str],
    options: Sequence[Candidate],
    work: Path,
    *,
    ani: str = "13800000000",
    hang_up_after_s: float = 30.0,
) -> dict[str, Any]:
    """Dial over SIP, press each key group once the site has spoken and gone quiet, hang up at
    `hang_up_after_s` unless the site hangs up first; the report of what was heard."""
    for group in digit_groups:
        bad = [d for d in group if d not in "0123456789*#"]
        if bad:
            raise ValueError(f"--digits: {''.join(bad)!r} is not a phone key (0-9, * and #)")
    ear = await RtpEar.open()
    scenario = listening_scenario(ear.port, int(hang_up_after_s * 1000))
    started = time.monotonic()
    caller = asyncio.create_task(
        run_sipp(scenario, sip_address, work, service=number, ani=ani, timeout_s=hang_up_after_s + 20)
    )
    steps: list[dict[str, Any]] = []
    groups = list(digit_groups)
    try:
        # The engine sends nothing while it has nothing to say: quiet is told by the clock.
        seen, last_loud, spoke = 0, 0.0, False
        while not caller.done():
            await asyncio.sleep(0.1)
            arrived = ear.packets[seen:]
            seen += len(arrived)
            if any(_loud(pt, payload) for _, pt, payload in arrived):
                last_loud, spoke = time.monotonic(), True
            if (
                groups
                and spoke
                and ear.source is not None
                and time.monotonic() - last_loud >= KEY_AFTER_SILENCE_S
            ):
                keys = groups.pop(0)
                steps.append({"at": round(time.monotonic() - started, 2), "keys": keys})
                for key in keys:
                    await ear.send_digit(key)
                spoke = False
        result = await caller
    finally:
        ear.close()
        if not caller.done():
            caller.cancel()
    audio = np.asarray(ear.audio(), dtype=np.float64)
    heard = await asyncio.to_thread(heard_prompts, audio, options)
    by = "site" if "ended-by site" in result.log else "caller" if "ended-by caller" in result.log else ""
    call_ids = result.vcc_call_ids
    return {
        "call_id": call_ids[0] if call_ids else "",
        "number": number,
        "over": "sip",
        "heard": heard,
        "steps": steps,
        "heard_s": round(len(audio) / RATE, 2),
        "ended": {"hung_up_by": by}
        if result.ok
        else {"refused": "sip", "reason": result.errors.strip()[-300:]},
    }


async def number_flows(central_address: str, number: str, site_id: str) -> list[Flow]:
    """The flow `number` runs in that city (central's catalog), newest version; none: the menu."""
    import grpc

    from vcc import rpc
    from vcc.ivr.validate import load_flow
    from vcc.tls import TOOL
    from vcc.v1 import ivr_pb2, ivr_pb2_grpc

    async with rpc.channel(central_address, persona=TOOL) as ch:
        stub = ivr_pb2_grpc.IvrServiceStub(ch)
        try:
            catalog = await stub.GetServiceCatalog(
                ivr_pb2.GetServiceCatalogRequest(number=number, site_id=site_id), timeout=10
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return []  # no service: the site's one menu answers it
            raise
        flows = []
        for service in catalog.services:
            if not service.flow_id:
                continue
            try:
                got = await stub.GetFlow(ivr_pb2.GetFlowRequest(flow_id=service.flow_id), timeout=10)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                continue
            flows.append(load_flow(got.document))
    return flows


def text_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"call {report['call_id'] or '?'} to {report['number']} over SIP ({report['heard_s']} s heard)"]
    lines += [f"  heard   {h['prompt']}: {h['text']}" for h in report["heard"]]
    lines += [f"  pressed {s['keys']}" for s in report["steps"]]
    ended = report["ended"]
    record = report.get("record") or {}
    if "refused" in ended:
        lines.append(f"ended: refused ({ended['reason']})")
    else:
        lines.append(f"ended: hung up by the {ended['hung_up_by'] or '?'}; {record.get('outcome', '?')}"
                     f" ({record.get('reason', '')})")  # fmt: skip
    return lines


async def run_sip_call(
    cfg: ProvinceConfig,
    site: SiteConfig,
    number: str,
    digit_groups: Sequence[str],
    *,
    ani: str = "13800000000",
    hang_up_after_s: float | None = None,
    work: Path | None = None,
) -> dict[str, Any]:
    """`vcc call --sip`: the flow from central, the prompt files from the site's folder, the call,
    and its record at central once it ended."""
    import tempfile

    from site_node.media.prompts import prompt_path, site_prompts
    from tools.admin.call import _record_effects

    assert site.sip is not None
    prompts = Path(site.sip.prompts_dir)
    if not await asyncio.to_thread(prompts.is_dir):
        raise ValueError(f"prompts folder {prompts} is missing: run `vcc prompts build` first")
    flows = await number_flows(cfg.central.listen, number, site.id)
    files = {kind: (prompt_path(prompts, spec), spec.text) for kind, spec in site_prompts(site).items()}
    options = await asyncio.to_thread(candidates, flows, prompts, files)
    with tempfile.TemporaryDirectory(prefix="vcc-call-sip-") as tmp:
        report = await sip_call(
            site.sip.listen, number, digit_groups, options, work or Path(tmp), ani=ani,
            hang_up_after_s=hang_up_after_s or 30.0,
        )  # fmt: skip
    if report["call_id"]:
        report["effects"], report["record"] = await _record_effects(cfg.central.listen, report["call_id"])
    return report
