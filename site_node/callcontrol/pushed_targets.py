"""Central's ready overflow targets, as last pushed to this site (pure: time comes in).

Central pushes, on the state stream, where a call of each skill group should go if it must leave
this city now (routing.global_router.ready_targets), best first. When one of our calls is due to
leave (leaving.py's rules: overflow delay, nobody staffed, pooled), the site offers it at
once to the first target that is still fresh, not excluded for the call and not used up, instead
of asking central and waiting for the answer; central is told afterwards (ReportRoute).

Central stays the authority: a site offers only to a target central pushed, only while the
target's state is younger than the routing policy's freshness limit (`max_state_age_s`, counted
from the age central saw plus the time since the push arrived), and at most as many calls as
the target had ready agents. The target reserves an agent or refuses; a refused offer puts the
call back in our queue with the target excluded, and the next attempt takes the next target or
asks central (RouteCall).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PushedTarget:
    skill_group: str
    site_id: str
    ready_agents: int
    # Age of the target's state at central when it was chosen.
    state_age_s: float


@dataclass(slots=True)
class _Held:
    site_id: str
    # Calls we may still offer there on this push.
    credit: int
    # Our clock: until when the target's state is fresh enough.
    fresh_until: float


class PushedTargets:
    def __init__(self, max_state_age_s: float) -> None:
        self.max_state_age_s = max_state_age_s
        self.epoch = 0
        self._by_skill: dict[str, list[_Held]] = {}
        # Figures for the record and the tests.
        self.used = 0
        self.expired = 0

    def update(self, now: float, epoch: int, targets: Sequence[PushedTarget]) -> None:
        """A new push replaces the previous one whole."""
        self.epoch = epoch
        by_skill: dict[str, list[_Held]] = {}
        for t in targets:
            if t.ready_agents <= 0 or not t.site_id:
                continue
            left = self.max_state_age_s - max(0.0, t.state_age_s)
            if left <= 0:
                continue
            by_skill.setdefault(t.skill_group, []).append(_Held(t.site_id, t.ready_agents, now + left))
        self._by_skill = by_skill

    def clear(self) -> None:
        """Central is gone (or another replica leads): nothing pushed is trusted any more."""
        self._by_skill = {}

    def pick(self, now: float, skill_group: str, excluded: Collection[str]) -> tuple[str, int] | None:
        """The target for one call that must leave now, and the push's epoch; takes one credit.
        None: nothing fresh and usable was pushed (ask central)."""
        for held in self._by_skill.get(skill_group, ()):
            if held.site_id in excluded or held.credit <= 0:
                continue
            if now > held.fresh_until:
                self.expired += 1
                continue
            held.credit -= 1
            self.used += 1
            return held.site_id, self.epoch
        return None

    def targets(self, skill_group: str) -> list[str]:
        return [h.site_id for h in self._by_skill.get(skill_group, ())]
