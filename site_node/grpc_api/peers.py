"""Site <-> site over gRPC: remote legs of calls served in another city.

`PeerLinks` is the origin's side (every leg to a city on that pair's one PeerLink stream,
site_node/grpc_api/peer_pairs.py; or, `pair_streams=False`, one ServeCall stream per leg, the
protocol before, still served for a city not yet upgraded); `SitePeer` is the target's
servicer. Both turn stream messages into switchboard operations and switchboard effects into
stream messages; neither decides anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from site_node.callcontrol.domain import LegToOrigin, LegToTarget, OfferRemote
from site_node.grpc_api import peer_limits
from site_node.grpc_api.peer_pairs import (
    TERMINAL,
    Line,
    PairLinks,
    PairServer,
    offer_from_proto,
    offer_to_proto,
    reply_op,
    request_op,
)
from site_node.runtime import SiteRuntime
from vcc import rpc
from vcc.authz import require_site
from vcc.errors import AlreadyExists, FailedPrecondition, InvalidArgument, VccError
from vcc.rpc import maps_errors, maps_stream_errors, timestamp
from vcc.tls import site_server
from vcc.tracing import Tracing
from vcc.v1 import peer_pb2, peer_pb2_grpc

log = logging.getLogger(__name__)

# A peer that opens a stream must make its offer promptly.
FIRST_MESSAGE_TIMEOUT_S = 5.0
SERVE_CALL = "/vcc.v1.SitePeerService/ServeCall"

Ctx = grpc.aio.ServicerContext[Any, Any]


# Other cities' message keys remembered (a retry is stored once).
MAX_DELIVERED = 10_000


class PeerLinks:
    """Origin side: one channel per peer site; a pair stream, or one ServeCall stream per leg."""

    def __init__(
        self,
        runtime: SiteRuntime,
        address_of: Callable[[str], str | None],
        tracing: Tracing | None = None,
        *,
        pair_streams: bool = True,
    ) -> None:
        self.rt = runtime
        self._address_of = address_of
        # The leg's client span: the target's guest call is its child, in the call's trace.
        self._tracing = tracing
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._outboxes: dict[str, asyncio.Queue[peer_pb2.ServeCallRequest | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pairs = PairLinks(runtime, address_of, self._channel, tracing) if pair_streams else None

    def offer(self, offer: OfferRemote) -> None:
        if self._pairs is not None:
            self._pairs.offer(offer)
            return
        queue: asyncio.Queue[peer_pb2.ServeCallRequest | None] = asyncio.Queue()
        queue.put_nowait(peer_pb2.ServeCallRequest(offer=offer_to_proto(offer, self.rt.sb.site_id)))
        self._outboxes[offer.offer_id] = queue
        task = asyncio.ensure_future(self._run_leg(offer, queue))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def send(self, message: LegToTarget) -> None:
        if self._pairs is not None and self._pairs.send(message.offer_id, message.kind, message.reason):
            return
        queue = self._outboxes.get(message.offer_id)
        if queue is None:
            return
        if message.kind == "confirm":
            queue.put_nowait(peer_pb2.ServeCallRequest(answer_confirmed=peer_pb2.AnswerConfirmed()))
        else:
            queue.put_nowait(
                peer_pb2.ServeCallRequest(caller_gone=peer_pb2.CallerGone(reason=message.reason))
            )
            queue.put_nowait(None)  # nothing more to say on this leg

    async def _run_leg(
        self, offer: OfferRemote, queue: asyncio.Queue[peer_pb2.ServeCallRequest | None]
    ) -> None:
        offer_id = offer.offer_id
        sb = self.rt.sb
        address = self._address_of(offer.target_site_id)
        try:
            if address is None:
                self._apply(lambda now: sb.remote_refused(now, offer_id, "target-unknown"))
                return
            with self._leg_span() as metadata:
                await self._follow_leg(offer_id, offer.target_site_id, address, queue, metadata)
        except grpc.aio.AioRpcError as exc:
            reason = "target-lost" if exc.code() != grpc.StatusCode.CANCELLED else "leg-cancelled"
            self._apply(lambda now: sb.remote_lost(now, offer_id, reason))
        finally:
            self._outboxes.pop(offer_id, None)

    def _leg_span(self) -> contextlib.AbstractContextManager[list[tuple[str, str]]]:
        if self._tracing is None:
            return contextlib.nullcontext([])
        return self._tracing.stream_span(SERVE_CALL)

    async def _follow_leg(
        self,
        offer_id: str,
        target_site_id: str,
        address: str,
        queue: asyncio.Queue[peer_pb2.ServeCallRequest | None],
        metadata: list[tuple[str, str]],
    ) -> None:
        stub = peer_pb2_grpc.SitePeerServiceStub(self._channel(address, target_site_id))
        # The offer is written by this task at once; the leg's later words by a writer of its own
        # (a request iterator would hand even the offer to grpc.aio's consumer task first).
        stream = stub.ServeCall(metadata=metadata or None)
        offer = queue.get_nowait()
        assert offer is not None
        await stream.write(offer)
        writer = asyncio.ensure_future(_write_leg(queue, stream))
        try:
            await self._read_leg(offer_id, stream)
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _read_leg(self, offer_id: str, stream: Any) -> None:
        sb = self.rt.sb
        async for reply in stream:
            try:
                peer_limits.check_reply(reply)
            except VccError as exc:
                log.warning("leg %s: target sent too much, leg dropped: %s", offer_id, exc)
                stream.cancel()
                self._apply(lambda now: sb.remote_lost(now, offer_id, "target-bad-message"))
                return
            op = reply_op(sb, offer_id, reply)
            if op is not None:
                self._apply(op)
            if reply.WhichOneof("message") in TERMINAL:
                return
        # The target closed the leg without saying how: it is gone for this call.
        self._apply(lambda now: sb.remote_lost(now, offer_id, "target-closed"))

    def _apply(self, op: Callable[[float], list[Any]]) -> None:
        try:
            self.rt.do(op)
        except VccError as exc:
            log.debug("peer message refused by the switchboard: %s", exc)

    def _channel(self, address: str, site_id: str) -> grpc.aio.Channel:
        ch = self._channels.get(address)
        if ch is None:
            # The certificate answering there must be that city's, not any province certificate.
            ch = self._channels[address] = rpc.channel(address, expect=site_server(site_id))
        return ch

    async def close(self) -> None:
        if self._pairs is not None:
            await self._pairs.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Each within a bound: a city cut silently must not hold this one's stop.
        await asyncio.gather(*(rpc.close_channel(ch) for ch in self._channels.values()))


async def _write_leg(queue: asyncio.Queue[peer_pb2.ServeCallRequest | None], stream: Any) -> None:
    """The origin's words on a leg after its offer, in order; the end of the queue half-closes."""
    try:
        while (message := await queue.get()) is not None:
            await stream.write(message)
        await stream.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
        # The stream ended meanwhile: its reader reports how.
        log.debug("leg: writing to the target stopped: %s", exc)


