"""Test helpers: wait for a condition instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

T = TypeVar("T")

# A server still starting, or a TLS handshake slow on a busy machine: the condition is not yet
# reached, not broken.
_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


async def eventually(
    check: Callable[[], Awaitable[T]],
    timeout_s: float = 15.0,
    interval_s: float = 0.05,
    what: str = "condition",
) -> T:
    """Call `check` until it returns without raising AssertionError (and not None/False); an RPC
    that fails UNAVAILABLE or DEADLINE_EXCEEDED counts as not yet."""
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
            if exc.code() not in _TRANSIENT:
                raise
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout_s}s: {last}") from last
        await asyncio.sleep(interval_s)
