"""One leader among the central replicas of a province, elected through etcd (F39).

Each replica campaigns for `central_leader_key`: one transaction creates the key under the
replica's own lease, only if the key does not exist. The key's create revision is the term's
epoch: it grows with every term, and the database refuses the writes of any epoch but the newest
(central.store, fencing). Followers watch the key and campaign again when it goes (the leader's
lease expired, or it revoked it on a clean stop).

etcd's lease is not enough on its own: a leader that is stalled, or cut off from etcd, goes on
believing it leads after etcd has expired its lease and elected another. So the leader keeps a
local deadline: the lease cannot expire before (when a keepalive was sent + the TTL etcd gave
back); the leader stops acting as leader a margin before that deadline unless a newer keepalive
moved it. `is_leader` reads the deadline itself, so even a caller that runs late sees the truth.

Waiting for a dead leader's lease to expire costs up to a TTL of routing. So a follower also asks
the leader's gRPC health service every PROBE_PERIOD_S (deadline PROBE_DEADLINE_S); after
PROBE_FAILURES answers in a row that say nobody is there (UNAVAILABLE, DEADLINE_EXCEEDED), it
revokes the leader's lease (read from the key, only while the key is still that term's) and
campaigns. Only a leader this follower has reached at least once: one it never reached may simply
not be reachable from here (a wrong advertised address, our own network), and is left to its lease
rather than deposed again and again. Ending a term early is safe thanks to fencing: a leader
that is alive but cannot be reached loses its lease (its next keepalive says so) and the database
refuses its epoch's writes from the moment the next leader fences. A leader that answers, even
NOT_SERVING, is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aetcd
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vcc.membership import LeaderInfo, decode_leader, encode_leader
from vcc.rpc import channel, dialled
from vcc.tls import CENTRAL, close_etcd_client, etcd_client, identity_dns

log = logging.getLogger(__name__)

# Bound of the callbacks run when a term ends (closing streams, stopping the dashboard).
DEPOSE_TIMEOUT_S = 2.0
# After a keepalive that timed out or failed, the next one goes this soon (until the deadline).
KEEPALIVE_RETRY_S = 0.1
# A follower's health probe of the leader: how often, how long each may take, how many failures in
# a row end the leader's term (a dead leader refuses at once: ~0.5 s; a hung one: ~2 s).
PROBE_PERIOD_S = 0.25
PROBE_DEADLINE_S = 0.5
PROBE_FAILURES = 3
# The answers that mean nobody is there (any other error, or NOT_SERVING, comes from a live process).
_DEAD_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class Role(enum.StrEnum):
    FOLLOWER = "follower"
    LEADER = "leader"


class TermEnded(Exception):
    """The leader's term is over: its lease is gone, its key is not its own, or its deadline passed."""