class SitePeer(peer_pb2_grpc.SitePeerServiceServicer):
    """Target side: serves other cities' calls on their offers."""

    def __init__(self, runtime: SiteRuntime) -> None:
        self.rt = runtime
        # Every live leg served here, by offer id, whichever stream it came on.
        self._lines: dict[str, Line] = {}
        self._pair_server = PairServer(runtime, self._lines)
        # The desk server's hand for other cities' messages (sender, to, text) -> id; None: no desk.
        self.deliver: Callable[[str, str, str], Awaitable[int]] | None = None
        self._delivered: dict[str, int] = {}

    def send(self, message: LegToOrigin) -> None:
        line = self._lines.get(message.offer_id)
        if line is None:
            return
        reply = peer_pb2.ServeCallResponse(at=timestamp(self.rt.clock()))
        match message.kind:
            case "answer_asked":
                reply.answer_asked.CopyFrom(peer_pb2.LegAnswerAsked(agent_code=message.agent_code))
            case "held":
                reply.held.SetInParent()
            case "retrieved":
                reply.retrieved.SetInParent()
            case "hung_up":
                reply.hung_up.CopyFrom(peer_pb2.LegHungUp(agent_code=message.agent_code))
            case "returned":
                reply.returned.CopyFrom(peer_pb2.LegReturned(reason=message.reason))
            case "transfer_asked":
                agent_code, skill_group, site_id, ivr = message.transfer_to or ("", "", "", False)
                reply.transfer_asked.CopyFrom(
                    peer_pb2.LegTransferAsked(
                        from_agent_code=message.agent_code,
                        agent_code=agent_code,
                        skill_group=skill_group,
                        site_id=site_id,
                        ivr=ivr,
                        attached_data=dict(message.attached),
                    )
                )
        line(reply)

    @maps_errors
    async def Ping(self, request: peer_pb2.PingRequest, context: Ctx) -> peer_pb2.PingResponse:
        return peer_pb2.PingResponse(site_id=self.rt.sb.site_id)

    @maps_errors
    async def DeliverMessage(
        self, request: peer_pb2.DeliverMessageRequest, context: Ctx
    ) -> peer_pb2.DeliverMessageResponse:
        """An agent of the calling site writes to one of ours (the desk server keeps it)."""
        if not 1 <= len(request.message_key) <= 64:
            raise InvalidArgument("bad-message-key", "message_key: 1 to 64 characters")
        await require_site(context, request.from_site_id)
        if self.rt.sb.directory.agent_sites.get(request.sender) != request.from_site_id:
            raise InvalidArgument(
                "bad-sender", f"sender: no agent {request.sender!r} at {request.from_site_id}"
            )
        if self.deliver is None:
            raise FailedPrecondition("no-desk", f"site {self.rt.sb.site_id} serves no desktops")
        key = f"{request.from_site_id}:{request.message_key}"
        found = self._delivered.get(key)
        if found is None:
            found = await self.deliver(request.sender, request.to, request.text)
            self._delivered[key] = found
            if len(self._delivered) > MAX_DELIVERED:
                self._delivered.pop(next(iter(self._delivered)))
        return peer_pb2.DeliverMessageResponse(id=found)

    @maps_stream_errors
    async def ServeCall(
        self, request_iterator: AsyncIterator[peer_pb2.ServeCallRequest], context: Ctx
    ) -> AsyncIterator[peer_pb2.ServeCallResponse]:
        try:
            # asyncio.timeout, not wait_for: no task of its own, the offer is read in this one.
            async with asyncio.timeout(FIRST_MESSAGE_TIMEOUT_S):
                first = await anext(request_iterator)
        except (StopAsyncIteration, TimeoutError):
            raise InvalidArgument(
                "offer-required", "the first message of ServeCall must be an offer"
            ) from None
        if first.WhichOneof("message") != "offer":
            raise InvalidArgument("offer-required", "the first message of ServeCall must be an offer")
        peer_limits.check_offer(first.offer)
        # A site offers only its own calls: the origin is the certificate's site.
        await require_site(context, first.offer.origin_site_id)
        offer = offer_from_proto(first.offer)
        sb = self.rt.sb
        if offer.offer_id in self._lines:
            # A second stream for a live leg is refused; the live leg and its stream are untouched.
            raise AlreadyExists("offer-exists", f"offer {offer.offer_id} is already being served")
        line: asyncio.Queue[peer_pb2.ServeCallResponse | None] = asyncio.Queue()
        self._lines[offer.offer_id] = line.put_nowait
        try:
            agent, refusal = self.rt.serve_remote(offer)
            now = timestamp(self.rt.clock())
            if agent is None:
                yield peer_pb2.ServeCallResponse(at=now, refused=peer_pb2.LegRefused(reason=refusal))
                return
            yield peer_pb2.ServeCallResponse(
                at=now, reserved=peer_pb2.LegReserved(agent_code=agent, site_id=sb.site_id)
            )
            reader = asyncio.create_task(self._origin_messages(offer.offer_id, request_iterator, line))
            try:
                while (reply := await line.get()) is not None:
                    yield reply
                    if reply.WhichOneof("message") in TERMINAL:
                        return
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        finally:
            self._lines.pop(offer.offer_id, None)
            # However the stream ended, the guest call must not outlive it.
            with contextlib.suppress(VccError):
                self.rt.do(lambda now: sb.remote_caller_gone(now, offer.offer_id, "origin-lost"))

    @maps_stream_errors
    async def PeerLink(
        self, request_iterator: AsyncIterator[peer_pb2.PeerLinkRequest], context: Ctx
    ) -> AsyncIterator[peer_pb2.PeerLinkResponse]:
        """Every leg of one calling city on one stream (site_node/grpc_api/peer_pairs.py)."""
        async for reply in self._pair_server.serve(request_iterator, context):
            yield reply

    async def _origin_messages(
        self,
        offer_id: str,
        requests: AsyncIterator[peer_pb2.ServeCallRequest],
        line: asyncio.Queue[peer_pb2.ServeCallResponse | None],
    ) -> None:
        try:
            async for request in requests:
                peer_limits.check_request(request)
                op = request_op(self.rt.sb, offer_id, request)
                if op is not None:
                    self.rt.do(op)
                if request.WhichOneof("message") == "caller_gone":
                    break
        except (grpc.aio.AioRpcError, VccError) as exc:
            log.debug("leg %s: origin stream ended: %s", offer_id, exc)
        # The origin is done with this leg (or gone): end our side of the stream.
        line.put_nowait(None)
