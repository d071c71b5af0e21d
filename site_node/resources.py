"""Finite channel pools: trunk groups, tie trunks and boards. Exhaustion is counted, never hidden."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ChannelPool:
    id: str
    # trunk, tie, ivr, fax, recording, conference
    kind: str
    total: int
    busy: int = 0
    # Requests refused because every channel was busy.
    refused: int = 0

    def acquire(self) -> bool:
        if self.busy >= self.total:
            self.refused += 1
            return False
        self.busy += 1
        return True

    def release(self) -> None:
        if self.busy <= 0:
            raise RuntimeError(f"{self.kind} {self.id}: released more channels than acquired")
        self.busy -= 1

    @property
    def free(self) -> int:
        return self.total - self.busy
