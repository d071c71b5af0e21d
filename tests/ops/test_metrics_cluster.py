"""Every process's /metrics on a real cluster, against what the callers saw.

Etcd, central and two sites as separate processes; cluster.json names each one's metrics URL.
Callers wait with nobody to answer them (the waiting figures), then Poisson callers and robot
agents run while every endpoint is scraped; once the outboxes have drained, each site's counts and
central's records of today must equal the callers' own counts, per city of entry.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import eventually
from tests.integration.support import Caller, address, module_cluster, traffic_with_robots
from tools.province.cluster import Cluster
from tools.province.generate import SiteSpec
from tools.simulation.traffic import CallerView
from vcc import rpc
from vcc.metrics import FORBIDDEN_LABELS
from vcc.tls import TRUNK

pytestmark = pytest.mark.cluster

SITES = ("gz", "sz")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with module_cluster(
        tmp_path_factory.mktemp("metrics"),
        [
            SiteSpec("gz", "Guangzhou", trunk_channels=5, agents={"general": 2}),
            SiteSpec("sz", "Shenzhen", trunk_channels=20, agents={"general": 2}),
        ],
        ring_timeout_s=2.0,
        lease_ttl_s=2,
        # Each city serves its own callers: per-city figures compare one to one.
        routing={"mode": "isolated"},
    ) as started:
        yield started


def endpoints(cluster: Cluster) -> dict[str, str]:
    """{"central": URL, "gz": URL, ...} as scripts read them from cluster.json."""
    state = json.loads((cluster.run_dir / "cluster.json").read_text())
    urls = {"central": state["central"]["metrics"]}
    urls.update({site_id: site["metrics"] for site_id, site in state["sites"].items()})
    assert all(urls.values()) and set(urls) == {"central", *SITES}, urls
    return urls


async def scrape(http: httpx.AsyncClient, url: str) -> Samples:
    reply = await http.get(url)
    assert reply.status_code == 200, reply.text
    families = list(text_string_to_metric_families(reply.text))
    # Labels never identify a call or an agent.
    used = {name for f in families for s in f.samples for name in s.labels}
    assert not used & FORBIDDEN_LABELS, used & FORBIDDEN_LABELS
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over the series of `name` whose labels include `labels`."""
    return sum(v for (n, lbl), v in samples.items() if n == name and set(labels.items()) <= set(lbl))


def callers_count(views: list[CallerView], site_id: str, outcome: str | None = None) -> int:
    return sum(1 for v in views if v.entry_site_id == site_id and outcome in (None, v.outcome))


