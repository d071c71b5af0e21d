"""DialOutService (F20): trunk gateways follow the site's dial-outs (callbacks) and report the
callees who did not answer; one who answers comes back on PlaceCall with the dial's id."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from site_node.callcontrol.domain import DialOut
from site_node.runtime import SiteRuntime
from vcc.rpc import maps_errors, maps_stream_errors
from vcc.v1 import dialout_pb2, dialout_pb2_grpc

log = logging.getLogger(__name__)
Ctx = grpc.aio.ServicerContext[Any, Any]


class DialOuts(dialout_pb2_grpc.DialOutServiceServicer):
    def __init__(self, runtime: SiteRuntime) -> None:
        self.rt = runtime
        self._watchers: list[asyncio.Queue[DialOut | None]] = []
        self._turn = itertools.count()
        runtime.dial_out = self.dial

    def dial(self, d: DialOut) -> None:
        """Each dial-out to one gateway, in turn; with none, the dial fails at once (retried later)."""
        if not self._watchers:
            log.info("dial-out %s: no trunk gateway follows the dial-outs", d.dial_id)
            self.rt.loop_soon(
                lambda: self.rt.do(lambda now: self.rt.sb.dial_failed(now, d.dial_id, "failed"))
            )
            return
        self._watchers[next(self._turn) % len(self._watchers)].put_nowait(d)

    @maps_stream_errors
    async def WatchDialOuts(
        self, request: dialout_pb2.WatchDialOutsRequest, context: Ctx
    ) -> AsyncIterator[dialout_pb2.DialOut]:
        queue: asyncio.Queue[DialOut | None] = asyncio.Queue()
        self._watchers.append(queue)
        try:
            while (d := await queue.get()) is not None:
                yield dialout_pb2.DialOut(
                    dial_id=d.dial_id, number=d.number, skill_group=d.skill_group, callback_id=d.callback_id,
                    attempt=d.attempt,
                )  # fmt: skip
        finally:
            self._watchers.remove(queue)

    @maps_errors
    async def DialFailed(
        self, request: dialout_pb2.DialFailedRequest, context: Ctx
    ) -> dialout_pb2.DialFailedResponse:
        self.rt.do(lambda now: self.rt.sb.dial_failed(now, request.dial_id, request.outcome))
        return dialout_pb2.DialFailedResponse()

    def close(self) -> None:
        for queue in self._watchers:
            queue.put_nowait(None)
