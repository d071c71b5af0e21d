"""Follow the province's site membership in etcd: a site is up while its leased key exists.

An initial get of the prefix, then a watch from the next revision, so no change falls between
the two. When etcd goes away, reconnect (each round bounded by tenacity); a round that gives up
marks every site down, then the next round starts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import aetcd
from tenacity import AsyncRetrying, stop_after_delay, wait_exponential

from central.membership_view import MembershipView, SiteLiveness, Transition
from vcc.membership import decode_summary, sites_prefix
from vcc.rpc import dialled
from vcc.tls import close_etcd_client, etcd_client
from vcc.v1 import site_admin_pb2

log = logging.getLogger(__name__)


class MembershipWatcher:
    """Owns one etcd client at a time; run() until cancelled."""

    def __init__(
        self,
        view: MembershipView,
        endpoints: Sequence[str],
        prefix: str,
        province_id: str,
        *,
        clock: Callable[[], float] = time.time,
        rpc_timeout_s: int = 5,
        give_up_after_s: float = 30.0,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint")
        self.view = view
        self._endpoints = list(endpoints)
        self._prefix = sites_prefix(prefix, province_id).encode()
        self._clock = clock
        self._rpc_timeout_s = rpc_timeout_s
        self._give_up_after_s = give_up_after_s
        self._synced = asyncio.Event()

    def sites(self) -> list[SiteLiveness]:
        return self.view.sites()

    async def wait_synced(self) -> None:
        """Until the first snapshot of the prefix has been read."""
        await self._synced.wait()

    async def run(self) -> None:
        while True:
            try:
                client, watch = await self._connect()
            except Exception as exc:
                log.error(
                    "etcd unreachable for %.0fs (%s): counting every site down", self._give_up_after_s, exc
                )
                self._apply(self.view.all_down("etcd unreachable", self._clock()))
                continue
            try:
                await self._follow(watch)
                log.warning("etcd watch ended; reconnecting")
            except Exception as exc:
                log.warning("etcd watch failed (%s); reconnecting", exc)
            finally:
                await close_etcd_client(client)

    async def _connect(self) -> tuple[aetcd.Client, aetcd.Watch]:
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(self._give_up_after_s),
            wait=wait_exponential(multiplier=0.1, max=2.0),
            reraise=True,
        ):
            with attempt:
                endpoint = self._endpoints[(attempt.retry_state.attempt_number - 1) % len(self._endpoints)]
                return await self._open(endpoint)
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _open(self, endpoint: str) -> tuple[aetcd.Client, aetcd.Watch]:
        host, port = dialled(endpoint).rsplit(":", 1)
        client = etcd_client(host, int(port), self._rpc_timeout_s)
        try:
            snapshot = await client.get_prefix(self._prefix)
            alive = {}
            for kv in snapshot:
                site_id = self._site_id(kv.key)
                summary = _decode(site_id, kv.value) if site_id else None
                if summary is not None:
                    alive[site_id] = summary
            # The watch starts right after the snapshot's revision: no change is missed.
            watch = await client.watch_prefix(self._prefix, start_revision=snapshot.header.revision + 1)
        except BaseException:
            await close_etcd_client(client)
            raise
        self._apply(self.view.reset(alive, self._clock()))
        self._synced.set()
        log.info(
            "watching %s on %s from revision %d",
            self._prefix.decode(),
            endpoint,
            snapshot.header.revision + 1,
        )
        return client, watch

    async def _follow(self, watch: aetcd.Watch) -> None:
        async for event in watch:
            site_id = self._site_id(event.kv.key)
            if not site_id:
                continue
            if event.kind == aetcd.EventKind.PUT:
                summary = _decode(site_id, event.kv.value)
                if summary is not None:
                    self._apply(self.view.put(site_id, summary, self._clock()))
            else:
                self._apply(self.view.delete(site_id, "key deleted or lease expired", self._clock()))

    def _site_id(self, key: bytes) -> str:
        return key[len(self._prefix) :].decode(errors="replace") if key.startswith(self._prefix) else ""

    @staticmethod
    def _apply(transitions: list[Transition]) -> None:
        for t in transitions:
            log.info("%s", t)


def _decode(site_id: str, raw: bytes) -> site_admin_pb2.SiteSummary | None:
    try:
        return decode_summary(raw)
    except Exception as exc:
        # One site writing garbage must not blind central to the others.
        log.warning("site %s: unreadable summary in etcd (%s); ignored", site_id, exc)
        return None
