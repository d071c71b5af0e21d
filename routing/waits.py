"""Expected wait time of a queued call, from what a site knows right now."""

from __future__ import annotations

import math


def expected_wait_s(position: int, agents_staffed: int, mean_handle_s: float) -> float:
    """Calls ahead (and this one) served by the staffed agents at the mean handle time.

    position 1 = next to be served. With nobody staffed the wait is unbounded (inf).
    """
    if position <= 0:
        return 0.0
    if agents_staffed <= 0:
        return math.inf
    return position * mean_handle_s / agents_staffed


def smoothed(previous: float, sample: float, weight: float = 0.1) -> float:
    """Exponentially weighted moving average, used for the mean handle time."""
    return previous + weight * (sample - previous)
