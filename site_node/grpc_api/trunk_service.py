"""gRPC adapter of the trunk side: one PlaceCall stream is one trunk channel for one call; one
Signalling stream a trunk group link's signalling, for many calls (`trunk_link.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import grpc

from site_node.callcontrol import Switchboard
from site_node.grpc_api.trunk_link import SignallingLink, already_ended, offer_call
from site_node.runtime import CallerLine, SiteRuntime
from vcc import logs
from vcc.errors import AlreadyExists, InvalidArgument, VccError
from vcc.rpc import maps_stream_errors
from vcc.v1 import trunk_pb2, trunk_pb2_grpc

log = logging.getLogger(__name__)

# A caller that opens a stream must offer the call promptly.
OFFER_TIMEOUT_S = 10.0
_Progress = tuple[trunk_pb2.PlaceCallResponse, asyncio.Future[None] | None]


class TrunkIngress(trunk_pb2_grpc.TrunkIngressServiceServicer):
    def __init__(self, runtime: SiteRuntime) -> None:
        self.rt = runtime

    @property
    def sb(self) -> Switchboard:
        return self.rt.sb

    @maps_stream_errors
    async def PlaceCall(
        self,
        request_iterator: AsyncIterator[trunk_pb2.PlaceCallRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[trunk_pb2.PlaceCallResponse]:
        try:
            # asyncio.timeout, not wait_for: no task of its own for every call's offer.
            async with asyncio.timeout(OFFER_TIMEOUT_S):
                first = await anext(request_iterator)
        except (StopAsyncIteration, TimeoutError):
            raise InvalidArgument(
                "offer-required", "the first message of PlaceCall must be an offer"
            ) from None
        if first.WhichOneof("action") != "offer":
            raise InvalidArgument("offer-required", "the first message of PlaceCall must be an offer")
        offer = first.offer
        line = CallerLine()
        call_id = self.sb.call_for_key(offer.idempotency_key) if offer.idempotency_key else None
        if call_id is not None:
            over = self.sb.ended_outcome(offer.idempotency_key)
            if over is not None:
                # The call this key made is over: tell the retry how it ended, create nothing.
                yield already_ended(self.rt, over)
                return
            if call_id in self.rt.callers:
                # The key is bound to the stream that made the call: a second stream for a live
                # call is refused and the live caller keeps it (else anyone re-sending a key would
                # take the caller side over and hang the real caller up).
                raise AlreadyExists("call-key-live", "this idempotency key's call is live on another stream")
            # The first stream is gone but the call is not over yet: this one is its caller now.
            self.rt.attach_caller(call_id, line)
        else:
            call_id = offer_call(self.rt, line, offer.idempotency_key, offer)
        # This RPC's task (and its reader) is this call's: every line it logs names it.
        logs.bind_context(call_id=call_id)
        reader = asyncio.create_task(self._caller_actions(call_id, request_iterator))
        ended = False
        # Taken from the line while batching but not sent with that batch (a durable wait).
        held: deque[_Progress | None] = deque()
        try:
            while True:
                item = held.popleft() if held else await line.queue.get()
                if item is None:
                    return  # another stream took this call over
                msg, durable = item
                if durable is not None:
                    await durable
                if offer.batched and not line.queue.empty():
                    msg = _batch(msg, line, held)
                yield msg
                if _ends(msg):
                    ended = True
                    return
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            if not ended and self.rt.callers.get(call_id) is line:
                # The caller's stream broke: the channel is released as a hang-up.
                self._hang_up(call_id, "caller-stream-lost")

    @maps_stream_errors
    async def Signalling(
        self,
        request_iterator: AsyncIterator[trunk_pb2.SignallingRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[trunk_pb2.SignallingResponse]:
        # Closed here and at once however the stream ends: its cleanup hangs its calls up.
        async with contextlib.aclosing(SignallingLink(self.rt).serve(request_iterator, context)) as link:
            async for message in link:
                yield message

    async def _caller_actions(self, call_id: str, actions: AsyncIterator[trunk_pb2.PlaceCallRequest]) -> None:
        try:
            async for action in actions:
                kind = action.WhichOneof("action")
                if kind == "digits":
                    digits = action.digits.digits
                    self._apply(call_id, lambda now, d=digits: self.sb.caller_digits(now, call_id, d))
                elif kind == "hang_up":
                    self._hang_up(call_id, "caller-hung-up")
                    return
        except grpc.aio.AioRpcError:
            pass  # the stream went away; PlaceCall's cleanup handles it

    def _hang_up(self, call_id: str, reason: str) -> None:
        if call_id in self.sb.calls:
            self._apply(call_id, lambda now: self.sb.caller_hang_up(now, call_id, reason))

    def _apply(self, call_id: str, op: Any) -> None:
        try:
            self.rt.do(op)
        except VccError as exc:
            # A caller action that no longer applies (the call just ended) changes nothing.
            log.debug("call %s: caller action refused: %s", call_id, exc)


def _batch(
    first: trunk_pb2.PlaceCallResponse, line: CallerLine, held: deque[_Progress | None]
) -> trunk_pb2.PlaceCallResponse:
    """`first` and the steps queued behind it now, in one message (CallOffer.batched). A step
    that must wait for its records to be durable (the end) is held for a message of its own."""
    out = trunk_pb2.PlaceCallResponse()
    out.CopyFrom(first)
    while not line.queue.empty():
        item = line.queue.get_nowait()
        if item is None or item[1] is not None:
            held.append(item)
            break
        out.then.append(item[0])
    return out


def _ends(msg: trunk_pb2.PlaceCallResponse) -> bool:
    return msg.WhichOneof("progress") == "ended" or any(m.WhichOneof("progress") == "ended" for m in msg.then)
