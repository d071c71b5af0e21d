"""What a caller hears while they wait in a queue, and when they stop waiting (F12). Pure.

One QueueTreatment per queued call: it announces the caller's position and expected wait at once
and then every `every_s`, and says when the flow's maximum wait is reached (then the call control
takes the call out of the queue and calls FlowRun.on_max_wait). Position and expected wait come
from the ACD at each tick; time is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from site_node.callcontrol.ivr_flow.actions import Announcements, Play


@dataclass(frozen=True)
class MaxWaitReached:
    waited_s: float


TreatmentAction = Play | MaxWaitReached


class QueueTreatment:
    def __init__(self, announcements: Announcements, queued_at: float) -> None:
        self._spec = announcements
        self._queued_at = queued_at
        self._next_announcement: float | None = queued_at
        self._over = False
        self.announced = 0

    @property
    def deadline(self) -> float | None:
        """When on_tick is next due: an announcement or the maximum wait, whichever comes first."""
        if self._over:
            return None
        times = [t for t in (self._next_announcement, self._max_wait_at()) if t is not None]
        return min(times) if times else None

    def on_tick(self, now: float, position: int, expected_wait_s: float | None) -> list[TreatmentAction]:
        """`position` 1 is next in line; `expected_wait_s` None when the ACD cannot tell."""
        if self._over:
            return []
        max_at = self._max_wait_at()
        if max_at is not None and now >= max_at:
            self._over = True
            return [MaxWaitReached(now - self._queued_at)]
        if self._next_announcement is None or now < self._next_announcement:
            return []
        self._next_announcement = now + self._spec.every_s
        self.announced += 1
        return self._say(position, expected_wait_s)

    def stop(self) -> None:
        """Answered, abandoned, or moved: nothing more is said."""
        self._over = True

    def _max_wait_at(self) -> float | None:
        max_wait = self._spec.max_wait_s
        return None if max_wait is None else self._queued_at + max_wait

    def _say(self, position: int, expected_wait_s: float | None) -> list[TreatmentAction]:
        spec = self._spec
        out: list[TreatmentAction] = []
        if spec.position_text and position >= 1:
            out.append(
                Play(spec.position_prompt_id, spec.position_text.replace("{position}", str(position)), False)
            )
        if spec.wait_text and expected_wait_s is not None and math.isfinite(expected_wait_s):
            # Whole minutes, rounded up: a caller told "1 minute" should not wait two.
            minutes = max(1, math.ceil(expected_wait_s / 60))
            out.append(Play(spec.wait_prompt_id, spec.wait_text.replace("{wait_min}", str(minutes)), False))
        return out
