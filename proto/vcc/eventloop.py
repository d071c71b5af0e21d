"""The event loop every vcc process runs on: asyncio's own, or uvloop on request.

`VCC_EVENT_LOOP=uvloop` runs a process on uvloop (libuv under asyncio's API), which makes the
loop's own work cheaper: a bare grpc.aio round trip costs about two thirds of its CPU. In the
province the gain measured within the noise (`vcc bench throughput --compare loop`, about 3 %:
grpc.aio's Python per message dominates), and a site node under heavy load once hung in its
graceful stop on uvloop in the suite, so asyncio's loop stays the default until that is
understood. Where uvloop cannot be imported, `uvloop` falls back to asyncio's loop with a log line.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from vcc import env

log = logging.getLogger(__name__)

T = TypeVar("T")

LOOP_ENV = "VCC_EVENT_LOOP"
CHOICES = ("uvloop", "asyncio")
# The cyclic collector's first threshold (allocations between two young collections); unset:
# Python's own (700). A server allocating a message's objects by the thousand a second runs the
# collector, and its older generations' scans of every long-lived object, that much less often.
GC_ENV = "VCC_GC_GEN0"


class EventLoopError(ValueError):
    """VCC_EVENT_LOOP names no loop vcc knows."""


def chosen(name: str | None = None) -> str:
    """The loop asked for: `name`, else the environment's ("asyncio" unless VCC_EVENT_LOOP says
    otherwise)."""
    value = (name if name is not None else os.environ.get(LOOP_ENV, "")).strip().lower() or "asyncio"
    if value not in CHOICES:
        raise EventLoopError(f"{LOOP_ENV}: one of {', '.join(CHOICES)}, not {value!r}")
    return value


def loop_factory(name: str | None = None) -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """(name of the loop in use, how to make one)."""
    if chosen(name) == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.info("uvloop is not installed: running on asyncio's own event loop")
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", asyncio.new_event_loop


def gc_threshold() -> int | None:
    """The collector's first threshold asked for by VCC_GC_GEN0 (None: Python's own)."""
    try:
        return env.bounded(GC_ENV, int, 100, 1_000_000, "a whole number")
    except ValueError as exc:
        raise EventLoopError(str(exc)) from None


def tune_gc(threshold: int | None) -> None:
    """Young collections every `threshold` allocations (None: as Python has it), and what was
    built before the loop starts (modules, the config) frozen out of every later scan."""
    if threshold is None:
        return
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(threshold, older, oldest)
    gc.freeze()


def run(main: Coroutine[Any, Any, T], name: str | None = None) -> T:
    """asyncio.run(main) on the chosen loop (`name`, else the environment's), with the collector
    as VCC_GC_GEN0 asks."""
    try:
        _, factory = loop_factory(name)
        tune_gc(gc_threshold())
    except EventLoopError:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def in_use() -> str:
    """The name of the running loop's kind ("uvloop" or "asyncio")."""
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
