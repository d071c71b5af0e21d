"""Finite channels: trunk groups, tie trunks to other cities and boards (IVR, fax, recording,
conference). Exhaustion is counted, never hidden."""

from __future__ import annotations

from dataclasses import dataclass

from vcc.config import SiteConfig


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


class Resources:
    """Every channel pool of one site."""

    def __init__(self, site: SiteConfig) -> None:
        self.trunks = {t.id: ChannelPool(t.id, "trunk", t.channels) for t in site.trunk_groups}
        self.boards = {b.id: ChannelPool(b.id, b.kind, b.channels) for b in site.boards}
        self.ties = {t.peer: ChannelPool(f"tie:{t.peer}", "tie", t.channels) for t in site.tie_trunks}

    def take_trunk(self, trunk_group: str) -> ChannelPool | None:
        """A channel of the named group, or of any group; None (counted) when all are busy."""
        if trunk_group:
            pool = self.trunks[trunk_group]
            return pool if pool.acquire() else None
        for pool in self.trunks.values():
            if pool.free > 0:
                pool.acquire()
                return pool
        # Count the refusal on the first group: the network offered it to the site as a whole.
        next(iter(self.trunks.values())).refused += 1
        return None

    def take_board(self, kind: str) -> tuple[bool, str | None]:
        """(got a channel, the board it is on). A site with no board of this kind has virtual,
        unlimited channels: (True, None)."""
        pools = [b for b in self.boards.values() if b.kind == kind]
        if not pools:
            return True, None
        for pool in pools:
            if pool.acquire():
                return True, pool.id
        return False, None

    def release_board(self, board_id: str | None) -> None:
        if board_id:
            self.boards[board_id].release()

    def take_tie(self, peer: str) -> bool:
        """A tie-trunk channel to `peer` (False: no tie trunk there, or every channel busy)."""
        tie = self.ties.get(peer)
        return tie is not None and tie.acquire()

    def tie_free(self, peer: str) -> bool:
        tie = self.ties.get(peer)
        return tie is not None and tie.free > 0

    def release_tie(self, peer: str) -> None:
        self.ties[peer].release()
