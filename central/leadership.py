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

from vcc.membership import LeaderInfo, decode_leader, encode_leader
from vcc.rpc import dialled

log = logging.getLogger(__name__)

# Bound of the callbacks run when a term ends (closing streams, stopping the dashboard).
DEPOSE_TIMEOUT_S = 2.0


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
                await _close(self._client)
                self._client = self._new_client()
                await asyncio.sleep(self._period_s * (0.5 + random.random()))
        finally:
            await self._end_term(revoke=False)
            await _close(self._client)

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
            await asyncio.wait_for(client.revoke_lease(lease_id), self._timeout_s * 2)
            log.info("replica %s: revoked lease %x, leadership handed over", self.replica_id, lease_id)
        except (aetcd.ClientError, TimeoutError, OSError) as exc:
            log.warning(
                "replica %s: could not revoke lease %x (%s); it expires", self.replica_id, lease_id, exc
            )
        finally:
            await _close(client)

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
        try:
            while True:
                get = asyncio.ensure_future(events.get())
                done, _ = await asyncio.wait(
                    {get, reader}, timeout=self._ttl_s, return_when="FIRST_COMPLETED"
                )
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
            with contextlib.suppress(Exception):
                await watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

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
        while True:
            await asyncio.sleep(self._period_s)
            sent = _now()
            remaining = self._deadline - sent
            if remaining <= 0:
                raise TermEnded(f"lease of epoch {self._epoch} not renewed in time")
            reply: Any = await asyncio.wait_for(
                self._client.refresh_lease(self._lease_id), min(self._timeout_s, remaining)
            )
            if reply is None or int(reply.TTL) <= 0:
                raise TermEnded(f"lease {self._lease_id:x} of epoch {self._epoch} expired")
            self.lease_floor = sent + int(reply.TTL)
            self._deadline = self.lease_floor - self._margin_s
            # Someone deleted our key by hand, or it was taken over: the term is over.
            current: Any = await asyncio.wait_for(
                self._client.get(self._key), max(0.05, min(self._timeout_s, self._deadline - _now()))
            )
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
                await asyncio.wait_for(asyncio.shield(self._on_deposed(self._epoch)), DEPOSE_TIMEOUT_S)
            except Exception:
                log.exception("replica %s: stepping down failed", self.replica_id)
        lease_id = self._lease_id
        if revoke and lease_id is not None:
            self._lease_id = None
            with contextlib.suppress(aetcd.ClientError, TimeoutError, OSError):
                await asyncio.wait_for(self._client.revoke_lease(lease_id), self._timeout_s)

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
        return aetcd.Client(host=host, port=int(port), timeout=self._timeout_s)


def _now() -> float:
    return asyncio.get_running_loop().time()


async def _close(client: aetcd.Client) -> None:
    try:
        await client.close()
    except Exception as exc:
        log.debug("closing the etcd client: %s", exc)
