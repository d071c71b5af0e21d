"""The tests' judge of what a party heard (tests/sip/audio.py), fed the broken cases it exists
for: a tone heard in pieces whose phases do not line up (a re-pairing, a dropped buffer) and a
short leak of a voice that must not be heard."""

from __future__ import annotations

import math

from tests.sip.audio import WINDOW, peak_level, steady_level, tone_level


def _tone(hz: float, seconds: float, phase: float = 0.0, amplitude: int = 8000) -> list[int]:
    step = 2 * math.pi * hz / 8000
    return [int(amplitude * math.sin(phase + step * i)) for i in range(int(8000 * seconds))]


def test_a_tone_heard_in_pieces_out_of_phase_reads_loud_by_half_seconds_not_as_a_whole() -> None:
    # Six pieces of 1,000 Hz, each 0.5 s, every other one half a cycle late: what a phone's dump
    # looks like through re-pairings. One Goertzel over the whole cancels them (the old check read
    # such a dump as 284); the half seconds each hold the tone whole.
    pieces = [s for k in range(6) for s in _tone(1000.0, 0.5, phase=math.pi * (k % 2))]
    assert tone_level(pieces, 1000.0) < 300
    assert steady_level(pieces, 1000.0) > 7000


def test_a_voice_leaking_for_a_moment_is_caught_by_the_loudest_window() -> None:
    # 2.5 s of silence but for 30 ms of the far agent: under the "not heard" bound (120) averaged
    # over the phase, as the old check read it, not in its loudest half second.
    leak = [0] * (2 * WINDOW + 1000) + _tone(1700.0, 0.03) + [0] * (2 * WINDOW + 1000)
    assert tone_level(leak, 1700.0) < 120
    assert peak_level(leak, 1700.0) > 400
    assert peak_level([0] * (5 * WINDOW), 1700.0) == 0.0


def test_nothing_heard_reads_zero() -> None:
    assert steady_level([], 440.0) == 0.0 and peak_level([], 440.0) == 0.0
    # Less than a window's worth is judged as one window: a short phase is not read as silence.
    assert steady_level(_tone(440.0, 0.2), 440.0) > 7000
