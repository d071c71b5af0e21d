"""Site membership against a real etcd: register, update, leave, crash, and etcd restarting."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aetcd
import pytest

from site_node.links.membership import Membership
from tests.helpers import eventually
from tools.province.etcd_server import EtcdServer
from tools.province.netutil import free_port
from vcc.membership import decode_summary, site_key
from vcc.v1 import site_admin_pb2


def etcd_client(endpoint: str) -> aetcd.Client:
    host, _, port = endpoint.rpartition(":")
    return aetcd.Client(host=host, port=int(port), timeout=2)


@pytest.fixture
async def etcd(etcd_server: EtcdServer) -> AsyncIterator[aetcd.Client]:
    client = etcd_client(etcd_server.endpoint)
    yield client
    await client.close()


def new_key() -> str:
    return site_key("/vcc-test", f"p{uuid.uuid4().hex[:8]}", "gz")


async def published(etcd: aetcd.Client, key: str) -> site_admin_pb2.SiteSummary | None:
    """The summary under `key`; None when there is none or etcd cannot be reached yet."""
    try:
        got = await etcd.get(key.encode())
    except aetcd.ConnectionFailedError:
        return None
    return None if got is None else decode_summary(got.value)


async def test_the_key_carries_the_summary_and_follows_it(
    etcd_server: EtcdServer, etcd: aetcd.Client
) -> None:
    key = new_key()
    summary = site_admin_pb2.SiteSummary(site_id="gz", name="Guangzhou", address="127.0.0.1:7101")
    member = Membership([etcd_server.endpoint], key, ttl_s=3, summary=lambda: summary, interval_s=0.1)
    task = asyncio.create_task(member.run())
    try:

        async def registered() -> site_admin_pb2.SiteSummary | None:
            return await published(etcd, key) if member.registered else None

        first = await eventually(registered, what="site registered")
        assert first is not None
        assert first.site_id == "gz" and first.address == "127.0.0.1:7101"
        assert member.lease_id is not None
        got = await etcd.get(key.encode())
        assert got is not None and got.lease == member.lease_id

        summary.calls_waiting = 7

        async def updated() -> bool:
            now = await published(etcd, key)
            return now is not None and now.calls_waiting == 7

        await eventually(updated, what="summary update published")
    finally:
        await member.close()
    assert task.done()
    # Goodbye: the lease is revoked, the key is gone at once.
    assert await etcd.get(key.encode()) is None
    assert not member.registered


async def test_a_site_that_stops_renewing_disappears_after_the_ttl(
    etcd_server: EtcdServer, etcd: aetcd.Client
) -> None:
    key = new_key()
    member = Membership(
        [etcd_server.endpoint], key, ttl_s=1, summary=lambda: site_admin_pb2.SiteSummary(site_id="gz")
    )
    task = asyncio.create_task(member.run())
    await eventually(lambda: _true(member.registered), what="site registered")
    # A crash: no goodbye, the lease is simply no longer renewed.
    task.cancel()
    await asyncio.wait({task})
    assert await etcd.get(key.encode()) is not None

    async def gone() -> bool:
        return await etcd.get(key.encode()) is None

    await eventually(gone, timeout_s=10, what="key expired with the lease")


async def test_a_dead_endpoint_is_skipped(etcd_server: EtcdServer, etcd: aetcd.Client) -> None:
    key = new_key()
    dead = f"127.0.0.1:{free_port()}"
    member = Membership(
        [dead, etcd_server.endpoint], key, ttl_s=2, summary=lambda: site_admin_pb2.SiteSummary(site_id="gz")
    )
    task = asyncio.create_task(member.run())
    try:
        await eventually(lambda: _true(member.registered), what="registered through the live endpoint")
        assert await published(etcd, key) is not None
    finally:
        await member.close()
    assert task.done()


async def test_the_site_registers_again_after_etcd_restarts(tmp_path: Path) -> None:
    server = EtcdServer(data_dir=tmp_path / "etcd", name="restart").start()
    key = new_key()
    summary = site_admin_pb2.SiteSummary(site_id="gz", calls_offered=1)
    member = Membership([server.endpoint], key, ttl_s=2, summary=lambda: summary, interval_s=0.2)
    task = asyncio.create_task(member.run())
    client = etcd_client(server.endpoint)
    try:
        await eventually(lambda: _true(member.registered), what="site registered")
        await asyncio.to_thread(server.stop)
        await eventually(lambda: _true(not member.registered), what="site noticed etcd is gone")
        assert not task.done()

        # Same ports, same data: etcd comes back with its state.
        await asyncio.to_thread(server.start)
        summary.calls_offered = 2

        async def back() -> bool:
            now = await published(client, key)
            return member.registered and now is not None and now.calls_offered == 2

        await eventually(back, timeout_s=20, what="site registered again")
        assert member.registrations >= 1
    finally:
        await member.close()
        await client.close()
        await asyncio.to_thread(server.stop)


async def _true(value: bool) -> bool:
    return value
