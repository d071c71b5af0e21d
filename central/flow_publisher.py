"""Hand the stored IVR flows and the catalog to the sites: one etcd key per flow version.

The database is the source of truth; etcd is how sites learn of a change (they watch the IVR
prefix, see vcc.ivr.keys). A push writes its key after the database commit; a new leader
writes every key again that etcd lacks or holds differently (etcd wiped, a push cut between
commit and publish).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence

import aetcd
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from central.flows import FlowStore
from vcc.errors import Unavailable
from vcc.ivr.keys import catalog_key, flow_key, ivr_prefix
from vcc.rpc import dialled
from vcc.tls import etcd_client

log = logging.getLogger(__name__)

_ETCD_ERRORS = (aetcd.ClientError, TimeoutError, OSError)


class FlowPublisher:
    def __init__(
        self,
        endpoints: Sequence[str],
        prefix: str,
        province_id: str,
        *,
        rpc_timeout_s: float = 3.0,
        attempts: int = 4,
    ) -> None:
        if not endpoints:
            raise ValueError("the flow publisher needs at least one etcd endpoint")
        self._endpoints = itertools.cycle(list(endpoints))
        self._prefix = prefix
        self._province_id = province_id
        self._timeout_s = rpc_timeout_s
        self._attempts = attempts
        self._client: aetcd.Client | None = None

    async def publish_flow(self, flow_id: str, version: int, canonical: str) -> None:
        key = flow_key(self._prefix, self._province_id, flow_id, version)
        await self._put([(key, canonical)])
        log.info("published flow %s version %d at %s", flow_id, version, key)

    async def publish_catalog(self, canonical: str) -> None:
        await self._put([(catalog_key(self._prefix, self._province_id), canonical)])
        log.info("published the service catalog")

    async def republish(self, flows: FlowStore) -> int:
        """Write every stored flow version and the catalog etcd does not hold as stored; how many."""
        wanted = {
            flow_key(self._prefix, self._province_id, f.flow_id, f.version): f.canonical
            for f in await flows.flows()
        }
        catalog = await flows.catalog()
        if catalog is not None:
            wanted[catalog_key(self._prefix, self._province_id)] = catalog.canonical
        client = await self._connected()
        try:
            held = {
                kv.key.decode(): kv.value.decode(errors="replace")
                for kv in await client.get_prefix(ivr_prefix(self._prefix, self._province_id).encode())
            }
        except _ETCD_ERRORS as exc:
            await self._drop()
            raise Unavailable("etcd-unavailable", f"cannot read the IVR keys from etcd: {exc}") from exc
        missing = [(k, v) for k, v in wanted.items() if held.get(k) != v]
        if missing:
            await self._put(missing)
            log.info("republished %d IVR keys to etcd", len(missing))
        return len(missing)

    async def close(self) -> None:
        await self._drop()

    async def _put(self, items: list[tuple[str, str]]) -> None:
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self._attempts),
                wait=wait_exponential(multiplier=0.1, max=1.0),
                retry=retry_if_exception_type(_ETCD_ERRORS),
                reraise=True,
            ):
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        # That endpoint failed us: the next one of the cluster.
                        await self._drop()
                    client = await self._connected()
                    for key, value in items:
                        await client.put(key.encode(), value.encode())
        except _ETCD_ERRORS as exc:
            await self._drop()
            # Stored but not handed out: pushing again is safe (same content) and publishes it.
            raise Unavailable(
                "flow-not-published", f"stored at central, but etcd could not be written ({exc}); push again"
            ) from exc

    async def _connected(self) -> aetcd.Client:
        if self._client is None:
            host, _, port = dialled(next(self._endpoints)).rpartition(":")
            # With TLS when the province runs it (vcc.tls): etcd refuses plaintext then.
            self._client = etcd_client(host, int(port), self._timeout_s)
        return self._client

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.close()
            except Exception as exc:
                log.debug("closing the etcd client: %s", exc)
