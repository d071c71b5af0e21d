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


@dataclass
class _Day:
    # Per call: (event_count, ended) of the record counted, its entry site and its contribution.
    calls: dict[str, tuple[tuple[int, bool], str, Figures]] = field(default_factory=dict)
    by_site: dict[str, Figures] = field(default_factory=dict)


class RunningFigures:
    """Figures per (local) day and entry site; a call belongs to the day of its arrival."""

    def __init__(self, policy: StatsPolicy) -> None:
        self.policy = policy
        self._days: dict[float, _Day] = {}

    def clear(self) -> None:
        self._days.clear()

    def update(self, calls: list[CallFacts]) -> None:
        """Count these calls (new ones added, known ones replaced by a record that knows more)."""
        for c in calls:
            day = self._days.setdefault(interval_start(c.arrived_at, DAY_S, self.policy.utc_offset_s), _Day())
            rank = (c.event_count, c.ended)
            old = day.calls.get(c.call_id)
            if old is not None:
                if rank < old[0]:
                    continue
                _subtract(day.by_site.setdefault(old[1], Figures()), old[2])
            f = call_figures(c, self.policy)
            day.calls[c.call_id] = (rank, c.entry_site_id, f)
            day.by_site.setdefault(c.entry_site_id, Figures()).add(f)

    def today(self, now: float) -> dict[str, Figures]:
        """Today's figures per entry site (copies); earlier days are dropped."""
        today = interval_start(now, DAY_S, self.policy.utc_offset_s)
        for d in [d for d in self._days if d < today]:
            del self._days[d]
        day = self._days.get(today)
        if day is None:
            return {}
        result: dict[str, Figures] = {}
        for site_id, f in day.by_site.items():
            result[site_id] = Figures()
            result[site_id].add(f)
        return result


def _subtract(total: Figures, part: Figures) -> None:
    negative = Figures()
    negative.add(part)
    for name, value in vars(negative).items():
        setattr(negative, name, -value)
    total.add(negative)
