"""The channel every site link keeps to central's leader: when another replica leads, the link
dials it and the replaced channel closes in the background, owned (the link's close waits for
it) and bounded (a close that hangs is given up). Two real gRPC servers in-process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from site_node.links.leader_channel import LeaderChannel
from vcc import rpc


@pytest.fixture
async def replicas() -> AsyncIterator[list[str]]:
    servers = [rpc.Server([]) for _ in range(2)]
    ports = [await s.start("127.0.0.1:0") for s in servers]
    yield [f"127.0.0.1:{p}" for p in ports]
    for server in servers:
        await server.stop(0)


async def test_a_leader_that_moves_is_dialled_and_the_old_channel_closes_owned(replicas: list[str]) -> None:
    first, second = replicas
    central = LeaderChannel()
    old = central.to(first)
    assert central.to(first) is old and central.dialled == first  # one channel per leader
    # A stream open on the old channel (as the state stream is when the leader moves).
    watch = health_pb2_grpc.HealthStub(old).Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

    new = central.to(second)
    assert new is not old and central.dialled == second
    assert central.closing == 1  # the old channel's close is the link's, not the loop's
    assert await asyncio.wait_for(watch.code(), 10) == grpc.StatusCode.CANCELLED  # its calls end with it
    reply = await health_pb2_grpc.HealthStub(new).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING

    await central.close()
    assert central.closing == 0 and central.dialled is None
    with pytest.raises(Exception):  # noqa: B017 (grpc raises its own kinds on a closed channel)
        await health_pb2_grpc.HealthStub(new).Check(health_pb2.HealthCheckRequest(), timeout=1)


class _HangingChannel:
    """A channel whose close never ends (a peer cut silently, a half-close nobody reads)."""

    def __init__(self) -> None:
        self.cancelled = False

    async def close(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


async def test_a_close_that_hangs_is_given_up_within_its_bound() -> None:
    hanging = _HangingChannel()
    await asyncio.wait_for(rpc.close_channel(hanging, timeout_s=0.05), 10)  # type: ignore[arg-type]
    assert hanging.cancelled

    central = LeaderChannel(dial=lambda _address: hanging, close_s=0.05)  # type: ignore[arg-type,return-value]
    central.to("10.0.0.1:1")
    central.to("10.0.0.2:1")  # the first "replica" is replaced: its close hangs in the background
    assert central.closing == 1
    await asyncio.wait_for(central.close(), 10)  # each close bounded by close_s
    assert central.closing == 0
