"""`vcc chaos` on a running cluster started with fault proxies: a real partition, then a real heal.

The cut site stays reachable to its own callers and agents (the test dials it directly), while
central loses it (its lease expires, its stream breaks) and sees it again after the heal.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from tests.helpers import eventually
from tests.integration.support import password_hash, site_summary
from tests.integration.test_virtual_center import write_province
from tools.chaos.actions import ChaosError, chaos
from tools.province.cluster import down
from tools.province.generate import SiteSpec, generate_province
from tools.province.netutil import free_port
from tools.province.proxied import start_with_fault_proxies
from vcc import rpc
from vcc.v1 import central_pb2, central_pb2_grpc

pytestmark = pytest.mark.cluster


async def _up(address: str, site_id: str) -> bool:
    async with rpc.channel(address) as ch:
        status = await central_pb2_grpc.CentralServiceStub(ch).GetProvinceStatus(
            central_pb2.GetProvinceStatusRequest(), timeout=5
        )
    return next(s for s in status.sites if s.site_id == site_id).up


async def test_partition_heal_kill_and_restart_by_hand(tmp_path: Path) -> None:
    config = generate_province(
        [SiteSpec("gz", "gz", 10, {"general": 1}), SiteSpec("sz", "sz", 10, {"general": 1})],
        etcd_endpoint="127.0.0.1:2379",
        central_listen=f"127.0.0.1:{free_port()}",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        password_hash=password_hash(),
        outbox_dir=tmp_path / "outbox",
        lease_ttl_s=2,
    )
    path = await asyncio.to_thread(write_province, config, tmp_path)
    run_dir = tmp_path / "run"
    cluster, proxies = await start_with_fault_proxies(path, run_dir, fresh_ports=True)
    central = cluster.config.central.listen
    try:
        await eventually(lambda: _up(central, "gz"), timeout_s=15, what="gz registered")

        said = await chaos("partition", run_dir, "gz")
        assert "gz" in said

        async def gz_down() -> bool:
            return not await _up(central, "gz")

        await eventually(gz_down, timeout_s=15, what="central loses gz behind the cut")
        # gz itself is alive and serving whoever reaches it directly (its own trunks and agents).
        summary = await site_summary(cluster, "gz")
        assert summary.agents_by_state is not None

        await chaos("heal", run_dir, "gz")
        await eventually(lambda: _up(central, "gz"), timeout_s=15, what="gz back after the heal")

        # A silent cut: nothing is reset, central finds out by itself (keepalive, lease).
        said = await chaos("partition", run_dir, "gz", silent=True)
        assert "silent" in said
        await eventually(gz_down, timeout_s=15, what="central loses gz behind a silent cut")
        await chaos("heal", run_dir, "gz")
        await eventually(lambda: _up(central, "gz"), timeout_s=15, what="gz back after the silent cut")
        with pytest.raises(ChaosError, match="--silent is for partition"):
            await chaos("kill-site", run_dir, "sz", silent=True)

        await chaos("kill-site", run_dir, "sz")

        async def sz_down() -> bool:
            return not await _up(central, "sz")

        await eventually(sz_down, timeout_s=15, what="central loses the killed sz")
        said = await chaos("restart-site", run_dir, "sz")
        assert "restarted site sz" in said
        await eventually(lambda: _up(central, "sz"), timeout_s=15, what="sz back after the restart")

        with pytest.raises(ChaosError, match="SQLite"):
            await chaos("stop-database", run_dir)
        with pytest.raises(ChaosError, match="no fault proxies"):
            await chaos("partition", run_dir, "xx")
    finally:
        await proxies.stop()
        await down(run_dir)
        await cluster.stop()
    with pytest.raises(grpc.aio.AioRpcError):
        await site_summary(cluster, "gz")
