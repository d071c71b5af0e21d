"""Central's Prometheus figures: leadership, every city's health, today's records, ingest, database.

Read at each scrape from the live parts (leadership, live state, the store's own counts). The
records' figures (service level, calls by outcome today, per city of entry) need a database read:
the leader refreshes them before each scrape through the statistics service, which caches its
read for a second, the same read the dashboard makes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from central.leadership import Leadership
from central.live_state import Health, LiveState
from central.stats.intervals import Figures, call_figures, unique_calls
from central.stats.service import StatsService
from central.store import Store


@dataclass
class RecordFigures:
    """Today's figures by city of entry, as of the last refresh (empty on a follower)."""

    by_site: dict[str, Figures] = field(default_factory=dict)
    sl_target: float = 0.0
    sl_threshold_s: float = 0.0


class CentralCollector(Collector):
    def __init__(
        self,
        *,
        replica_id: str,
        clock: Callable[[], float],
        leadership: Callable[[], Leadership | None],
        live_state: LiveState,
        store: Store,
        site_ids: list[str],
    ) -> None:
        self._replica = replica_id
        self._clock = clock
        self._leadership = leadership
        self._live = live_state
        self._store = store
        self._site_ids = site_ids
        self.records = RecordFigures()

    async def refresh(self, stats: StatsService | None) -> None:
        """Before a scrape: today's records, on the leader only (followers show no record figures)."""
        leadership = self._leadership()
        if stats is None or leadership is None or not leadership.is_leader:
            self.records = RecordFigures()
            return
        calls, _ = await stats.today()
        by_site: dict[str, Figures] = {s: Figures() for s in self._site_ids}
        for c in unique_calls(calls):
            by_site.setdefault(c.entry_site_id, Figures()).add(call_figures(c, stats.policy))
        self.records = RecordFigures(by_site, stats.policy.sl_target, stats.policy.sl_threshold_s)

    def collect(self) -> Iterator[Metric]:
        replica = self._replica
        leadership = self._leadership()
        leader = GaugeMetricFamily(
            "vcc_central_leader",
            "1 on the replica that leads the province, 0 on the others.",
            labels=["replica"],
        )
        leader.add_metric([replica], 1 if leadership is not None and leadership.is_leader else 0)
        yield leader
        epoch = GaugeMetricFamily(
            "vcc_central_leader_epoch",
            "The leadership epoch this replica knows (its own term while it leads).",
            labels=["replica"],
        )
        if leadership is not None:
            epoch.add_metric([replica], leadership.epoch)
        yield epoch

        # Every city's health, as the router and the dashboard see it (meaningful on the leader,
        # which takes the sites' streams; a follower sees etcd's view).
        up = GaugeMetricFamily(
            "vcc_central_site_up",
            "1 while central trusts the city's live state (up), 0 when stale or down.",
            labels=["replica", "site"],
        )
        status = GaugeMetricFamily(
            "vcc_central_site_status",
            "The city's health: 1 for its current status.",
            labels=["replica", "site", "status"],
        )
        age = GaugeMetricFamily(
            "vcc_central_site_state_age_seconds",
            "Age of the newest live state central has of the city.",
            labels=["replica", "site"],
        )
        for site in self._live.sites(self._clock()):
            up.add_metric([replica, site.site_id], 1 if site.health is Health.UP else 0)
            for h in Health:
                status.add_metric([replica, site.site_id, str(h)], 1 if site.health is h else 0)
            if site.age_s is not None:
                age.add_metric([replica, site.site_id], site.age_s)
        yield up
        yield status
        yield age

        figures = self._store.figures
        retries = CounterMetricFamily(
            "vcc_central_db_retries",
            "Database transactions run again: conflicts (SQLSTATE 40001, a busy SQLite) or a database away.",
            labels=["replica", "reason"],
        )
        for reason, n in sorted(figures.retries.items()):
            retries.add_metric([replica, reason], n)
        yield retries
        stored = CounterMetricFamily(
            "vcc_central_events_ingested",
            "Call events stored, per site that sent them.",
            labels=["replica", "site"],
        )
        dupes = CounterMetricFamily(
            "vcc_central_events_duplicate",
            "Call events received again and ignored (exactly-once ingest).",
            labels=["replica", "site"],
        )
        lag = GaugeMetricFamily(
            "vcc_central_ingest_lag_seconds",
            "Age of the oldest event of the site's latest batch when central stored it.",
            labels=["replica", "site"],
        )
        for site_id, n in sorted(figures.stored.items()):
            stored.add_metric([replica, site_id], n)
            dupes.add_metric([replica, site_id], figures.duplicates.get(site_id, 0))
            lag.add_metric([replica, site_id], figures.lag_s.get(site_id, 0.0))
        yield stored
        yield dupes
        yield lag

        records = self.records
        today = GaugeMetricFamily(
            "vcc_central_calls_today",
            "Today's calls in central's records, by city of entry and outcome (leader only).",
            labels=["site", "outcome"],
        )
        sl = GaugeMetricFamily(
            "vcc_central_service_level",
            "Today's service level by city of entry: answered within the threshold / calls handled.",
            labels=["site"],
        )
        for site_id, f in sorted(records.by_site.items()):
            for outcome, n in (
                ("offered", f.offered),
                ("answered", f.answered),
                ("abandoned", f.abandoned + f.short_abandoned),
                ("blocked", f.blocked),
                ("failed", f.failed),
                ("in_progress", f.in_progress),
            ):
                today.add_metric([site_id, outcome], n)
            if f.service_level is not None:
                sl.add_metric([site_id], f.service_level)
        yield today
        yield sl
        target = GaugeMetricFamily(
            "vcc_central_service_level_target",
            "The service level the province aims at (leader only).",
            labels=[],
        )
        threshold = GaugeMetricFamily(
            "vcc_central_service_level_threshold_seconds",
            "The answer time the service level counts against (leader only).",
            labels=[],
        )
        if records.sl_target:
            target.add_metric([], records.sl_target)
            threshold.add_metric([], records.sl_threshold_s)
        yield target
        yield threshold
