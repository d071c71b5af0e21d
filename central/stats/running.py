"""Today's figures by city of entry kept running (pure): updated at ingest, read at no cost.

Central's Prometheus scrape used to re-read every record of the day from the database; these
figures are the same ones (`call_figures` of each of today's calls, per entry site) kept up to
date from the records the store folds at ingest, and seeded once from the database when a
replica becomes leader.

Each call counts once: the figures hold each call's latest contribution, and a call seen again
replaces its old contribution instead of adding to it. "Latest" is the record that knows the most
events (the `unique_calls` rule): events are never deleted, so a record folded from more events
is the newer one, whatever order concurrent ingests or a seeding read report them in. A duplicate
event refolds the same record and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from central.stats.intervals import DAY_S, CallFacts, Figures, StatsPolicy, call_figures, interval_start

# The counts kept (what /metrics shows: calls by outcome, the service level's parts); a call adds
# offered=1 and one "shape" of these. Few shapes exist, so each call holds a shared tuple.
COUNTED = ("answered", "abandoned", "short_abandoned", "blocked", "failed", "in_progress", "answered_in_sl")
Shape = tuple[int, ...]


@dataclass
class _Day:
    # Per call: the event count and end of the record counted, its entry site, its shape (about
    # 200 bytes a call with its id: the map lives for the day, see docs/OPERATIONS.md).
    calls: dict[str, tuple[int, bool, str, Shape]] = field(default_factory=dict)
    by_site: dict[str, list[int]] = field(default_factory=dict)


class RunningFigures:
    """Counts per (local) day and entry site; a call belongs to the day of its arrival."""

    def __init__(self, policy: StatsPolicy) -> None:
        self.policy = policy
        self._days: dict[float, _Day] = {}
        self._shapes: dict[Shape, Shape] = {}
        self._sites: dict[str, str] = {}

    def clear(self) -> None:
        self._days.clear()

    def update(self, calls: list[CallFacts]) -> None:
        """Count these calls (new ones added, known ones replaced by a record that knows more)."""
        for c in calls:
            start = interval_start(c.arrived_at, DAY_S, self.policy.utc_offset_s)
            day = self._days.get(start)
            if day is None:
                if self._days and start < max(self._days) - DAY_S:
                    continue  # a record of a day gone (today's figures never show it)
                day = self._days[start] = _Day()
                # Unscraped, the map still ends with the day before yesterday.
                for d in [d for d in self._days if d < start - DAY_S]:
                    del self._days[d]
            old = day.calls.get(c.call_id)
            if old is not None:
                if (c.event_count, c.ended) < (old[0], old[1]):
                    continue
                _bump(day.by_site[old[2]], old[3], -1)
            f = call_figures(c, self.policy)
            shape = tuple(getattr(f, name) for name in COUNTED)
            shape = self._shapes.setdefault(shape, shape)
            site = self._sites.setdefault(c.entry_site_id, c.entry_site_id)
            day.calls[c.call_id] = (c.event_count, c.ended, site, shape)
            _bump(day.by_site.setdefault(site, [0] * (len(COUNTED) + 1)), shape, 1)

    def today(self, now: float) -> dict[str, Figures]:
        """Today's counts per entry site (the other Figures fields stay 0); earlier days are dropped."""
        today = interval_start(now, DAY_S, self.policy.utc_offset_s)
        for d in [d for d in self._days if d < today]:
            del self._days[d]
        day = self._days.get(today)
        if day is None:
            return {}
        return {
            site_id: Figures(offered=counts[0], **dict(zip(COUNTED, counts[1:], strict=True)))
            for site_id, counts in day.by_site.items()
        }


def _bump(counts: list[int], shape: Shape, sign: int) -> None:
    counts[0] += sign
    for i, n in enumerate(shape, start=1):
        counts[i] += sign * n
