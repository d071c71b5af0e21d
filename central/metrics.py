"""Central's Prometheus figures: leadership, every city's health, today's records, ingest, database.

Read at each scrape from the live parts (leadership, live state, the store's own counts). The
records' figures (service level, calls by outcome today, per city of entry) are running ones
(central.stats.running): the store tells them each batch's folded records at ingest, and a new
leader seeds them once from the database, so a scrape costs no database read. They are the
figures the day's records give (the statistics' definitions, each call once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from central.leadership import Leadership
from central.live_state import Health, LiveState
from central.records import CallRecord
from central.stats.intervals import DAY_S, Figures, StatsPolicy, facts, interval_start
from central.stats.running import RunningFigures
from central.stats.service import StatsService
from central.store import Store


@dataclass
class RecordFigures:
    """Today's figures by city of entry (empty on a follower)."""

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
        policy: StatsPolicy | None = None,
    ) -> None:
        self._replica = replica_id
        self._clock = clock
        self._leadership = leadership
        self._live = live_state
        self._store = store
        self._site_ids = site_ids
        self.policy = policy or StatsPolicy()
        self.running = RunningFigures(self.policy)
        store.record_listeners.append(self.ingested)

    def ingested(self, records: Sequence[CallRecord]) -> None:
        """The store committed these records (a batch's calls folded again): count them."""
        self.running.update([f for r in records if (f := facts(r)) is not None])

    async def seed(self, stats: StatsService) -> None:
        """On becoming leader: today's totals from the database (a restarted or new leader)."""
        self.running.clear()
        day = interval_start(self._clock(), DAY_S, self.policy.utc_offset_s)
        self.running.update(await stats.calls_between(day, day + DAY_S))

    def deposed(self) -> None:
        # Another replica ingests now: these figures would only go stale.
        self.running.clear()

    @property
    def records(self) -> RecordFigures:
        """Today's figures on the leader, read from the running counts (no database read)."""
        leadership = self._leadership()
        if leadership is None or not leadership.is_leader:
            return RecordFigures()
        by_site: dict[str, Figures] = {s: Figures() for s in self._site_ids}
        by_site.update(self.running.today(self._clock()))
        return RecordFigures(by_site, self.policy.sl_target, self.policy.sl_threshold_s)

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
