"""Leader election among central replicas against a real etcd: one leader, takeover with a higher
epoch, a leader cut from etcd steps down before its lease can expire, a clean stop hands over at once."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aetcd

from central.leadership import Leadership
from tests.helpers import eventually
from tools.province.etcd_server import EtcdServer
from tools.province.faultproxy import FaultProxy
from vcc.membership import central_leader_key, decode_leader

_provinces = itertools.count()


@dataclass
class Replica:
    leadership: Leadership
    elected: list[int] = field(default_factory=list)
    deposed: list[tuple[int, float]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def on_elected(self, epoch: int) -> None:
        self.elected.append(epoch)

    async def on_deposed(self, epoch: int) -> None:
        self.deposed.append((epoch, asyncio.get_running_loop().time()))


def replica(endpoint: str, key: str, replica_id: str, ttl_s: int) -> Replica:
    holder: list[Replica] = []

    async def elected(epoch: int) -> None:
        await holder[0].on_elected(epoch)

    async def deposed(epoch: int) -> None:
        await holder[0].on_deposed(epoch)

    r = Replica(
        Leadership(
            [endpoint],
            key,
            replica_id,
            f"127.0.0.1:70{replica_id}",
            ttl_s,
            on_elected=elected,
            on_deposed=deposed,
        )
    )
    holder.append(r)
    return r


@contextlib.asynccontextmanager
async def running(*replicas: Replica) -> AsyncIterator[None]:
    for r in replicas:
        r.task = asyncio.create_task(r.leadership.run())
    try:
        yield
    finally:
        for r in replicas:
            await r.leadership.close()


def fresh_key() -> str:
    return central_leader_key("/leadership-test", f"p{next(_provinces)}")


async def the_leader(*replicas: Replica) -> Replica:
    async def check() -> Replica | None:
        leading = [r for r in replicas if r.leadership.is_leader]
        assert len(leading) <= 1, "two replicas lead at once"
        return leading[0] if leading else None

    return await eventually(check, timeout_s=10, what="one leader")


async def test_two_replicas_elect_one_leader_and_the_other_takes_over_when_its_lease_goes(
    etcd_server: EtcdServer,
) -> None:
    key = fresh_key()
    a, b = (replica(etcd_server.endpoint, key, n, ttl_s=2) for n in ("1", "2"))
    async with running(a, b):
        first = await the_leader(a, b)
        other = b if first is a else a
        epoch = first.leadership.epoch
        assert first.elected == [epoch] and other.elected == []
        # The follower knows who leads, and etcd names the leader with its epoch.
        await eventually(
            lambda: _true(other.leadership.leader_address() == first.leadership.address),
            what="follower knows",
        )
        host, _, port = etcd_server.endpoint.rpartition(":")
        async with aetcd.Client(host=host, port=int(port), timeout=2) as etcd:
            current = await etcd.get(key.encode())
            assert current is not None
            info = decode_leader(current.value, current.create_revision)
            assert (info.replica_id, info.epoch) == (first.leadership.replica_id, epoch)
            # The leader's lease is revoked behind its back (as when it expires).
            await etcd.revoke_lease(current.lease)

        async def taken_over() -> bool:
            return other.leadership.is_leader and not first.leadership.is_leader

        await eventually(taken_over, timeout_s=10, what="the follower took over")
        assert other.leadership.epoch > epoch
        assert [e for e, _ in first.deposed] == [epoch]
        # The old leader follows the new one.
        await eventually(
            lambda: _true(first.leadership.leader_address() == other.leadership.address),
            what="the old leader follows",
        )


async def test_a_leader_cut_from_etcd_steps_down_before_its_lease_can_expire(tmp_path: Path) -> None:
    server = EtcdServer(data_dir=tmp_path / "etcd", name="cut").start()
    try:
        lone = replica(server.endpoint, fresh_key(), "1", ttl_s=2)
        async with running(lone):
            await the_leader(lone)
            epoch = lone.leadership.epoch
            server.kill()
            await eventually(lambda: _true(bool(lone.deposed)), timeout_s=10, what="the leader stepped down")
            (deposed_epoch, deposed_at) = lone.deposed[0]
            assert deposed_epoch == epoch and not lone.leadership.is_leader
            # etcd could not have expired the lease yet when the leader stopped acting as one.
            assert deposed_at < lone.leadership.lease_floor
    finally:
        server.stop()


async def test_a_clean_stop_hands_over_at_once(etcd_server: EtcdServer) -> None:
    key = fresh_key()
    # A long TTL: a handover that waited for the lease to expire would miss the deadline below.
    a, b = (replica(etcd_server.endpoint, key, n, ttl_s=20) for n in ("1", "2"))
    async with running(a, b):
        first = await the_leader(a, b)
        other = b if first is a else a
        epoch = first.leadership.epoch
        await first.leadership.close()
        assert not first.leadership.is_leader
        await eventually(lambda: _true(other.leadership.is_leader), timeout_s=5, what="handed over")
        assert other.leadership.epoch > epoch
        assert [e for e, _ in first.deposed] == [epoch]


async def _true(value: bool) -> bool:
    return value


async def test_a_slow_keepalive_does_not_end_a_term_its_lease_still_covers(etcd_server: EtcdServer) -> None:
    """Keepalives answered late for a moment (etcd's link slowed past the keepalive's own timeout,
    as on a busy machine) are tried again: the leader keeps its term while its lease holds."""
    proxy = FaultProxy(etcd_server.endpoint)
    address = await proxy.start()
    try:
        # Keepalive every 1.5 s, each with 1.5 s to answer; the lease (6 s) is trusted 5.1 s.
        lone = replica(address, fresh_key(), "1", ttl_s=6)
        async with running(lone):
            await the_leader(lone)
            epoch = lone.leadership.epoch
            floor = lone.leadership.lease_floor
            # The condition under test, not a wait: 2 s round trips for 3 s, so the first
            # keepalive times out; the next, sent after, lands well before the lease's deadline.
            proxy.latency_s = 1.0
            await asyncio.sleep(3.0)
            proxy.latency_s = 0.0
            await eventually(
                lambda: _true(lone.leadership.lease_floor > floor + 1),
                timeout_s=15,
                what="a keepalive landed",
            )
            assert lone.deposed == [] and lone.leadership.is_leader and lone.leadership.epoch == epoch
    finally:
        await proxy.stop()
