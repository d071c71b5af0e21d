"""A local province whose sites dial central, etcd and each other through fault proxies
(tools/province/faultproxy.py), so that a site can be cut from it: `vcc cluster up
--with-fault-proxies`, the scenarios that partition a site, and the soak."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from tools.province.cluster import START_TIMEOUT_S, Cluster, ClusterError
from tools.province.faultproxy import FaultProxyError, ProxyProcess, Wan, plan_for, start_process


async def start_with_fault_proxies(
    config_path: str | Path,
    run_dir: str | Path,
    *,
    partitionable: Sequence[str] | None = None,
    seed_customers: int = 0,
    fresh_ports: bool = False,
    timeout_s: float = START_TIMEOUT_S,
    central_replicas: int = 1,
    database_url: str | None = None,
    wan: Wan | None = None,
) -> tuple[Cluster, ProxyProcess]:
    """A cluster whose `partitionable` sites (default: all) dial the province through fault proxies.

    etcd and central first, then the proxy process (it needs their addresses), then the sites with
    their dial maps. `wan`: every site's links are delayed as it says (an emulated WAN).
    Raises ClusterError / ConfigError like Cluster.start.
    """
    cluster = await Cluster.start(
        config_path,
        run_dir,
        sites=[],
        seed_customers=seed_customers,
        fresh_ports=fresh_ports,
        timeout_s=timeout_s,
        central_replicas=central_replicas,
        database_url=database_url,
    )
    try:
        sites = list(partitionable) if partitionable is not None else [s.id for s in cluster.config.sites]
        # A cut site loses every central replica, the leader and the followers alike.
        centrals = [cluster.replica_address(str(n)) for n in range(1, central_replicas + 1)]
        plan = plan_for(cluster.config, sites, central=centrals, wan=wan)
        assert cluster.etcd_process is not None
        try:
            proxies = await start_process(plan, cluster.run_dir, watch_pid=cluster.etcd_process.pid)
        except FaultProxyError as exc:
            raise ClusterError(str(exc)) from None
        cluster.site_env = plan.site_env()
        try:
            await asyncio.gather(*(cluster.start_site(s.id) for s in cluster.config.sites))
        except BaseException:
            await proxies.stop()
            raise
    except BaseException:
        await cluster.stop()
        raise
    return cluster, proxies
