"""The A-law copy rtpengine plays: built beside every prompt (and from the cache), the same audio
as the 16-bit reference file, sample for sample."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

from site_node.media.prompts import PromptSpec, played_path
from tools.province.prompts import build_prompt
from tools.province.rtp_ear import ALAW


def _alaw_samples(path: Path) -> bytes:
    data = path.read_bytes()
    fmt = data.index(b"fmt ")
    assert struct.unpack_from("<H", data, fmt + 8)[0] == 6, "not A-law"  # WAVE_FORMAT_ALAW
    # The data chunk (sox may add a 'fact' chunk before it).
    at = data.index(b"data", fmt)
    size = struct.unpack_from("<I", data, at + 4)[0]
    return data[at + 8 : at + 8 + size]


def test_every_prompt_gets_its_alaw_copy_with_the_same_audio(tmp_path: Path) -> None:
    spec = PromptSpec("t-menu", "Press one.", "en")
    cache = tmp_path / "cache"
    first = tmp_path / "a" / "t-menu.wav"
    assert build_prompt(spec, first, cache)
    with wave.open(str(first)) as w:
        pcm = struct.unpack(f"<{w.getnframes()}h", w.readframes(w.getnframes()))
    alaw = _alaw_samples(played_path(first))
    assert len(alaw) == len(pcm)
    # Decoded, each A-law sample is its 16-bit sample to within G.711's step at that level.
    assert all(abs(ALAW[b] - s) <= max(16, abs(s) // 16) for b, s in zip(alaw, pcm, strict=True))
    # A new folder takes both files from the cache; an up-to-date one missing its copy gets it.
    second = tmp_path / "b" / "t-menu.wav"
    assert build_prompt(spec, second, cache)
    assert _alaw_samples(played_path(second)) == alaw
    played_path(second).unlink()
    assert not build_prompt(spec, second, cache)
    assert _alaw_samples(played_path(second)) == alaw
