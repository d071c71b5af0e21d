"""A process's stop in bounded steps: each step has a deadline, and one that overruns it is
cancelled, given a moment to unwind, and left behind with a warning naming it, so the next steps
(the outbox's last commit, the trace flush) still run and the stop as a whole always ends.

A stop must end even when a part is stuck (an etcd client's queue that never drains, a stream
handler slow to notice its cancellation on a loaded machine): a stop that never returns is worse
than one that skips a courtesy (a lease revoked, a channel closed) — the lease expires by itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterable
from typing import Any

log = logging.getLogger(__name__)

# After its deadline, how long a cancelled step may take to unwind before it is left behind.
UNWIND_S = 1.0


class Stopping:
    """The steps of one stop; `overrun` names the steps that missed their deadline."""

    def __init__(self, who: str) -> None:
        self.who = who
        self.overrun: list[str] = []
        self.failed: list[str] = []
        self._started = time.monotonic()

    async def step(self, name: str, aw: Awaitable[object], timeout_s: float) -> bool:
        """Run one step within `timeout_s`; True when it finished in time without an error."""
        task = asyncio.ensure_future(aw)
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout_s)
        except asyncio.CancelledError:
            # The stop itself was cancelled: the step goes with it.
            task.cancel()
            raise
        if not done:
            task.cancel()
            unwound, _ = await asyncio.wait({task}, timeout=UNWIND_S)
            self.overrun.append(name)
            log.warning(
                "%s stopping: %s did not end within %.1fs%s; going on",
                self.who,
                name,
                timeout_s,
                "" if unwound else " nor unwind when cancelled (left behind)",
            )
            if unwound and not task.cancelled():
                task.exception()  # retrieved: no "never retrieved" noise
            return False
        if task.cancelled():
            self.failed.append(name)
            log.warning("%s stopping: %s was cancelled; going on", self.who, name)
            return False
        exc = task.exception()
        if exc is not None:
            self.failed.append(name)
            log.warning("%s stopping: %s failed (%s: %s); going on", self.who, name, type(exc).__name__, exc)
            return False
        return True

    async def tasks(self, name: str, tasks: Iterable[asyncio.Future[Any]], timeout_s: float) -> bool:
        """Cancel background tasks and wait (bounded) for them to end."""
        pending = [t for t in tasks if not t.done()]
        for task in pending:
            task.cancel()
        if not pending:
            return True
        ended = await self.step(name, asyncio.gather(*pending, return_exceptions=True), timeout_s)
        stuck = [_name(t) for t in pending if not t.done()]
        if stuck:
            log.warning("%s stopping: still running after their cancellation: %s", self.who, ", ".join(stuck))
        return ended

    def took_s(self) -> float:
        return time.monotonic() - self._started


async def finish(task: asyncio.Future[Any], grace_s: float) -> None:
    """Give a background task `grace_s` to end by itself, then cancel it and wait for it to end.

    Its error is raised here, its cancellation is not; the caller's own cancellation always
    propagates. Not `wait_for` under a suppress of CancelledError: that swallowed the cancel of
    the caller's stop too (and on Python 3.11 a wait_for whose task ends in the instant the caller
    is cancelled drops that cancel, gh-86296), so a stop looping over its tasks went on regardless.
    """
    if not task.done():
        try:
            await asyncio.wait({task}, timeout=grace_s)
        finally:
            # Late, or the caller itself cancelled: the task goes with it.
            if not task.done():
                task.cancel()
        if not task.done():
            await asyncio.wait({task})
    if not task.cancelled() and (exc := task.exception()) is not None:
        raise exc


def _name(task: asyncio.Future[Any]) -> str:
    return task.get_name() if isinstance(task, asyncio.Task) else repr(task)