class Leadership:
    """Campaign, lead, follow; run() until cancelled, close() hands over at once.

    `on_elected(epoch)` runs when etcd made us leader and before we act as one (central fences
    the database with the epoch there); if it fails, the term is given up. `on_deposed(epoch)`
    runs when a term ends, whatever ended it.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        key: str,
        replica_id: str,
        address: str,
        ttl_s: int,
        *,
        on_elected: Callable[[int], Awaitable[None]],
        on_deposed: Callable[[int], Awaitable[None]],
        rpc_timeout_s: float | None = None,
        probe_leader: bool = True,
    ) -> None:
        if not endpoints:
            raise ValueError("leadership needs at least one etcd endpoint")
        self._endpoints = itertools.cycle(list(endpoints))
        self._key = key.encode()
        self.replica_id = replica_id
        self.address = address
        self._ttl_s = ttl_s
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self._probe_leader = probe_leader
        # Renew four times per TTL: two keepalives may be lost before the deadline bites.
        self._period_s = ttl_s / 4
        # Stop leading this long before the lease can have expired (clock rates, scheduling).
        self._margin_s = max(0.2, ttl_s * 0.15)
        self._timeout_s = rpc_timeout_s if rpc_timeout_s is not None else max(0.3, ttl_s / 4)
        self._client = self._new_client()
        self._task: asyncio.Task[None] | None = None
        self._role = Role.FOLLOWER
        self._epoch = 0
        self._lease_id: int | None = None
        self._deadline = 0.0
        # etcd cannot expire our lease before this loop time (last renewal sent + its TTL).
        self.lease_floor = 0.0
        # Who leads, as far as this replica knows (itself included); None: nobody, or not known.
        self.leader: LeaderInfo | None = None
        # Set whenever the role or the known leader changes (tests and waiters clear it).
        self.changed = asyncio.Event()
        self.terms = 0
        self.last_error: str | None = None
        # Terms of other replicas this one ended early (their leader did not answer its probes).
        self.leaders_revoked = 0
        self._revoking = False
        # The leader this follower probes has answered at least once (only such a leader is deposed).
        self.leader_reached = False

    # -- what the rest of central asks -----------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._role is Role.LEADER and _now() < self._deadline

    @property
    def epoch(self) -> int:
        """The epoch of the current or last term this replica led (0: never led)."""
        return self._epoch

    @property
    def role(self) -> Role:
        return Role.LEADER if self.is_leader else Role.FOLLOWER

    def leader_address(self) -> str | None:
        if self.is_leader:
            return self.address
        leader = self.leader
        return leader.address if leader is not None and leader.replica_id != self.replica_id else None

    # -- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Follow or lead until cancelled; etcd trouble only costs the current term and a retry."""
        self._task = asyncio.current_task()
        try:
            while True:
                try:
                    await self._round()
                except (aetcd.ClientError, TermEnded, TimeoutError, OSError) as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("replica %s: %s", self.replica_id, str(exc) or type(exc).__name__)
                except Exception as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("replica %s: leadership failed unexpectedly", self.replica_id)
                await self._end_term(revoke=True)
                self._set_leader(None)
                # A new client (the next endpoint): the old channel may be stuck.
                await close_etcd_client(self._client)
                self._client = self._new_client()
                await asyncio.sleep(self._period_s * (0.5 + random.random()))
        finally:
            await self._end_term(revoke=False)
            await close_etcd_client(self._client)

    async def close(self) -> None:
        """Stop run() and revoke the lease: the key goes now and a follower takes over at once."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            # asyncio.wait: our own cancellation still propagates, the task's does not.
            await asyncio.wait({task})
        lease_id, self._lease_id = self._lease_id, None
        if lease_id is None:
            return
        client = self._new_client()
        try:
            # After run() ended: a lost cancel here only lets the revoke finish.
            await asyncio.wait_for(client.revoke_lease(lease_id), self._timeout_s * 2)  # noqa: TID251
            log.info("replica %s: revoked lease %x, leadership handed over", self.replica_id, lease_id)
        except (aetcd.ClientError, TimeoutError, OSError) as exc:
            log.warning(
                "replica %s: could not revoke lease %x (%s); it expires", self.replica_id, lease_id, exc
            )
        finally:
            await close_etcd_client(client)

    async def _round(self) -> None:
        """Follow whoever leads until the key goes, then campaign; lead until the term ends."""
        while True:
            current: Any = await self._client.get(self._key)
            if current is not None:
                self._set_leader(self._decode(current.value, int(current.create_revision)))
                await self._follow(int(current.header.revision), int(current.create_revision))
                continue
            won = await self._campaign()
            if won:
                await self._lead()
                return

    async def _follow(self, revision: int, create_revision: int) -> None:
        """Until the key with this create revision is gone (watched, and checked every TTL)."""
        watch: Any = await self._client.watch(self._key, start_revision=revision + 1)
        events: asyncio.Queue[Any] = asyncio.Queue()

        async def read() -> None:
            async for event in watch:
                await events.put(event)

        reader = asyncio.create_task(read(), name="central-leader-watch")
        prober = (
            asyncio.create_task(self._probe(create_revision), name="central-leader-probe")
            if self._probe_leader
            else None
        )
        try:
            while True:
                get = asyncio.ensure_future(events.get())
                waited = {get, reader} if prober is None else {get, reader, prober}
                done, _ = await asyncio.wait(waited, timeout=self._ttl_s, return_when="FIRST_COMPLETED")
                if prober is not None and prober in done:
                    get.cancel()
                    prober.result()  # an etcd error: raise it
                    return  # the leader's term is over: campaign now
                if get not in done:
                    get.cancel()
                    if reader in done:
                        reader.result()  # the watch failed: raise it
                        return
                    # A quiet watch: make sure it is not a dead one.
                    current: Any = await self._client.get(self._key)
                    if current is None or int(current.create_revision) != create_revision:
                        return
                    continue
                event = get.result()
                if event.kind == aetcd.EventKind.DELETE:
                    log.info("replica %s: the leader's key is gone; campaigning", self.replica_id)
                    return
                if int(event.kv.create_revision) != create_revision:
                    return
                self._set_leader(self._decode(event.kv.value, create_revision))
        finally:
            reader.cancel()
            if prober is not None and self._revoking:
                # Our own revoke ended the term, and its watch event can beat the revoke's answer:
                # let the probe finish (bounded) so the revoke is counted, not cut short.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self._timeout_s * 2):
                        await asyncio.shield(prober)
            if prober is not None:
                prober.cancel()
            with contextlib.suppress(Exception):
                await watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            if prober is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await prober

    async def _probe(self, create_revision: int) -> None:
        """Until the leader of this term fails PROBE_FAILURES probes in a row and its term is over.

        A key naming this replica is a past life of ours (killed, restarted at the same address):
        our own server answers there, so it is left to expire.
        """
        failures = 0
        self.leader_reached = False  # once this leader answered, its silence means something
        address = ""
        ch: grpc.aio.Channel | None = None
        try:
            while True:
                await asyncio.sleep(PROBE_PERIOD_S)
                leader = self.leader
                if leader is None or not leader.address or leader.replica_id == self.replica_id:
                    failures = 0
                    continue
                if leader.address != address or ch is None:
                    if ch is not None:
                        await ch.close()
                    address, failures, self.leader_reached = leader.address, 0, False
                    # Its certificate must name that replica (not any province certificate).
                    ch = channel(address, expect=identity_dns(CENTRAL, leader.replica_id))
                try:
                    await health_pb2_grpc.HealthStub(ch).Check(
                        health_pb2.HealthCheckRequest(), timeout=PROBE_DEADLINE_S
                    )
                    failures, self.leader_reached = 0, True
                except grpc.aio.AioRpcError as exc:
                    dead = exc.code() in _DEAD_CODES
                    failures = failures + 1 if dead else 0
                    self.leader_reached = self.leader_reached or not dead
                if self.leader_reached and failures >= PROBE_FAILURES:
                    log.warning(
                        "replica %s: leader %s at %s failed %d health probes in a row; ending its term",
                        self.replica_id,
                        leader.replica_id,
                        address,
                        failures,
                    )
                    if await self._revoke_term(create_revision):
                        return
                    failures = 0
        finally:
            if ch is not None:
                await ch.close()

    async def _revoke_term(self, create_revision: int) -> bool:
        """Revoke the lease of the term with this create revision, if the key is still that term's."""
        async with asyncio.timeout(self._timeout_s):
            current: Any = await self._client.get(self._key)
        if current is None or int(current.create_revision) != create_revision:
            return True  # that term is over already
        lease_id = int(current.lease)
        if lease_id == 0:
            return False  # not a campaign's key (written by hand): leave it to whoever wrote it
        # A lease id is never reused: revoking it can only end that term, never a newer one.
        self._revoking = True
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._client.revoke_lease(lease_id)
        except TimeoutError:
            # Late is not undone (a busy etcd): the term is over if the key went with the lease.
            async with asyncio.timeout(self._timeout_s):
                after: Any = await self._client.get(self._key)
            if after is not None and int(after.create_revision) == create_revision:
                raise
        finally:
            self._revoking = False
        self.leaders_revoked += 1
        log.warning(
            "replica %s: revoked lease %x of epoch %d; campaigning",
            self.replica_id,
            lease_id,
            create_revision,
        )
        return True

    async def _campaign(self) -> bool:
        """Create the key under a new lease of ours if nobody holds it; True if we won."""
        sent = _now()
        lease: Any = await self._client.lease(self._ttl_s)
        lease_id, granted = int(lease.id), int(lease.ttl)
        tx = self._client.transactions
        won, responses = await self._client.transaction(
            compare=[tx.create(self._key) == 0],
            success=[tx.put(self._key, encode_leader(self.replica_id, self.address), lease=lease_id)],
            failure=[],
        )
        if not won:
            # Someone was faster: our lease is of no use.
            with contextlib.suppress(aetcd.ClientError, TimeoutError):
                await self._client.revoke_lease(lease_id)
            return False
        self._lease_id = lease_id
        self._epoch = int(responses[0].response_put.header.revision)
        self.lease_floor = sent + granted
        self._deadline = self.lease_floor - self._margin_s
        # The value names the epoch too, for people reading it with etcdctl.
        await self._client.transaction(
            compare=[tx.create(self._key) == self._epoch],
            success=[
                tx.put(self._key, encode_leader(self.replica_id, self.address, self._epoch), lease=lease_id)
            ],
            failure=[],
        )
        return True

    async def _lead(self) -> None:
        """Fence, then lead while the lease is renewed in time; raises TermEnded when it is not."""
        keepalive = asyncio.create_task(self._keep_alive(), name="central-leader-keepalive")
        try:
            log.info("replica %s: elected leader, epoch %d", self.replica_id, self._epoch)
            elected = asyncio.ensure_future(self._on_elected(self._epoch))
            await self._until_deadline(elected, keepalive)
            elected.result()
            self._role = Role.LEADER
            self.terms += 1
            self._set_leader(LeaderInfo(self.replica_id, self.address, self._epoch))
            log.info("replica %s: leading (epoch %d)", self.replica_id, self._epoch)
            await self._until_deadline(keepalive, keepalive)
            keepalive.result()
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await keepalive

    async def _until_deadline(self, wanted: asyncio.Future[None], keepalive: asyncio.Task[None]) -> None:
        """Until `wanted` is done; raises TermEnded if the deadline passes or the keepalive fails."""
        while not wanted.done():
            remaining = self._deadline - _now()
            if remaining <= 0:
                wanted.cancel()
                raise TermEnded(f"lease of epoch {self._epoch} not renewed in time: stepping down")
            await asyncio.wait({wanted, keepalive}, timeout=remaining, return_when="FIRST_COMPLETED")
            if keepalive.done() and wanted is not keepalive:
                wanted.cancel()
                keepalive.result()
                raise TermEnded("the keepalive ended")

    async def _keep_alive(self) -> None:
        assert self._lease_id is not None
        pause = self._period_s
        while True:
            await asyncio.sleep(pause)
            sent = _now()
            remaining = self._deadline - sent
            if remaining <= 0:
                raise TermEnded(f"lease of epoch {self._epoch} not renewed in time")
            # asyncio.timeout, not wait_for: on Python 3.11 a wait_for whose call completes in the
            # instant the task is cancelled returns the result and drops the cancel (gh-86296), and
            # this loop then ran on for ever, its term's stop waiting on it (seen on a busy machine).
            try:
                async with asyncio.timeout(min(self._timeout_s, remaining)):
                    reply: Any = await self._client.refresh_lease(self._lease_id)
            except (TimeoutError, aetcd.ConnectionFailedError, aetcd.ConnectionTimeoutError) as exc:
                # One keepalive late or lost (a busy machine, a slow etcd) is what the four
                # renewals per TTL are for: try again at once; the deadline above ends the term
                # if none lands in time. (Ending it here deposed a healthy leader under load.)
                log.info(
                    "replica %s: keepalive of epoch %d failed (%r); again", self.replica_id, self._epoch, exc
                )
                pause = KEEPALIVE_RETRY_S
                continue
            pause = self._period_s
            if reply is None or int(reply.TTL) <= 0:
                raise TermEnded(f"lease {self._lease_id:x} of epoch {self._epoch} expired")
            self.lease_floor = sent + int(reply.TTL)
            self._deadline = self.lease_floor - self._margin_s
            # Someone deleted our key by hand, or it was taken over: the term is over.
            try:
                async with asyncio.timeout(max(0.05, min(self._timeout_s, self._deadline - _now()))):
                    current: Any = await self._client.get(self._key)
            except (TimeoutError, aetcd.ConnectionFailedError, aetcd.ConnectionTimeoutError):
                continue  # checked again after the next renewal
            if current is None or int(current.create_revision) != self._epoch:
                raise TermEnded(f"the leader key is no longer ours (epoch {self._epoch})")

    async def _end_term(self, *, revoke: bool) -> None:
        """Stop acting as leader (first), then tell central, then drop the lease if asked to."""
        was_leader = self._role is Role.LEADER
        self._role = Role.FOLLOWER
        self._deadline = 0.0
        if was_leader:
            self._set_leader(None)
            log.warning("replica %s: no longer leader (epoch %d)", self.replica_id, self._epoch)
            try:
                async with asyncio.timeout(DEPOSE_TIMEOUT_S):
                    await asyncio.shield(self._on_deposed(self._epoch))
            except Exception:
                log.exception("replica %s: stepping down failed", self.replica_id)
        lease_id = self._lease_id
        if revoke and lease_id is not None:
            self._lease_id = None
            with contextlib.suppress(aetcd.ClientError, TimeoutError, OSError):
                async with asyncio.timeout(self._timeout_s):
                    await self._client.revoke_lease(lease_id)

    def _set_leader(self, leader: LeaderInfo | None) -> None:
        if leader != self.leader:
            self.leader = leader
            self.changed.set()

    def _decode(self, raw: bytes, create_revision: int) -> LeaderInfo | None:
        try:
            return decode_leader(raw, create_revision)
        except ValueError as exc:
            log.warning("unreadable leader value in etcd (%s)", exc)
            return None

    def _new_client(self) -> aetcd.Client:
        host, _, port = dialled(next(self._endpoints)).rpartition(":")
        return etcd_client(host, int(port), self._timeout_s)


def _now() -> float:
    return asyncio.get_running_loop().time()
