"""Central's CPU per Prometheus scrape: today's record figures read from the database, or running.

`python -m tools.bench.scrape [CALLS ...]`: for each day size, a SQLite database (as `vcc bench
throughput` runs central) gets that many calls of today through the real store, then central's
collector is scraped alternately the two ways in the same process, and the CPU time of this
process per scrape is printed with the load average:

- read: what each scrape did before (issue 16): today's records read through the statistics
  service (no cache) and counted per city of entry, then the page rendered;
- running: the figures counted at ingest (central.stats.running), the page rendered.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from prometheus_client import CollectorRegistry, generate_latest

from central.db.engine import create_engine
from central.db.migrate import upgrade
from central.leadership import Leadership
from central.live_state import LiveState
from central.metrics import CentralCollector
from central.records import CallEvent, Outcome
from central.stats.intervals import DAY_S, Figures, call_figures, interval_start, unique_calls
from central.stats.service import StatsService
from central.store import Store
from vcc.call_events import EventKind

SITES = ["gz", "sz", "fs"]


def _call(i: int, start: float) -> list[CallEvent]:
    site, call_id = SITES[i % len(SITES)], f"bench-{i:06d}"

    def e(kind: EventKind, dt: float, seq: int, outcome: Outcome = Outcome.UNSPECIFIED) -> CallEvent:
        return CallEvent(
            call_id=call_id, site_id=site, seq=seq, kind=kind, at=start + dt, agent_code="0101",
            skill_group="general", ani="13800000001", dnis="10000", outcome=outcome, data={},
        )  # fmt: skip

    if i % 5 == 4:
        abandoned = Outcome.ABANDONED
        return [e(EventKind.ARRIVED, 0, 1), e(EventKind.ABANDONED, 9, 2), e(EventKind.ENDED, 9, 3, abandoned)]
    return [
        e(EventKind.ARRIVED, 0, 1),
        e(EventKind.QUEUED, 1, 2),
        e(EventKind.RINGING, 2, 3),
        e(EventKind.ANSWERED, 3 + i % 30, 4),
        e(EventKind.ENDED, 60, 5, Outcome.ANSWERED),
    ]


async def _one_day(calls: int, scrapes: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'central.db'}"
        await upgrade(url)
        engine = create_engine(url)
        try:
            store = Store(engine)
            leader = cast(Leadership, SimpleNamespace(is_leader=True, epoch=1))
            collector = CentralCollector(
                replica_id="1", clock=time.time, leadership=lambda: leader,
                live_state=LiveState([(s, s) for s in SITES], lambda: [], 5.0),
                store=store, site_ids=SITES,
            )  # fmt: skip
            registry = CollectorRegistry()
            registry.register(collector)
            now = time.time()
            day = interval_start(now, DAY_S, collector.policy.utc_offset_s)
            span = max(1.0, now - day - 120.0)
            batch: list[CallEvent] = []
            for i in range(calls):
                batch += _call(i, day + span * i / calls)
                if len(batch) >= 500 or i == calls - 1:
                    await store.ingest(SITES[0], [ev for ev in batch if ev.site_id == SITES[0]])
                    for site in SITES[1:]:
                        await store.ingest(site, [ev for ev in batch if ev.site_id == site])
                    batch = []
            stats = StatsService(engine, collector.policy, cache_s=0.0)

            async def read_scrape() -> bytes:
                # The pre-issue-16 refresh, as it ran before each scrape.
                todays, _ = await stats.today()
                by_site: dict[str, Figures] = {s: Figures() for s in SITES}
                for c in unique_calls(todays):
                    by_site.setdefault(c.entry_site_id, Figures()).add(call_figures(c, stats.policy))
                return generate_latest(registry)

            async def running_scrape() -> bytes:
                return generate_latest(registry)

            cpu = {"read": 0.0, "running": 0.0}
            for _ in range(scrapes):
                for name, scrape in (("read", read_scrape), ("running", running_scrape)):
                    t = time.process_time()
                    await scrape()
                    cpu[name] += time.process_time() - t
            offered = sum(f.offered for f in collector.records.by_site.values())
            return {
                "calls": calls,
                "offered_running": offered,
                "read_ms": 1000 * cpu["read"] / scrapes,
                "running_ms": 1000 * cpu["running"] / scrapes,
            }
        finally:
            await engine.dispose()


def main(argv: list[str]) -> None:
    sizes = [int(a) for a in argv] or [1000, 10_000]
    for calls in sizes:
        load = os.getloadavg()
        r = asyncio.run(_one_day(calls, scrapes=20))
        print(
            f"{r['calls']:>7} calls today ({r['offered_running']} counted): CPU per scrape "
            f"read {r['read_ms']:.1f} ms, running {r['running_ms']:.2f} ms; "
            f"load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
