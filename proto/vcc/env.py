"""A number from the environment within its bounds, or an on/off switch: every process's switches
of this kind (the shipper's linger, the collector's threshold) read and refuse a bad value the
same way."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

N = TypeVar("N", int, float)


def bounded(name: str, parse: Callable[[str], N], low: N, high: N, what: str) -> N | None:
    """The value of `name` (None: unset or blank); ValueError naming it, its bounds and the bad
    value when it does not parse or lies outside [low, high]."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = parse(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ValueError(f"{name}: {what} from {_shown(low)} to {_shown(high)}, not {raw!r}")
    return value


def _shown(bound: float) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


def switch(name: str, off: str, on: str) -> bool:
    """An on/off setting: "1" or unset is on, "0" off; ValueError naming both otherwise."""
    raw = os.environ.get(name, "").strip()
    if raw not in ("", "0", "1"):
        raise ValueError(f"{name}: 0 ({off}) or 1 ({on}), not {raw!r}")
    return raw != "0"
