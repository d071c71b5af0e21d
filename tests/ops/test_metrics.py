"""Metrics: the scrape endpoint, the RPC latency interceptors on a real grpc.aio server, a site's
figures read from its switchboard, and labels that never identify a call or an agent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from site_node.metrics import ShipperFigures, SiteCollector
from tests.site_node.test_switchboard import offer, ready_agents, switchboard
from vcc import rpc
from vcc.config import ConfigError, parse_province
from vcc.metrics import CLIENT_INTERCEPTORS, FORBIDDEN_LABELS, Metrics, MetricsServer, label_names


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of an exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    found = samples(text).get((name, tuple(sorted(labels.items()))))
    assert found is not None, (name, labels)
    return found


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[Metrics, MetricsServer]]:
    metrics = Metrics("test")
    server = MetricsServer(metrics, "127.0.0.1:0")
    await server.start()
    yield metrics, server
    await server.stop()


def site_collector_text(metrics: Metrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()


Endpoint = tuple[Metrics, MetricsServer]


async def test_the_endpoint_serves_metrics_and_refuses_the_rest(endpoint: Endpoint) -> None:
    metrics, server = endpoint
    refreshed: list[int] = []

    async def refresh() -> None:
        refreshed.append(1)

    metrics.before_scrape(refresh)
    async with httpx.AsyncClient(timeout=5) as http:
        reply = await http.get(server.url)
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/plain")
        assert "process_cpu_seconds_total" in reply.text
        assert refreshed == [1]  # figures that need an await are read before each scrape
        assert (await http.get(server.url.replace("/metrics", "/nope"))).status_code == 404
        assert (await http.post(server.url)).status_code == 405


async def test_a_failing_refresh_does_not_break_the_scrape(endpoint: Endpoint) -> None:
    metrics, server = endpoint

    async def broken() -> None:
        raise RuntimeError("database away")

    metrics.before_scrape(broken)
    async with httpx.AsyncClient(timeout=5) as http:
        assert (await http.get(server.url)).status_code == 200


async def test_rpc_latency_is_timed_on_both_sides() -> None:
    metrics = Metrics("test")
    server = rpc.Server(["vcc.test"], interceptors=[metrics.server_interceptor()])
    port = await server.start("127.0.0.1:0")
    token = CLIENT_INTERCEPTORS.set(metrics.client_interceptors())
    try:
        async with rpc.channel(f"127.0.0.1:{port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.Check(health_pb2.HealthCheckRequest(service="no-such-service"), timeout=5)
            assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        CLIENT_INTERCEPTORS.reset(token)
        await server.stop(0)
    text = site_collector_text(metrics)
    for side in ("server", "client"):
        name = f"vcc_rpc_{side}_duration_seconds_count"
        assert value(text, name, service="grpc.health.v1.Health", method="Check", code="OK") == 1
        assert value(text, name, service="grpc.health.v1.Health", method="Check", code="NOT_FOUND") == 1


def test_site_figures_are_read_from_the_switchboard() -> None:
    sb = switchboard()
    now = 100.0
    metrics = Metrics("site:gz")
    metrics.register(
        SiteCollector(
            sb,
            clock=lambda: now,
            outbox_pending=lambda: 7,
            outbox_dead=lambda: 0,
            shipper=lambda: ShipperFigures(shipped=3, failures=1, dead_lettered=0),
            leader_epoch=lambda: 4,
            central_connected=lambda: True,
        )
    )
    # Two callers wait for "general" (digit 2); nobody is ready yet.
    calls = []
    for n in range(2):
        call_id, _ = offer(sb, 90.0 + n, f"k{n}", ani=f"1380000000{n}")
        sb.caller_digits(90.5 + n, call_id, "2")
        calls.append(call_id)
    text = site_collector_text(metrics)
    assert value(text, "vcc_site_calls_offered_total", site="gz") == 2
    assert value(text, "vcc_site_calls_waiting", site="gz", skill_group="general") == 2
    assert value(text, "vcc_site_calls_waiting", site="gz", skill_group="billing") == 0
    oldest = value(text, "vcc_site_oldest_wait_seconds", site="gz", skill_group="general")
    assert oldest == pytest.approx(10.0)  # since the first caller arrived
    assert value(text, "vcc_site_channels_busy", site="gz", pool="pstn", kind="trunk") == 2
    assert value(text, "vcc_site_channels", site="gz", pool="pstn", kind="trunk") == 5
    assert value(text, "vcc_site_agents", site="gz", state="LOGGED_OUT") == 3
    assert value(text, "vcc_site_outbox_pending", site="gz") == 7
    assert value(text, "vcc_site_central_leader_epoch", site="gz") == 4
    # An agent answers one; the other caller hangs up.
    now = 101.0
    ready_agents(sb, now, "0101")
    sb.answer(now, "0101", calls[0])
    sb.caller_hang_up(now, calls[1])
    text = site_collector_text(metrics)
    assert value(text, "vcc_site_calls_total", site="gz", outcome="answered") == 1
    assert value(text, "vcc_site_calls_total", site="gz", outcome="abandoned") == 1
    assert value(text, "vcc_site_calls_waiting", site="gz", skill_group="general") == 0
    assert value(text, "vcc_site_agents", site="gz", state="TALKING") == 1
    # Neither call ids nor agent codes nor phone numbers appear anywhere.
    assert not label_names(text_string_to_metric_families(text)) & FORBIDDEN_LABELS
    for secret in [*calls, "0101", "13800000000"]:
        assert secret not in text


def test_metrics_listen_is_validated() -> None:
    def province(**central: object) -> object:
        return {
            "province": {"id": "gd", "name": "Guangdong"},
            "central": {"listen": "127.0.0.1:7000", **central},
            "sites": [
                {
                    "id": "gz",
                    "name": "Guangzhou",
                    "listen": "127.0.0.1:7101",
                    "metrics_listen": "127.0.0.1:9101",
                    "trunk_groups": [{"id": "pstn", "channels": 5}],
                    "skill_groups": [{"id": "general"}],
                    "ivr": {
                        "choices": [{"digit": "1", "skill_group": "general"}],
                        "default_skill_group": "general",
                    },
                }
            ],
        }

    good = parse_province(province(metrics_listen="127.0.0.1:9100"))
    assert good.central.metrics_listen == "127.0.0.1:9100"
    with pytest.raises(ConfigError, match=r"central\.metrics_listen"):
        parse_province(province(metrics_listen="nine thousand"))
    with pytest.raises(ConfigError, match=r"metrics_listen: '127\.0\.0\.1:9101' appears twice"):
        parse_province(province(metrics_listen="127.0.0.1:9101"))
    with pytest.raises(ConfigError, match=r"metrics_listen: '127\.0\.0\.1:7000' appears twice"):
        parse_province(province(metrics_listen="127.0.0.1:7000"))


async def test_a_slow_client_cannot_hold_the_endpoint(endpoint: Endpoint) -> None:
    _, server = endpoint
    # A client that connects and says nothing; a scrape meanwhile is still served.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            assert (await http.get(server.url)).status_code == 200
    finally:
        writer.close()
        await writer.wait_closed()
    del reader
