"""Idempotency keys: a mutating request retried with the same key is applied once.

The first request's reply (or error) is kept for a while and handed to every retry; a retry
that arrives while the first is still running waits for it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from vcc.errors import InvalidArgument

T = TypeVar("T")

MAX_KEY_LENGTH = 128


def check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidArgument("bad-idempotency-key", "idempotency_key: required, at most 128 characters")


class IdempotencyCache:
    def __init__(self, max_entries: int = 100_000) -> None:
        self._max = max_entries
        self._results: OrderedDict[tuple[str, str], asyncio.Future[Any]] = OrderedDict()

    async def once(self, scope: str, key: str, action: Callable[[], Awaitable[T]]) -> T:
        """Run `action` for the first request with (scope, key); replay its outcome to retries."""
        check_key(key)
        slot = (scope, key)
        fut = self._results.get(slot)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._results[slot] = fut
            if len(self._results) > self._max:
                self._results.popitem(last=False)
            try:
                fut.set_result(await action())
            except asyncio.CancelledError:
                # Nothing was decided: let a retry run it again.
                self._results.pop(slot, None)
                fut.cancel()
                raise
            except Exception as exc:
                fut.set_exception(exc)
                fut.exception()  # marks it retrieved: a retry may never come
        return await asyncio.shield(fut)
