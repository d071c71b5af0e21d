"""The site's membership in etcd: its summary under a lease that lives as long as the site does.

Central watches the sites prefix: the key appears when the site registers, changes with every
summary, and vanishes when the site revokes its lease (goodbye) or stops renewing it (crash,
partition) for longer than the TTL. etcd being away never stops the site serving calls: run()
logs, re-grants and re-registers, and only returns when cancelled.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any

import aetcd
from tenacity import AsyncRetrying, stop_after_attempt, wait_exponential, wait_random

from vcc.membership import encode_summary
from vcc.rpc import dialled
from vcc.tls import etcd_client
from vcc.v1 import site_admin_pb2

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """etcd no longer knows our lease (it expired while we could not reach etcd)."""


class Membership:
    """Keeps `key` = the site's summary alive under an etcd lease of `ttl_s` seconds."""

    def __init__(
        self,
        endpoints: list[str],
        key: str,
        ttl_s: int,
        summary: Callable[[], site_admin_pb2.SiteSummary],
        interval_s: float = 1.0,
        *,
        rpc_timeout_s: float | None = None,
        attempts_per_cycle: int = 5,
    ) -> None:
        if not endpoints:
            raise ValueError("membership needs at least one etcd endpoint")
        self._endpoints = itertools.cycle(endpoints)
        self._endpoint_count = len(endpoints)
        self._key = key.encode()
        self._ttl_s = ttl_s
        self._summary = summary
        self._interval_s = interval_s
        # Renew well inside the TTL, so one lost keepalive does not cost the registration.
        self._period_s = min(interval_s, ttl_s / 3)
        # An RPC slower than a third of the TTL would let the lease lapse anyway.
        self._timeout_s = rpc_timeout_s if rpc_timeout_s is not None else max(0.5, ttl_s / 3)
        self._attempts = attempts_per_cycle
        self._client = self._new_client()
        self._lease_id: int | None = None
        self._last_value = b""
        self._task: asyncio.Task[None] | None = None
        self.registered = False
        # Times the site (re-)registered: 1 after the first registration.
        self.registrations = 0
        self.last_error: str | None = None

    @property
    def lease_id(self) -> int | None:
        return self._lease_id

    @property
    def key(self) -> str:
        return self._key.decode()

    async def run(self) -> None:
        """Register, then renew and refresh the summary until cancelled; never raises for etcd trouble."""
        self._task = asyncio.current_task()
        try:
            while True:
                try:
                    await self._register_with_retry()
                    await self._keep_alive()
                except (aetcd.ClientError, LeaseLost, TimeoutError, OSError) as exc:
                    self._lost(exc)
                except Exception as exc:
                    # Not an etcd outage we know of: log the trace, but keep the site in the province.
                    log.exception("membership of %s failed unexpectedly", self.key)
                    self._lost(exc)
                # Another endpoint (if any) for the next cycle; the old channel may be stuck.
                await self._client.close()
                self._client = self._new_client()
                await asyncio.sleep(self._period_s)
        finally:
            # Crash-like exit: the lease is left to expire (close() revokes it instead).
            self.registered = False
            await self._client.close()

    async def close(self) -> None:
        """Stop run() and revoke the lease: the key goes at once and central sees the site leave."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            # asyncio.wait: our own cancellation still propagates, the task's does not.
            await asyncio.wait({task})
        lease_id, self._lease_id = self._lease_id, None
        self.registered = False
        if lease_id is None:
            await self._client.close()
            return
        try:
            # After run() ended: a lost cancel here only lets the revoke finish.
            await asyncio.wait_for(self._client.revoke_lease(lease_id), self._timeout_s * 2)  # noqa: TID251
            log.info("left the province: revoked lease %x of %s", lease_id, self.key)
        except (aetcd.ClientError, TimeoutError, OSError) as exc:
            log.warning("could not revoke lease %x (%s); %s goes when it expires", lease_id, exc, self.key)
        finally:
            await self._client.close()

    async def _register_with_retry(self) -> None:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=0.1, max=2.0) + wait_random(0, 0.1),
            reraise=True,
        ):
            with attempt:
                if attempt.retry_state.attempt_number > 1 and self._endpoint_count > 1:
                    # That endpoint failed us: try the next member of the cluster.
                    await self._client.close()
                    self._client = self._new_client()
                await self._register()

    async def _register(self) -> None:
        lease: Any = await self._client.lease(self._ttl_s)
        lease_id = int(lease.id)
        await self._client.put(self._key, self._value(), lease=lease_id)
        self._lease_id = lease_id
        self.registered = True
        self.registrations += 1
        log.info("registered %s under lease %x (ttl %ds)", self.key, lease_id, int(lease.ttl))

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        next_put = loop.time() + self._interval_s
        while True:
            await asyncio.sleep(self._period_s)
            assert self._lease_id is not None
            reply: Any = await self._client.refresh_lease(self._lease_id)
            if reply is None or int(reply.TTL) <= 0:
                raise LeaseLost(f"lease {self._lease_id:x} expired")
            if loop.time() >= next_put:
                next_put = loop.time() + self._interval_s
                # Put with an unknown lease fails too: a lease lost between the two is caught.
                await self._client.put(self._key, self._value(), lease=self._lease_id)

    def _value(self) -> bytes:
        try:
            self._last_value = encode_summary(self._summary())
        except Exception:
            # A bug in the summary must not cost the registration: keep publishing the last one.
            log.exception("cannot build the site summary; publishing the previous one")
        return self._last_value

    def _lost(self, exc: BaseException) -> None:
        if self.registered:
            log.warning(
                "lost registration of %s: %s; registering again", self.key, str(exc) or type(exc).__name__
            )
        self.registered = False
        self.last_error = f"{type(exc).__name__}: {exc}"

    def _new_client(self) -> aetcd.Client:
        host, _, port = dialled(next(self._endpoints)).rpartition(":")
        return etcd_client(host, int(port), self._timeout_s)
