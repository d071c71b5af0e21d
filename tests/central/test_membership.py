"""Site membership: the pure view, and the watcher against a real etcd."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import aetcd
import pytest

from central.membership import MembershipWatcher
from central.membership_view import MembershipView
from tests.helpers import eventually
from tools.province.etcd_server import EtcdServer
from vcc.membership import encode_summary, site_key
from vcc.v1 import site_admin_pb2

SITES = [("gz", "Guangzhou"), ("sz", "Shenzhen"), ("fs", "Foshan")]
_prefixes = itertools.count()


def summary(site_id: str, waiting: int = 0) -> site_admin_pb2.SiteSummary:
    return site_admin_pb2.SiteSummary(site_id=site_id, name=site_id.upper(), calls_waiting=waiting)


def test_view_starts_with_every_site_down() -> None:
    view = MembershipView(SITES)
    assert [(s.site_id, s.name, s.up, s.summary, s.last_seen) for s in view.sites()] == [
        ("gz", "Guangzhou", False, None, None),
        ("sz", "Shenzhen", False, None, None),
        ("fs", "Foshan", False, None, None),
    ]


def test_view_transitions() -> None:
    view = MembershipView(SITES)
    assert [str(t) for t in view.put("gz", summary("gz"), now=10.0)] == ["site gz: down -[key written]-> up"]
    # A new summary of a site already up is no transition, but is kept.
    assert view.put("gz", summary("gz", waiting=3), now=11.0) == []
    assert view.site("gz").summary == summary("gz", waiting=3)
    assert view.site("gz").last_seen == 11.0
    assert [str(t) for t in view.delete("gz", "lease expired")] == ["site gz: up -[lease expired]-> down"]
    assert view.delete("gz") == []
    gz = view.site("gz")
    assert (gz.up, gz.summary, gz.last_seen) == (False, None, 11.0)


def test_view_ignores_sites_outside_the_config() -> None:
    view = MembershipView(SITES)
    assert view.put("zz", summary("zz"), now=1.0) == []
    assert view.delete("zz") == []
    assert [s.site_id for s in view.sites()] == ["gz", "sz", "fs"]


def test_view_reset_and_all_down() -> None:
    view = MembershipView(SITES)
    view.put("gz", summary("gz"), now=1.0)
    view.put("sz", summary("sz"), now=1.0)
    transitions = view.reset({"sz": summary("sz", 2), "fs": summary("fs")}, now=5.0)
    assert sorted(str(t) for t in transitions) == [
        "site fs: down -[key written]-> up",
        "site gz: up -[absent from snapshot]-> down",
    ]
    assert [s.up for s in view.sites()] == [False, True, True]
    assert view.site("sz").summary == summary("sz", 2)
    assert len(view.all_down("etcd unreachable")) == 2
    assert not any(s.up for s in view.sites())


@pytest.fixture
async def etcd(etcd_server: EtcdServer) -> AsyncIterator[aetcd.Client]:
    host, port = etcd_server.endpoint.split(":")
    async with aetcd.Client(host=host, port=int(port), timeout=5) as client:
        yield client


@pytest.fixture
def prefix() -> str:
    return f"/test-membership-{next(_prefixes)}"


@contextlib.asynccontextmanager
async def watching(etcd_server: EtcdServer, prefix: str) -> AsyncIterator[MembershipWatcher]:
    watcher = MembershipWatcher(MembershipView(SITES), [etcd_server.endpoint], prefix, "gd")
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.wait_for(watcher.wait_synced(), 15)
        yield watcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_leased_key_is_a_site_up_and_revoking_the_lease_takes_it_down(
    etcd_server: EtcdServer, etcd: aetcd.Client, prefix: str
) -> None:
    # gz registered before central starts: found by the initial get.
    gz_lease = await etcd.lease(30)
    await etcd.put(site_key(prefix, "gd", "gz").encode(), encode_summary(summary("gz", 1)), lease=gz_lease)
    async with watching(etcd_server, prefix) as watcher:
        assert watcher.view.site("gz").up
        assert watcher.view.site("gz").summary == summary("gz", 1)
        assert not watcher.view.site("sz").up

        # sz registers while central watches.
        lease = await etcd.lease(30)
        await etcd.put(site_key(prefix, "gd", "sz").encode(), encode_summary(summary("sz", 7)), lease=lease)

        async def sz_up() -> bool:
            s = watcher.view.site("sz")
            return s.up and s.summary is not None and s.summary.calls_waiting == 7 and s.last_seen is not None

        await eventually(sz_up, what="sz up")

        # A newer summary replaces the old one.
        await etcd.put(site_key(prefix, "gd", "sz").encode(), encode_summary(summary("sz", 9)), lease=lease)

        async def sz_updated() -> bool:
            s = watcher.view.site("sz").summary
            return s is not None and s.calls_waiting == 9

        await eventually(sz_updated, what="sz summary updated")

        await lease.revoke()

        async def sz_down() -> bool:
            s = watcher.view.site("sz")
            return not s.up and s.summary is None and s.last_seen is not None

        await eventually(sz_down, what="sz down")
        assert watcher.view.site("gz").up

        await etcd.delete(site_key(prefix, "gd", "gz").encode())

        async def gz_down() -> bool:
            return not watcher.view.site("gz").up

        await eventually(gz_down, what="gz down")
        await gz_lease.revoke()


async def test_an_expired_lease_is_a_site_down(
    etcd_server: EtcdServer, etcd: aetcd.Client, prefix: str
) -> None:
    async with watching(etcd_server, prefix) as watcher:
        lease = await etcd.lease(1)
        await etcd.put(site_key(prefix, "gd", "fs").encode(), encode_summary(summary("fs")), lease=lease)

        async def fs_up() -> bool:
            return watcher.view.site("fs").up

        await eventually(fs_up, what="fs up")

        # Nobody refreshes the lease: etcd deletes the key when it expires.
        async def fs_down() -> bool:
            return not watcher.view.site("fs").up

        await eventually(fs_down, timeout_s=15, what="fs down after its lease expired")


async def test_unknown_sites_and_unreadable_summaries_are_ignored(
    etcd_server: EtcdServer, etcd: aetcd.Client, prefix: str
) -> None:
    await etcd.put(site_key(prefix, "gd", "gz").encode(), b"not json")
    async with watching(etcd_server, prefix) as watcher:
        assert not watcher.view.site("gz").up
        await etcd.put(site_key(prefix, "gd", "zz").encode(), encode_summary(summary("zz")))
        await etcd.put(site_key(prefix, "gd", "sz").encode(), b"{broken")
        await etcd.put(site_key(prefix, "gd", "fs").encode(), encode_summary(summary("fs")))

        async def fs_up() -> bool:
            return watcher.view.site("fs").up

        # Events arrive in order: once fs is up, the bad ones before it were seen and skipped.
        await eventually(fs_up, what="fs up")
        assert [s.site_id for s in watcher.sites() if s.up] == ["fs"]
        await etcd.delete_prefix(prefix.encode())


async def test_unreachable_etcd_counts_every_site_down() -> None:
    from tools.province.netutil import free_port

    view = MembershipView(SITES)
    view.put("gz", summary("gz"), now=1.0)
    watcher = MembershipWatcher(
        view, [f"127.0.0.1:{free_port()}"], "/nowhere", "gd", rpc_timeout_s=1, give_up_after_s=0.3
    )
    task = asyncio.create_task(watcher.run())
    try:

        async def gz_down() -> bool:
            return not view.site("gz").up

        await eventually(gz_down, what="gz counted down while etcd is unreachable")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_watcher_reconnects_after_etcd_restarts(tmp_path: Path) -> None:
    server = EtcdServer(data_dir=tmp_path / "etcd")
    await asyncio.to_thread(server.start)
    try:
        host, port = server.endpoint.split(":")
        async with watching(server, "/restart") as watcher:
            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)
            async with aetcd.Client(host=host, port=int(port), timeout=5) as client:
                lease = await client.lease(30)
                await client.put(
                    site_key("/restart", "gd", "sz").encode(), encode_summary(summary("sz")), lease=lease
                )

                async def sz_up() -> bool:
                    return watcher.view.site("sz").up

                await eventually(sz_up, timeout_s=20, what="sz up after etcd restarted")
                await lease.revoke()
    finally:
        await asyncio.to_thread(server.stop)
