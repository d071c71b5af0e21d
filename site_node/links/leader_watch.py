"""Which central replica leads: the site follows the leader key in etcd (F39).

`address()` is what the shipper, the central link and the customer look-up dial: the leader's
address while etcd names one, else the configured `central.listen` (a lone central, or etcd has
no leader key at this moment). A get, then a watch from the next revision, so no change falls
between the two; etcd going away costs a reconnect (each round bounded by tenacity), never the
site's service: the last known leader stays in use meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence
from typing import Any

import aetcd
from tenacity import AsyncRetrying, stop_after_attempt, wait_exponential, wait_random

from vcc.membership import LeaderInfo, decode_leader
from vcc.rpc import dialled
from vcc.tls import close_etcd_client, etcd_client

log = logging.getLogger(__name__)

# Attempts to reach etcd per round, and the pause between rounds.
ATTEMPTS_PER_ROUND = 6
ROUND_PAUSE_S = 1.0
# A watch that says nothing for this long is checked with a get (a dead stream says nothing too).
RECHECK_S = 5.0
# Cancelling the watch and closing the client talk to etcd: bounded, so a cancelled watch ends
# (aetcd has no deadline of its own there; a site's stop once waited on it).
CLEANUP_S = 2.0


class LeaderWatch:
    def __init__(
        self,
        endpoints: Sequence[str],
        key: str,
        fallback: str,
        *,
        rpc_timeout_s: float = 2.0,
    ) -> None:
        if not endpoints:
            raise ValueError("the leader watch needs at least one etcd endpoint")
        self._endpoints = itertools.cycle(list(endpoints))
        self._key = key.encode()
        self._fallback = fallback
        self._timeout_s = rpc_timeout_s
        self.leader: LeaderInfo | None = None
        # Set on every change of leader (tests and waiters clear it).
        self.changed = asyncio.Event()

    def address(self) -> str | None:
        """The leader's address, or the configured central while etcd names none."""
        leader = self.leader
        return leader.address if leader is not None and leader.address else self._fallback

    async def run(self) -> None:
        """Follow the leader key until cancelled; never raises for etcd trouble."""
        while True:
            client: aetcd.Client | None = None
            try:
                client, revision = await self._connect()
                await self._follow(client, revision)
            except Exception as exc:
                log.warning("central leader watch: %s; reconnecting", str(exc) or type(exc).__name__)
            finally:
                if client is not None:
                    await close_etcd_client(client)
            await asyncio.sleep(ROUND_PAUSE_S)

    async def _connect(self) -> tuple[aetcd.Client, int]:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(ATTEMPTS_PER_ROUND),
            wait=wait_exponential(multiplier=0.1, max=2.0) + wait_random(0, 0.1),
            reraise=True,
        ):
            with attempt:
                host, _, port = dialled(next(self._endpoints)).rpartition(":")
                client = etcd_client(host, int(port), self._timeout_s)
                try:
                    current: Any = await client.get(self._key)
                    if current is None:
                        # No key: the revision of "now" comes from a range read of the key.
                        snapshot: Any = await client.get_prefix(self._key)
                        revision = int(snapshot.header.revision)
                    else:
                        revision = int(current.header.revision)
                except BaseException:
                    await close_etcd_client(client)
                    raise
                self._set(
                    self._decode(current.value, current.create_revision) if current is not None else None
                )
                return client, revision
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _follow(self, client: aetcd.Client, revision: int) -> None:
        watch: Any = await client.watch(self._key, start_revision=revision + 1)
        events: asyncio.Queue[Any] = asyncio.Queue()

        async def read() -> None:
            async for event in watch:
                await events.put(event)

        reader = asyncio.create_task(read(), name="site-leader-watch")
        try:
            while True:
                get = asyncio.ensure_future(events.get())
                done, _ = await asyncio.wait({get, reader}, timeout=RECHECK_S, return_when="FIRST_COMPLETED")
                if get in done:
                    event = get.result()
                    if event.kind == aetcd.EventKind.DELETE:
                        self._set(None)
                    else:
                        self._set(self._decode(event.kv.value, event.kv.create_revision))
                    continue
                get.cancel()
                if reader in done:
                    reader.result()
                    raise ConnectionError("the watch ended")
                # Quiet: make sure etcd is still there (a get fails fast on a dead connection).
                current: Any = await client.get(self._key)
                self._set(
                    self._decode(current.value, current.create_revision) if current is not None else None
                )
        finally:
            reader.cancel()
            try:
                async with asyncio.timeout(CLEANUP_S):
                    await watch.cancel()
            except Exception as exc:
                log.debug("cancelling the leader watch: %s", exc)
            await asyncio.wait({reader}, timeout=CLEANUP_S)

    def _set(self, leader: LeaderInfo | None) -> None:
        if leader != self.leader:
            if leader is not None:
                log.info(
                    "central leader: replica %s at %s (epoch %d)",
                    leader.replica_id,
                    leader.address,
                    leader.epoch,
                )
            else:
                log.info("no central leader in etcd; using %s meanwhile", self._fallback)
            self.leader = leader
            self.changed.set()

    @staticmethod
    def _decode(raw: bytes, create_revision: int) -> LeaderInfo | None:
        try:
            return decode_leader(raw, int(create_revision))
        except ValueError as exc:
            log.warning("unreadable central leader value in etcd (%s)", exc)
            return None
