"""What the caller's ear heard, judged: a tone's level, a prompt file read, and a comparison of
what was heard with it (length and correlation), written here so the check does not trust any
part of the system it checks. The ear itself (RTP, G.711, RFC 4733 keys, a caller's voice) is
`tools/province/rtp_ear.py`, shared with `vcc call --sip`."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path


def tone_level(samples: list[int], hz: float) -> float:
    """How loud `hz` is in `samples` (Goertzel, amplitude of that frequency's sine)."""
    if not samples:
        return 0.0
    c = 2 * math.cos(2 * math.pi * hz / 8000)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + c * s1 - s2, s1
    return 2 * math.sqrt(max(s1 * s1 + s2 * s2 - c * s1 * s2, 0.0)) / len(samples)


def read_wav(path: Path) -> list[int]:
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == 8000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        frames = w.readframes(w.getnframes())
    return list(struct.unpack(f"<{len(frames) // 2}h", frames))


def voiced(samples: list[int], threshold: int = 300) -> list[int]:
    """From the first to the last sample louder than `threshold` (silence around it dropped:
    rtpengine keeps the stream going with silence once a file has played)."""
    loud = [i for i, x in enumerate(samples) if abs(x) > threshold]
    return samples[loud[0] : loud[-1] + 1] if loud else []


def best_correlation(heard: list[int], prompt: list[int], max_lag: int = 160, window: int = 16000) -> float:
    """The highest normalized correlation of the prompt's start with what was heard, over small
    shifts (a packet either way covers jitter in where playback began)."""
    ref = prompt[:window]
    best = -1.0
    for lag in range(0, max_lag + 1, 2):
        seg = heard[lag : lag + len(ref)]
        n = min(len(seg), len(ref))
        if n < 800:
            break
        best = max(best, _ncc(seg[:n], ref[:n]))
    for lag in range(2, max_lag + 1, 2):
        seg = ref[lag:]
        n = min(len(seg), len(heard))
        if n < 800:
            break
        best = max(best, _ncc(heard[:n], seg[:n]))
    return best


def _ncc(a: list[int], b: list[int]) -> float:
    sab = sum(x * y for x, y in zip(a, b, strict=True))
    saa = sum(x * x for x in a)
    sbb = sum(y * y for y in b)
    return sab / math.sqrt(saa * sbb) if saa and sbb else 0.0


# Half a second at 8 kHz: the window a tone is judged in.
WINDOW = 4000


def windows(samples: list[int], size: int = WINDOW) -> list[list[int]]:
    """`samples` cut in whole windows (a shorter tail is dropped); fewer than one window's worth
    is one window of what there is (a short phase on a starved machine is still judged)."""
    if 0 < len(samples) < size:
        return [samples]
    return [samples[i : i + size] for i in range(0, len(samples) - size + 1, size)]


def window_levels(samples: list[int], hz: float, size: int = WINDOW) -> list[float]:
    return [tone_level(w, hz) for w in windows(samples, size)]


def steady_level(samples: list[int], hz: float, size: int = WINDOW) -> float:
    """How loud `hz` is over `samples`, as the mean of its level in each window.

    Not one Goertzel over the whole stretch: a tone heard through re-pairings, mixer restarts and
    the jitter of a busy machine comes in pieces whose phases do not line up (a sample dropped
    here, a packet late there), and summed coherently over seconds the pieces cancel: a phone that
    heard an agent at 8,000 in most half seconds of a call read 284 over the whole dump
    (docs/RELIABILITY.md, the cross-city voice checks). In half a second a piece is coherent."""
    levels = window_levels(samples, hz, size)
    return sum(levels) / len(levels) if levels else 0.0


def peak_level(samples: list[int], hz: float, size: int = WINDOW) -> float:
    """The loudest window's level of `hz`: a tone that must not be heard is under a bound in
    every window, not only on average."""
    return max(window_levels(samples, hz, size), default=0.0)
