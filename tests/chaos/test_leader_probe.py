"""A follower ends a dead leader's term early (central/leadership.py's health probe), against a real
etcd and real gRPC health servers: the takeover comes from the probe, not from the lease expiring."""

from __future__ import annotations

import asyncio
import contextlib

from central.leadership import Leadership
from tests.helpers import eventually
from tools.province.etcd_server import EtcdServer
from vcc.membership import central_leader_key
from vcc.rpc import Server

# Long enough that a takeover by lease expiry could not happen within the test's waits.
TTL_S = 30


async def _nothing(epoch: int) -> None:
    return None


async def test_a_follower_revokes_the_lease_of_a_leader_that_stopped_answering(
    etcd_server: EtcdServer,
) -> None:
    key = central_leader_key("/leader-probe-test", "p1")
    servers = {n: Server([]) for n in ("1", "2")}
    replicas: dict[str, Leadership] = {}
    tasks: dict[str, asyncio.Task[None]] = {}
    try:
        for n, server in servers.items():
            port = await server.start("127.0.0.1:0")
            replicas[n] = Leadership(
                [etcd_server.endpoint],
                key,
                n,
                f"127.0.0.1:{port}",
                TTL_S,
                on_elected=_nothing,
                on_deposed=_nothing,
            )
        tasks["1"] = asyncio.create_task(replicas["1"].run())
        await eventually(lambda: _true(replicas["1"].is_leader), timeout_s=10, what="replica 1 leads")
        tasks["2"] = asyncio.create_task(replicas["2"].run())
        first_epoch = replicas["1"].epoch

        async def follower_reached_the_leader() -> bool:
            return replicas["2"].leader_address() == replicas["1"].address

        await eventually(follower_reached_the_leader, timeout_s=10, what="replica 2 follows")
        # Let the follower's probe reach the live leader once (it only deposes a leader it reached).
        await eventually(
            lambda: _true(replicas["2"].leader_reached), timeout_s=5, what="the leader answered a probe"
        )

        # The leader "dies": its gRPC server goes and its run() stops without revoking its lease,
        # as a SIGKILLed process would (the lease alone would last TTL_S).
        tasks.pop("1").cancel()
        await asyncio.wait_for(servers["1"].grpc.stop(None), 5)

        async def taken_over() -> bool:
            return replicas["2"].is_leader

        await eventually(taken_over, timeout_s=TTL_S / 2, what="replica 2 took over")
        assert replicas["2"].leaders_revoked == 1
        assert replicas["2"].epoch > first_epoch
    finally:
        for task in tasks.values():
            task.cancel()
        for replica in replicas.values():
            await replica.close()
        for server in servers.values():
            with contextlib.suppress(Exception):
                await server.stop(0)


async def _true(value: bool) -> bool:
    return value
