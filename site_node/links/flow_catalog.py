"""The site's copy of central's IVR flows and service catalog, kept current from etcd (F1, F8).

`FlowCatalog` is the in-memory view the call control asks (which flow a dialled number starts,
the newest version of a flow); `FlowCatalogWatcher` fills it: a get of the IVR prefix, then a
watch from the next revision, so no change falls between the two. A new version only changes
what *new* calls start on: a call in the IVR holds its own flow object. etcd being away costs a
reconnect, never the site's service: the last versions known stay in use meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import aetcd
from tenacity import AsyncRetrying, stop_after_attempt, wait_exponential, wait_random

from vcc.ivr.catalog import Service, ServiceCatalog
from vcc.ivr.flow import Flow
from vcc.ivr.keys import decode_catalog, decode_flow, ivr_prefix, parse_key
from vcc.rpc import dialled
from vcc.tls import close_etcd_client, etcd_client

log = logging.getLogger(__name__)

ATTEMPTS_PER_ROUND = 6
ROUND_PAUSE_S = 1.0


@dataclass(frozen=True)
class Entry:
    """What a caller of a number reaches here: the service and the flow version to start on."""

    service: Service
    flow: Flow


class FlowCatalog:
    """Flow versions and the catalog as last read from etcd (no I/O: the watcher feeds it)."""

    def __init__(self, site_id: str) -> None:
        self.site_id = site_id
        self._flows: dict[str, dict[int, Flow]] = {}
        self.catalog: ServiceCatalog | None = None
        self.catalog_revision = 0

    def current(self, flow_id: str) -> Flow | None:
        """The newest version: what a new call starts on."""
        versions = self._flows.get(flow_id)
        return versions[max(versions)] if versions else None

    def flow(self, flow_id: str, version: int) -> Flow | None:
        return self._flows.get(flow_id, {}).get(version)

    def versions(self) -> dict[str, list[int]]:
        return {flow_id: sorted(v) for flow_id, v in self._flows.items()}

    def entry(self, number: str) -> Entry | None:
        """The service a dialled number reaches in this city, with its flow; None: not offered here
        (or its flow has not reached this site yet)."""
        if self.catalog is None:
            return None
        service = self.catalog.for_number(number, self.site_id)
        if service is None:
            return None
        flow = self.current(service.flow)
        return None if flow is None else Entry(service, flow)

    # -- what the call control asks (site_node.callcontrol.flow_calls.FlowBook) -----------------------

    def for_number(self, number: str) -> tuple[str, Flow] | None:
        entry = self.entry(number)
        return None if entry is None else (entry.service.id, entry.flow)

    def named(self, flow_id: str) -> Flow | None:
        return self.current(flow_id)

    # -- fed by the watcher -----------------------------------------------------------------------

    def put(self, key: str, raw: bytes, prefix: str, province_id: str) -> str | None:
        """Take one etcd key; a description of the change for the log, or None when nothing changed."""
        what = parse_key(prefix, province_id, key)
        if what is None:
            return None
        try:
            if what == "catalog":
                revision, catalog = decode_catalog(raw)
                if revision <= self.catalog_revision:
                    return None
                self.catalog, self.catalog_revision = catalog, revision
                return f"service catalog revision {revision}"
            assert isinstance(what, tuple)
            flow = decode_flow(raw)
        except Exception as exc:
            # One bad value must not blind the site to every other flow.
            log.warning("unreadable IVR key %s in etcd (%s); ignored", key, exc)
            return None
        flow_id, version = what
        if (flow.id, flow.version) != (flow_id, version):
            log.warning("IVR key %s holds flow %s version %d; ignored", key, flow.id, flow.version)
            return None
        versions = self._flows.setdefault(flow_id, {})
        if version in versions:
            return None
        versions[version] = flow
        return f"flow {flow_id} version {version}"

    def delete(self, key: str, prefix: str, province_id: str) -> str | None:
        what = parse_key(prefix, province_id, key)
        if isinstance(what, tuple):
            flow_id, version = what
            if self._flows.get(flow_id, {}).pop(version, None) is not None:
                return f"flow {flow_id} version {version} withdrawn"
        return None


class FlowCatalogWatcher:
    """Follows the IVR prefix in etcd into a FlowCatalog; run() until cancelled."""

    def __init__(
        self,
        catalog: FlowCatalog,
        endpoints: Sequence[str],
        prefix: str,
        province_id: str,
        *,
        rpc_timeout_s: float = 3.0,
    ) -> None:
        if not endpoints:
            raise ValueError("the flow catalog watcher needs at least one etcd endpoint")
        self.catalog = catalog
        self._endpoints = itertools.cycle(list(endpoints))
        self._prefix = prefix
        self._province_id = province_id
        self._root = ivr_prefix(prefix, province_id).encode()
        self._timeout_s = rpc_timeout_s
        self.synced = asyncio.Event()
        # Set at every change taken (tests and waiters clear it).
        self.changed = asyncio.Event()

    async def run(self) -> None:
        while True:
            client: aetcd.Client | None = None
            try:
                client, watch = await self._connect()
                async for event in watch:
                    key = event.kv.key.decode(errors="replace")
                    if event.kind == aetcd.EventKind.PUT:
                        self._took(self.catalog.put(key, event.kv.value, self._prefix, self._province_id))
                    else:
                        self._took(self.catalog.delete(key, self._prefix, self._province_id))
                log.warning("IVR watch ended; reconnecting")
            except (aetcd.ClientError, TimeoutError, OSError) as exc:
                log.warning("IVR watch failed (%s); keeping flows %s", exc, self.catalog.versions())
            finally:
                if client is not None:
                    await close_etcd_client(client)
            await asyncio.sleep(ROUND_PAUSE_S)

    async def _connect(self) -> tuple[aetcd.Client, aetcd.Watch]:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(ATTEMPTS_PER_ROUND),
            wait=wait_exponential(multiplier=0.1, max=2.0) + wait_random(0, 0.1),
            reraise=True,
        ):
            with attempt:
                return await self._open()
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _open(self) -> tuple[aetcd.Client, aetcd.Watch]:
        host, _, port = dialled(next(self._endpoints)).rpartition(":")
        client = etcd_client(host, int(port), self._timeout_s)
        try:
            snapshot = await client.get_prefix(self._root)
            for kv in snapshot:
                self._took(
                    self.catalog.put(
                        kv.key.decode(errors="replace"), kv.value, self._prefix, self._province_id
                    )
                )
            watch = await client.watch_prefix(self._root, start_revision=snapshot.header.revision + 1)
        except BaseException:
            await close_etcd_client(client)
            raise
        self.synced.set()
        return client, watch

    def _took(self, change: str | None) -> None:
        if change is not None:
            log.info("IVR: %s", change)
            self.changed.set()
