"""Test helpers: wait for a condition instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

T = TypeVar("T")

# A server that is up may still miss one answer's deadline, or one connection attempt, while every
# core of the machine is busy: a check that met one of these is asked again (until the timeout).
TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


async def eventually(
    check: Callable[[], Awaitable[T]],
    timeout_s: float = 15.0,
    interval_s: float = 0.05,
    what: str = "condition",
) -> T:
    """Call `check` until it returns without raising AssertionError (and not None/False); a gRPC
    call of the check that failed UNAVAILABLE or DEADLINE_EXCEEDED counts as not yet."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while True:
        try:
            result = await check()
            if result is not None and result is not False:
                return result
        except AssertionError as exc:
            last = exc
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in TRANSIENT:
                raise
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout_s}s: {last}") from last
        await asyncio.sleep(interval_s)


def full_width(text: str) -> str:
    """ASCII digits as a Chinese input method types them (U+FF10 to U+FF19): `str.isdigit()`,
    `int()` and `\\d` take them, vcc refuses them (vcc.digits)."""
    return "".join(chr(ord(c) + 0xFEE0) if "0" <= c <= "9" else c for c in text)
