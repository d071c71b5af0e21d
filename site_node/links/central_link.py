"""The site's live link to central: its state stream (coalesced) and routing questions.

The site keeps serving its own callers whatever happens here: when central is unreachable a
routing question is answered "stay" and the stream reconnects with bounded back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from functools import partial
from typing import Any

import grpc
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from site_node.callcontrol.domain import AskRoute
from site_node.runtime import SiteRuntime
from vcc import rpc
from vcc.errors import VccError
from vcc.tls import central_server
from vcc.v1 import central_pb2, central_pb2_grpc, site_admin_pb2

log = logging.getLogger(__name__)

# A busy site sends at most this often, an idle one at least this often (a heartbeat).
MIN_INTERVAL_S = 0.1
HEARTBEAT_S = 1.0
ROUTE_DEADLINE_S = 1.0


class CentralLink:
    def __init__(
        self,
        runtime: SiteRuntime,
        central_address: Callable[[], str | None],
        summary: Callable[[], site_admin_pb2.SiteSummary],
    ) -> None:
        self.rt = runtime
        self._address = central_address
        self._summary = summary
        self._changed = asyncio.Event()
        self._channel: grpc.aio.Channel | None = None
        self._channel_address: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.seq = 0
        self.connected = False

    def state_changed(self) -> None:
        self._changed.set()

    def _stub(self) -> central_pb2_grpc.CentralServiceAsyncStub | None:
        address = self._address()
        if address is None:
            return None
        channel = self._channel
        if channel is None or address != self._channel_address:
            if channel is not None:
                self._spawn(channel.close())
            channel = self._channel = rpc.channel(address, expect=central_server())
            self._channel_address = address
        return central_pb2_grpc.CentralServiceStub(channel)

    # Routing questions ----------------------------------------------------------------------

    def ask_route(self, ask: AskRoute) -> None:
        self._spawn(self._route(ask))

    async def _route(self, ask: AskRoute) -> None:
        target: str | None = None
        decision_id = ""
        stub = self._stub()
        if stub is not None:
            try:
                reply = await stub.RouteCall(
                    central_pb2.RouteCallRequest(
                        call_id=ask.call_id,
                        site_id=self.rt.sb.site_id,
                        skill_group=ask.skill_group,
                        priority=ask.priority,
                        waited_s=ask.waited_s,
                        exclude_site_ids=ask.exclude,
                    ),
                    timeout=ROUTE_DEADLINE_S,
                )
                target = reply.decision.target_site_id or None
                decision_id = reply.decision.decision_id
            except grpc.aio.AioRpcError as exc:
                # Central is away: the call stays and asks again later.
                log.debug("route for %s: central unavailable (%s)", ask.call_id, exc.code().name)
        with contextlib.suppress(VccError):
            self.rt.do(lambda now: self.rt.sb.route_decided(now, ask.call_id, target, decision_id))

    # The state stream -----------------------------------------------------------------------

    async def run(self) -> None:
        """Stream the site's state to central until cancelled; reconnect on failure."""
        while True:
            try:
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception_type(grpc.aio.AioRpcError),
                    # Short waits: a new central leader must get every site's state within a second.
                    wait=wait_exponential(multiplier=0.05, max=0.5),
                    stop=stop_after_attempt(20),
                    reraise=True,
                ):
                    with attempt:
                        await self._stream_once()
                # Central ended the stream. If it moved (another replica leads), follow it now;
                # otherwise pause a moment, so that a central closing streams cannot spin us.
                if self._address() == self._channel_address:
                    await asyncio.sleep(MIN_INTERVAL_S)
                continue
            except grpc.aio.AioRpcError as exc:
                log.warning("state stream to central failing (%s); still trying", exc.code().name)
            self.connected = False
            await asyncio.sleep(HEARTBEAT_S)

    async def _stream_once(self) -> None:
        stub = self._stub()
        if stub is None:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "no central"
            )
        stream = stub.StreamSiteState(self._states())
        self.connected = True
        async for command in stream:
            if command.WhichOneof("command") == "pull_call":
                pull = command.pull_call
                with contextlib.suppress(VccError):
                    self.rt.do(
                        partial(
                            self.rt.sb.pull_call,
                            skill_group=pull.skill_group,
                            to_site_id=pull.to_site_id,
                            decision_id=pull.decision.decision_id,
                        )
                    )
        self.connected = False

    async def _states(self) -> AsyncIterator[central_pb2.StreamSiteStateRequest]:
        loop = asyncio.get_running_loop()
        streaming_to = self._channel_address
        while self._address() == streaming_to:
            self.seq += 1
            self._changed.clear()
            sent_at = loop.time()
            yield central_pb2.StreamSiteStateRequest(seq=self.seq, state=self._summary())
            # Coalesce: however busy the site, at most one update per MIN_INTERVAL_S.
            await asyncio.sleep(MIN_INTERVAL_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(0.0, HEARTBEAT_S - (loop.time() - sent_at)))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()
