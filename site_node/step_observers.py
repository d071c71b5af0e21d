"""What watches each step's effects without taking part in them: the line per transition and the
call's spans, run once the step's messages are on their way.

A step's messages (the caller's `ringing`, the reservation a peer waits for, the agent's offer)
are handed to their streams' tasks while the step is carried out; those tasks run in the loop's
next turn, in the order they were woken. Writing the step's log lines and spans first kept every
waiting side waiting for them (they and the spans' export are about a fifth of a site's samples
in a profile). So the runtime hands each
step's effects here, and they are observed in one callback queued behind the tasks the step woke:
in the order the steps were taken, each in the context (the current span, the bound log ids) its
step ran in, as if observed in the step. A reader that needs them observed (a call's span, for an
RPC made in its trace) calls `catch_up` first.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Sequence

from site_node.callcontrol.domain import Effect
from vcc import env

log = logging.getLogger(__name__)

Observer = Callable[[Sequence[Effect]], None]

# VCC_OBSERVE_AFTER_STEP=0: observed inside the step, before its messages go (as before; `vcc
# bench throughput --compare instep`, `vcc bench routing --compare instep`).
AFTER_STEP_ENV = "VCC_OBSERVE_AFTER_STEP"


def after_step_chosen() -> bool:
    return env.switch(AFTER_STEP_ENV, "observed inside the step", "observed after its messages")


class StepObservers:
    def __init__(self, observers: Sequence[Observer], *, after_step: bool | None = None) -> None:
        self._observers = tuple(observers)
        self._pending: list[tuple[Sequence[Effect], contextvars.Context]] = []
        self._queued = False
        self.after_step = after_step_chosen() if after_step is None else after_step

    def saw(self, effects: Sequence[Effect]) -> None:
        """A step's effects, about to be carried out: observed once `step_done` is called and the
        tasks the step woke have had their turn (at once if observed inside the step)."""
        if not effects or not self._observers:
            return
        if not self.after_step:
            self._observe(effects)
            return
        self._pending.append((effects, contextvars.copy_context()))

    def step_done(self) -> None:
        """The step's messages are handed to their tasks: what it made is observed after them."""
        if self._queued or not self._pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # No loop (a tool driving the runtime by hand): nothing waits on a stream.
            self.catch_up()
            return
        self._queued = True
        loop.call_soon(self.catch_up)

    def catch_up(self) -> None:
        """Observe every step seen so far, oldest first."""
        self._queued = False
        while self._pending:
            pending, self._pending = self._pending, []
            for effects, context in pending:
                context.run(self._observe, effects)

    def _observe(self, effects: Sequence[Effect]) -> None:
        for observer in self._observers:
            try:
                observer(effects)
            except Exception:
                # An observer's fault loses its line or span, never the call (the step is done).
                log.exception("observing a step failed (%s)", getattr(observer, "__qualname__", observer))
