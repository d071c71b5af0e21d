"""`vcc prompts build`: the IVR's audio made offline from text (espeak-ng, then sox to 8 kHz).

Nothing is downloaded: the voices are espeak-ng's own (Mandarin and English), the music on hold
is synthesized here. Each file is rebuilt only when its text, voice or music changed (a stamp
beside it holds the hash of what made it). The IVR flows' prompts (deploy/flows/ unless other flow
documents are named) get one file each, named by flow, prompt and a hash of the text and language
(site_node/media/prompts.py `flow_prompt_name`), in the same folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import struct
import subprocess
import tempfile
import wave
from collections.abc import Iterable, Sequence
from pathlib import Path

from site_node.media.prompts import PromptSpec, flow_prompt_specs, played_path, prompt_path, site_prompts
from vcc.config import ProvinceConfig
from vcc.ivr.catalog import is_catalog
from vcc.ivr.flow import Flow
from vcc.ivr.validate import FlowError, load_flow

# The example province's flows (`vcc ivr push deploy/flows/...`): what the prompts are built for.
EXAMPLE_FLOWS = Path(__file__).resolve().parents[2] / "deploy" / "flows"

RATE = 8000
# A calm phrase (Hz, seconds) for the music on hold: a C major arpeggio and back.
MELODY = [(523.25, 0.4), (659.25, 0.4), (783.99, 0.4), (1046.5, 0.8), (783.99, 0.4), (659.25, 0.4)]


class PromptBuildError(Exception):
    """A prompt could not be made (a tool is missing or failed)."""


def build_prompts(
    config: ProvinceConfig,
    out_dir: Path | None = None,
    base: Path | None = None,
    flows: Sequence[Flow] | None = None,
) -> list[Path]:
    """Every prompt of every SIP site, and every prompt of `flows` (default: the example flows)
    for each; `out_dir` overrides each site's `sip.prompts_dir`, which is taken relative to `base`
    (the processes' working folder; default: ours)."""
    if flows is None:
        flows = example_flows()
    flow_specs = [spec for flow in flows for spec in flow_prompt_specs(flow)]
    built: list[Path] = []
    for site in config.sites:
        if site.sip is None:
            continue
        folder = out_dir or (base or Path.cwd()) / site.sip.prompts_dir
        for spec in [*site_prompts(site).values(), *flow_specs]:
            path = prompt_path(folder, spec)
            if path not in built:
                build_prompt(spec, path)
                built.append(path)
    return built


def example_flows() -> list[Flow]:
    return load_flows(sorted(EXAMPLE_FLOWS.glob("*.yaml"))) if EXAMPLE_FLOWS.is_dir() else []


def load_flows(files: Iterable[Path]) -> list[Flow]:
    """The flow documents among `files` (a service catalog is passed over: it has no prompts)."""
    flows: list[Flow] = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise PromptBuildError(f"{file}: cannot read: {exc.strerror}") from None
        if is_catalog(text):
            continue
        try:
            flows.append(load_flow(text))
        except FlowError as exc:
            raise PromptBuildError(f"{file}: {'; '.join(str(f) for f in exc.faults)}") from None
    return flows


def build_prompt(spec: PromptSpec, path: Path, cache: Path | None = None) -> bool:
    """Make one file unless it is up to date; True when it was (re)built. Files already made from
    the same text, voice and music are taken from `cache` (default: `prompt_cache()`), so a new
    run folder does not pay espeak-ng again for hundreds of flow prompts."""
    stamp = path.with_suffix(".stamp")
    digest = hashlib.sha256(repr((spec.text, spec.voice, spec.music_s, MELODY, RATE)).encode()).hexdigest()
    cached = (cache or prompt_cache()) / f"{digest}.wav"
    if path.exists() and stamp.exists() and stamp.read_text() == digest:
        if not played_path(path).exists():
            _played_copy(path, cached)
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    if cached.exists():
        _place(cached, path)
        _played_copy(path, cached)
        stamp.write_text(digest)
        return True
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise PromptBuildError(f"{tool} is not installed (bash deploy/install-system-deps.sh)")
    with tempfile.TemporaryDirectory() as tmp:
        speech = Path(tmp) / "speech.wav"
        _run(["espeak-ng", "-v", spec.voice, "-s", "150", "-w", str(speech), spec.text])
        # 8 kHz mono 16-bit: what G.711 carries, so rtpengine only encodes it.
        out = Path(tmp) / "out.wav"
        _run(["sox", str(speech), "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer", str(out)])
        if spec.music_s > 0:
            music = Path(tmp) / "music.wav"
            write_music(music, spec.music_s)
            both = Path(tmp) / "both.wav"
            _run(["sox", str(out), str(music), str(both)])
            out = both
        shutil.move(str(out), path)
    with contextlib.suppress(OSError):  # a cache that cannot be written only costs time
        cached.parent.mkdir(parents=True, exist_ok=True)
        part = cached.with_suffix(f".{os.getpid()}.part")
        shutil.copyfile(path, part)
        part.replace(cached)
    _played_copy(path, cached)
    stamp.write_text(digest)
    return True


def _played_copy(path: Path, cached: Path) -> None:
    """The A-law copy rtpengine plays (site_node/media/prompts.py `played_path`), from the cache
    or made by sox from the prompt just placed."""
    played, cached_played = played_path(path), played_path(cached)
    if cached_played.exists():
        _place(cached_played, played)
        return
    part = played.with_suffix(f".{os.getpid()}.part.wav")
    _run(["sox", "-D", str(path), "-e", "a-law", str(part)])  # -D: G.711 exactly, no dither
    part.replace(played)
    with contextlib.suppress(OSError):
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached_played.with_suffix(f".{os.getpid()}.part")
        shutil.copyfile(played, tmp)
        tmp.replace(cached_played)


def prompt_cache() -> Path:
    """Where built prompts are kept by the hash of what made them: $VCC_PROMPT_CACHE, else the
    user's cache folder."""
    env = os.environ.get("VCC_PROMPT_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vcc" / "prompts"


def _place(cached: Path, path: Path) -> None:
    # A hard link costs no space; across file systems, a copy.
    part = path.with_suffix(f".{os.getpid()}.part")
    part.unlink(missing_ok=True)
    try:
        os.link(cached, part)
    except OSError:
        shutil.copyfile(cached, part)
    part.replace(path)


def _run(cmd: list[str]) -> None:
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    except subprocess.CalledProcessError as exc:
        raise PromptBuildError(f"{cmd[0]} failed: {exc.stderr.decode(errors='replace').strip()}") from None


def write_music(path: Path, seconds: float) -> None:
    """Soft tones with fades, repeated to `seconds` (after a short pause behind the speech)."""
    samples: list[int] = [0] * (RATE // 2)
    while len(samples) < seconds * RATE:
        for freq, dur in MELODY:
            n = int(dur * RATE)
            for i in range(n):
                fade = min(1.0, i / 200, (n - i) / 400)
                samples.append(int(6000 * fade * math.sin(2 * math.pi * freq * i / RATE)))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(struct.pack(f"<{len(samples)}h", *samples))