async def test_every_process_s_figures_agree_with_the_callers(cluster: Cluster) -> None:
    urls = endpoints(cluster)
    async with httpx.AsyncClient(timeout=10) as http:
        # 1. Three callers wait at gz with nobody logged in: the site shows exactly them waiting.
        async with rpc.channel(address(cluster, "gz"), persona=TRUNK) as ch:
            waiting = [Caller(ch, ani=f"1380000000{n}") for n in range(3)]
            for caller in waiting:
                await caller.until("queued")
            gz = await scrape(http, urls["gz"])
            assert total(gz, "vcc_site_calls_waiting", site="gz") == 3
            assert total(gz, "vcc_site_oldest_wait_seconds", site="gz") > 0
            assert get(gz, "vcc_site_channels_busy", site="gz", pool="pstn", kind="trunk") == 3
            for caller in waiting:
                caller.hang_up()
                await caller.until("ended")
        await eventually(
            lambda: _none_waiting(http, urls["gz"]), timeout_s=10, what="gz's queue empty after hang-ups"
        )

        # 2. Traffic with robot agents; every endpoint answers while it runs.
        seen_during: dict[str, Samples] = {}

        async def scrape_during_traffic() -> None:
            async def all_busy() -> bool:
                for name, url in urls.items():
                    seen_during[name] = await scrape(http, url)
                return all(
                    get(seen_during[s], "vcc_site_calls_total", site=s, outcome="answered") > 0 for s in SITES
                )

            await eventually(all_busy, timeout_s=30, interval_s=0.3, what="answers at every site")

        views, _records = await traffic_with_robots(
            cluster, {"gz": 3.0, "sz": 2.0}, duration_s=5.0, during=scrape_during_traffic(), customers=20
        )
        assert set(seen_during) == {"central", *SITES}

        # 3. Drained: the sites' counts are the callers' (gz also had the three who waited).
        by_site: dict[str, Mapping[str, int]] = {}
        for site_id in SITES:
            extra = 3 if site_id == "gz" else 0
            want = {
                "offered": callers_count(views, site_id) + extra,
                "answered": callers_count(views, site_id, "answered"),
                "abandoned": callers_count(views, site_id, "abandoned") + extra,
                "blocked": callers_count(views, site_id, "blocked"),
            }
            by_site[site_id] = want
            got_site = await scrape(http, urls[site_id])
            got = {
                "offered": get(got_site, "vcc_site_calls_offered_total", site=site_id),
                **{
                    k: get(got_site, "vcc_site_calls_total", site=site_id, outcome=k)
                    for k in ("answered", "abandoned", "blocked")
                },
            }
            seen = sorted((v.outcome, v.reason, v.error) for v in views if v.entry_site_id == site_id)
            assert got == want, (site_id, [o for o in seen if o[0] != "answered"])
            assert want["answered"] > 0
            assert total(got_site, "vcc_site_calls_waiting", site=site_id) == 0
            assert get(got_site, "vcc_site_outbox_pending", site=site_id) == 0
            assert get(got_site, "vcc_site_calls_in_progress", site=site_id) == 0
            # The shipper's RPCs to central were timed on the site's side.
            ingest = ("vcc_rpc_client_duration_seconds_count", "IngestCallEvents")
            assert total(got_site, ingest[0], method=ingest[1], code="OK") > 0

        # 4. Central: today's records per city of entry are the callers' counts too.
        async def central_caught_up() -> Samples | None:
            central = await scrape(http, urls["central"])
            for site_id, want in by_site.items():
                got = {
                    k: get(central, "vcc_central_calls_today", site=site_id, outcome=k)
                    for k in ("offered", "answered", "abandoned", "blocked")
                }
                if got != want:
                    return None
            return central

        central = await eventually(central_caught_up, timeout_s=15, interval_s=0.3, what="central's figures")
        assert get(central, "vcc_central_leader", replica="1") == 1
        epoch = get(central, "vcc_central_leader_epoch", replica="1")
        assert epoch >= 1
        for site_id in SITES:
            assert get(central, "vcc_central_site_up", replica="1", site=site_id) == 1
            assert get(central, "vcc_central_events_ingested_total", replica="1", site=site_id) > 0
            assert get(central, "vcc_central_calls_today", site=site_id, outcome="in_progress") == 0
            # The sites follow the leader central names.
            site = await scrape(http, urls[site_id])
            assert get(site, "vcc_site_central_leader_epoch", site=site_id) == epoch
        ingest_ok = total(
            central, "vcc_rpc_server_duration_seconds_count", method="IngestCallEvents", code="OK"
        )
        assert ingest_ok > 0
        assert "vcc_central_service_level" in {n for n, _ in central}

        # 5. A restarted central (a new leader, a new term) counts nothing at ingest before its first
        # scrape: its figures are seeded from the records, the same day's totals.
        before = {
            k: v
            for k, v in central.items()
            if k[0] in ("vcc_central_calls_today", "vcc_central_service_level")
        }
        await cluster.stop_central()
        await cluster.start_central()
        restarted = await scrape(http, endpoints(cluster)["central"])
        assert get(restarted, "vcc_central_leader_epoch", replica="1") > epoch
        after = {k: v for k, v in restarted.items() if k in before}
        assert after == before and sum(v for k, v in before.items() if "offered" in str(k)) > 0


async def _none_waiting(http: httpx.AsyncClient, url: str) -> bool:
    return total(await scrape(http, url), "vcc_site_calls_waiting") == 0
