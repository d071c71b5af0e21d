"""One long-lived PeerLink stream per pair of cities, carrying every remote leg between them.

A ServeCall stream per leg costs each cross-city offer a stream's set-up (headers, the server's
authorization, a handler task at the target) before the offer is even read; the pair's stream is
set up once and each leg's messages ride on it, named by offer id. The legs' protocol is the same
as ServeCall's (the messages are ServeCall's, wrapped), and so is a broken stream's meaning, for
every leg on it: the origin re-queues each caller, the target ends each agent's call.

`PairStream` is the origin's end of one pair's stream; `PairServer` the target's handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, MutableMapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential, wait_random

from site_node.callcontrol import RemoteOfferIn, Switchboard, TransferTarget
from site_node.grpc_api import convert, peer_limits
from site_node.runtime import SiteRuntime
from vcc.authz import peer_identity
from vcc.errors import AlreadyExists, InvalidArgument, PermissionDenied, VccError
from vcc.rpc import timestamp, unix_s
from vcc.tracing import Tracing
from vcc.v1 import peer_pb2, peer_pb2_grpc

log = logging.getLogger(__name__)

# Target -> origin messages after which a leg is over.
TERMINAL = frozenset({"refused", "hung_up", "returned", "transfer_asked"})
# A W3C traceparent is 55 characters; room for a tracestate-free future version.
MAX_TRACEPARENT = 128
SERVE_CALL = "/vcc.v1.SitePeerService/ServeCall"

# A leg's sink at the target: the replies it sends to its origin, in order.
Line = Callable[[peer_pb2.ServeCallResponse], None]
Op = Callable[[float], list[Any]]


def offer_to_proto(offer: Any, origin: str) -> peer_pb2.RemoteOffer:
    return peer_pb2.RemoteOffer(
        call_id=offer.call_id,
        origin_site_id=origin,
        offer_id=offer.offer_id,
        skill_group=offer.skill_group,
        priority=offer.priority,
        arrived_at=timestamp(offer.arrived_at),
        ani=offer.ani,
        dnis=offer.dnis,
        attached_data=dict(offer.attached),
        customer=convert.customer_to_proto(offer.customer),
        agent_code=offer.agent_code,
        purpose=offer.purpose,
        from_agent_code=offer.from_agent_code,
    )


def offer_from_proto(o: peer_pb2.RemoteOffer) -> RemoteOfferIn:
    return RemoteOfferIn(
        offer_id=o.offer_id,
        call_id=o.call_id,
        origin_site_id=o.origin_site_id,
        skill_group=o.skill_group,
        priority=o.priority,
        arrived_at=unix_s(o.arrived_at),
        ani=o.ani,
        dnis=o.dnis,
        attached=tuple(sorted(o.attached_data.items())),
        customer=convert.customer_from_proto(o.customer) if o.customer.customer_id else None,
        agent_code=o.agent_code,
        purpose=o.purpose,
        from_agent_code=o.from_agent_code,
    )


def reply_op(sb: Switchboard, offer_id: str, reply: peer_pb2.ServeCallResponse) -> Op | None:
    """The origin's switchboard operation for one of the target's messages on a leg."""
    kind = reply.WhichOneof("message")
    if kind == "reserved":
        return partial(sb.remote_reserved, offer_id=offer_id, agent_code=reply.reserved.agent_code)
    if kind == "refused":
        return partial(sb.remote_refused, offer_id=offer_id, reason=reply.refused.reason)
    if kind == "answer_asked":
        return partial(sb.remote_answer_asked, offer_id=offer_id)
    if kind in ("held", "retrieved"):
        return partial(sb.remote_held, offer_id=offer_id, held=kind == "held")
    if kind == "hung_up":
        return partial(sb.remote_hung_up, offer_id=offer_id)
    if kind == "returned":
        return partial(sb.remote_returned, offer_id=offer_id, reason=reply.returned.reason)
    if kind == "transfer_asked":
        t = reply.transfer_asked
        return partial(
            sb.remote_transfer_asked,
            offer_id=offer_id,
            from_agent_code=t.from_agent_code,
            target=TransferTarget(t.agent_code, t.skill_group, t.site_id, t.ivr),
            attached=dict(t.attached_data),
        )
    return None


def request_op(sb: Switchboard, offer_id: str, request: peer_pb2.ServeCallRequest) -> Op | None:
    """The target's switchboard operation for one of the origin's later messages on a leg."""
    kind = request.WhichOneof("message")
    if kind == "answer_confirmed":
        return partial(sb.remote_answer_confirmed, offer_id=offer_id)
    if kind == "caller_gone":
        return partial(
            sb.remote_caller_gone, offer_id=offer_id, reason=request.caller_gone.reason or "caller-gone"
        )
    return None


@dataclass
class _OriginLeg:
    span: trace.Span | None
    reserved: bool = False


@dataclass
class PairStream:
    """The origin's end of its stream to one target city: every leg there, multiplexed.

    `on_reply(offer_id, reply)` carries a target's message into the switchboard; `on_lost(offer_id,
    reason)` ends a leg the stream can no longer carry. Owned by `PeerLinks`."""

    channel: grpc.aio.Channel
    target_site_id: str
    on_reply: Callable[[str, peer_pb2.ServeCallResponse], None]
    on_lost: Callable[[str, str], None]
    on_closed: Callable[[PairStream], None]
    legs: dict[str, _OriginLeg] = field(default_factory=dict)
    closed: bool = False
    _out: asyncio.Queue[peer_pb2.PeerLinkRequest | None] = field(default_factory=asyncio.Queue)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _call: Any = None

    def open(self) -> None:
        self._call = peer_pb2_grpc.SitePeerServiceStub(self.channel).PeerLink()
        self._tasks = [asyncio.ensure_future(self._write()), asyncio.ensure_future(self._read())]

    async def ready(self) -> None:
        """Returns once the target's handler is up (its initial metadata came); raises if the stream
        ended first."""
        await self._call.initial_metadata()
        if self.closed or self._call.done():
            raise ConnectionError(f"the stream to {self.target_site_id} ended")

    def offer(self, offer: peer_pb2.RemoteOffer, span: trace.Span | None, traceparent: str) -> None:
        self.legs[offer.offer_id] = _OriginLeg(span)
        self._out.put_nowait(
            peer_pb2.PeerLinkRequest(
                offer_id=offer.offer_id,
                traceparent=traceparent,
                leg=peer_pb2.ServeCallRequest(offer=offer),
            )
        )

    def send(self, offer_id: str, request: peer_pb2.ServeCallRequest, *, last: bool = False) -> None:
        if offer_id not in self.legs:
            return
        self._out.put_nowait(peer_pb2.PeerLinkRequest(offer_id=offer_id, leg=request))
        if last:
            # The origin's last word on the leg: the target ends its side on reading it.
            self._end(offer_id, error=None)

    def _end(self, offer_id: str, error: str | None) -> None:
        leg = self.legs.pop(offer_id, None)
        if leg is not None and leg.span is not None:
            if error is not None:
                leg.span.set_status(trace.Status(trace.StatusCode.ERROR, error))
            leg.span.end()

    async def _write(self) -> None:
        try:
            while (message := await self._out.get()) is not None:
                await self._call.write(message)
            await self._call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            # The stream ended meanwhile: the reader reports how.
            log.debug("pair stream to %s: writing stopped: %s", self.target_site_id, exc)

    async def _read(self) -> None:
        reason = "target-closed"
        try:
            async for envelope in self._call:
                self._take(envelope)
        except grpc.aio.AioRpcError as exc:
            reason = "target-lost" if exc.code() != grpc.StatusCode.CANCELLED else "leg-cancelled"
            log.info("pair stream to %s ended: %s", self.target_site_id, exc.code().name)
        finally:
            self.closed = True
            self._out.put_nowait(None)
            # Every leg on a broken stream is a broken leg.
            for offer_id in list(self.legs):
                self._end(offer_id, error=reason)
                self.on_lost(offer_id, reason)
            self.on_closed(self)

    def _take(self, envelope: peer_pb2.PeerLinkResponse) -> None:
        offer_id = envelope.offer_id
        leg = self.legs.get(offer_id)
        if leg is None:
            # A leg this side already ended (its last word crossed the target's): nothing to do.
            if envelope.WhichOneof("message") == "error":
                log.warning("pair stream to %s: %s", self.target_site_id, envelope.error.message)
            return
        if envelope.WhichOneof("message") == "error":
            log.warning(
                "pair stream to %s refused %s: %s", self.target_site_id, offer_id, envelope.error.message
            )
            if not leg.reserved:
                # The offer itself was refused: as a refusal (the call is offered elsewhere).
                self._end(offer_id, error=envelope.error.code)
                self.on_reply(offer_id, _refused(envelope.error.code or "refused"))
            return
        reply = envelope.leg
        try:
            peer_limits.check_reply(reply)
        except VccError as exc:
            log.warning("leg %s: target sent too much, leg dropped: %s", offer_id, exc)
            bye = peer_pb2.ServeCallRequest(caller_gone=peer_pb2.CallerGone(reason="target-bad-message"))
            self.send(offer_id, bye, last=True)
            self.on_lost(offer_id, "target-bad-message")
            return
        kind = reply.WhichOneof("message")
        leg.reserved = leg.reserved or kind == "reserved"
        if kind in TERMINAL:
            self._end(offer_id, error=None)
        self.on_reply(offer_id, reply)

    async def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _refused(reason: str) -> peer_pb2.ServeCallResponse:
    return peer_pb2.ServeCallResponse(refused=peer_pb2.LegRefused(reason=reason[: peer_limits.MAX_REASON]))


# At the target: the origin's messages, the legs' replies, None at the stream's end.
Inbox = asyncio.Queue[peer_pb2.PeerLinkRequest | peer_pb2.PeerLinkResponse | None]


async def _pump(requests: AsyncIterator[peer_pb2.PeerLinkRequest], inbox: Inbox, origin: str | None) -> None:
    try:
        async for envelope in requests:
            inbox.put_nowait(envelope)
    except grpc.aio.AioRpcError as exc:
        log.debug("pair stream from %s ended: %s", origin, exc)
    inbox.put_nowait(None)


class _TargetLeg:
    """A leg's line at the target: its replies wrapped onto the pair's stream. Until the offer's
    own answer is out, what the switchboard says on the leg waits (the answer comes first)."""

    def __init__(self, offer_id: str, out: Inbox) -> None:
        self.offer_id = offer_id
        self._out = out
        self._held: list[peer_pb2.ServeCallResponse] | None = []
        self.on_terminal: Callable[[str], None] = lambda _: None

    def __call__(self, reply: peer_pb2.ServeCallResponse) -> None:
        if self._held is not None:
            self._held.append(reply)
            return
        self._out.put_nowait(peer_pb2.PeerLinkResponse(offer_id=self.offer_id, leg=reply))
        if reply.WhichOneof("message") in TERMINAL:
            self.on_terminal(self.offer_id)

    def answered(self, reply: peer_pb2.ServeCallResponse) -> None:
        held, self._held = self._held or [], None
        for message in (reply, *held):
            self(message)


class PairServer:
    """The target's handler of PeerLink streams: every leg of one calling city on one stream.

    `lines` is shared with ServeCall's legs (SitePeer.send finds any leg's line there), so an offer
    id is live once, whichever way it came."""

    def __init__(self, runtime: SiteRuntime, lines: MutableMapping[str, Line]) -> None:
        self.rt = runtime
        self._lines = lines

    async def serve(
        self, requests: AsyncIterator[peer_pb2.PeerLinkRequest], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[peer_pb2.PeerLinkResponse]:
        who = peer_identity(context)
        # The calling city is the certificate's (the authorizer let only site certificates in);
        # None on a plaintext server (in-process tests), where offers speak for themselves.
        origin = who.name if who is not None else None
        # The origin knows the stream is up (and the next offer finds no set-up to wait for).
        await context.send_initial_metadata(())
        # The origin's messages (from the pump) and the legs' replies (from the switchboard's
        # effects), in order. This task carries the messages out, so the answer to an offer is
        # written in the turn that served it, ahead of the tasks its serving woke (the agent's
        # desktop): measured, a reply handed to another task waited behind them.
        inbox: Inbox = asyncio.Queue()
        legs: set[str] = set()
        pump = asyncio.create_task(_pump(requests, inbox, origin))
        try:
            while (item := await inbox.get()) is not None:
                if isinstance(item, peer_pb2.PeerLinkResponse):
                    yield item
                    continue
                try:
                    self._take(item, origin, inbox, legs)
                except VccError as exc:
                    # Bad input: answered, and no live leg touched.
                    named = item.offer_id if len(item.offer_id) <= peer_limits.MAX_OFFER_ID else ""
                    error = peer_pb2.PeerLinkError(code=exc.error_id, message=exc.message)
                    yield peer_pb2.PeerLinkResponse(offer_id=named, error=error)
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            # However the stream ended, no guest call of it outlives it.
            for offer_id in list(legs):
                self._end(offer_id, legs, "origin-lost")

    def _end(self, offer_id: str, legs: set[str], reason: str) -> None:
        legs.discard(offer_id)
        self._lines.pop(offer_id, None)
        sb = self.rt.sb
        with contextlib.suppress(VccError):
            self.rt.do(partial(sb.remote_caller_gone, offer_id=offer_id, reason=reason))

    def _take(
        self,
        envelope: peer_pb2.PeerLinkRequest,
        origin: str | None,
        out: Inbox,
        legs: set[str],
    ) -> None:
        offer_id = envelope.offer_id
        request = envelope.leg
        if request.WhichOneof("message") == "offer":
            self._offer(envelope, origin, out, legs)
            return
        if offer_id not in legs:
            # A leg already over here (its end crossed the origin's message), or never of this stream.
            log.debug("pair stream from %s: message for no live leg %s", origin, offer_id[:128])
            return
        peer_limits.check_request(request)
        op = request_op(self.rt.sb, offer_id, request)
        if request.WhichOneof("message") == "caller_gone":
            legs.discard(offer_id)
            self._lines.pop(offer_id, None)
        if op is not None:
            self.rt.do(op)

    def _offer(
        self,
        envelope: peer_pb2.PeerLinkRequest,
        origin: str | None,
        out: Inbox,
        legs: set[str],
    ) -> None:
        o = envelope.leg.offer
        peer_limits.check_offer(o)
        if envelope.offer_id != o.offer_id:
            raise InvalidArgument("offer-id-mismatch", "offer_id: must be the offer's own")
        if len(envelope.traceparent) > MAX_TRACEPARENT:
            raise InvalidArgument(
                "peer-field-too-large", f"traceparent: at most {MAX_TRACEPARENT} characters"
            )
        if origin is not None and o.origin_site_id != origin:
            # A site offers only its own calls.
            log.warning("pair stream from %s: offer for site %r refused", origin, o.origin_site_id)
            raise PermissionDenied(
                "permission-denied",
                f"origin_site_id: this certificate does not speak for {o.origin_site_id!r}",
            )
        if o.offer_id in self._lines:
            raise AlreadyExists("offer-exists", f"offer {o.offer_id} is already being served")
        offer = offer_from_proto(o)
        line = _TargetLeg(o.offer_id, out)
        line.on_terminal = lambda offer_id: self._end(offer_id, legs, "origin-lost")
        self._lines[o.offer_id] = line
        legs.add(o.offer_id)
        try:
            agent, refusal = self._serve(offer, envelope.traceparent)
        except VccError:
            legs.discard(o.offer_id)
            self._lines.pop(o.offer_id, None)
            raise
        now = timestamp(self.rt.clock())
        if agent is None:
            line.answered(peer_pb2.ServeCallResponse(at=now, refused=peer_pb2.LegRefused(reason=refusal)))
            return
        reserved = peer_pb2.LegReserved(agent_code=agent, site_id=self.rt.sb.site_id)
        line.answered(peer_pb2.ServeCallResponse(at=now, reserved=reserved))

    def _serve(self, offer: RemoteOfferIn, traceparent: str) -> tuple[str | None, str]:
        # The guest call's span continues the origin's leg span (ServeCall carries it in metadata).
        token = otel_context.attach(propagate.extract({"traceparent": traceparent})) if traceparent else None
        try:
            return self.rt.serve_remote(offer)
        finally:
            if token is not None:
                otel_context.detach(token)


# After a pair's stream broke: re-opened at once (the next offer finds it up), within a bound;
# past it the next offer opens it.
REOPEN_ATTEMPTS = 5
REOPEN_TIMEOUT_S = 5.0


class PairLinks:
    """The origin's pair streams, one per target city: opened when the pair first has a leg,
    re-opened (tenacity, bounded) when one breaks. Composed by `PeerLinks`."""

    def __init__(
        self,
        runtime: SiteRuntime,
        address_of: Callable[[str], str | None],
        channel_of: Callable[[str, str], grpc.aio.Channel],
        tracing: Tracing | None = None,
    ) -> None:
        self.rt = runtime
        self._address_of = address_of
        self._channel_of = channel_of
        self._tracing = tracing
        self._pairs: dict[str, PairStream] = {}
        self._reopening: dict[str, asyncio.Task[None]] = {}
        self._closing = False

    def offer(self, offer: Any) -> None:
        offer_id = offer.offer_id
        address = self._address_of(offer.target_site_id)
        if address is None:
            # Not while the effect that offered is being carried out: on the loop's next turn.
            op = partial(self.rt.sb.remote_refused, offer_id=offer_id, reason="target-unknown")
            self.rt.loop_soon(lambda: self._apply(op))
            return
        span, traceparent = self._leg_span()
        pair = self._pair(offer.target_site_id, address)
        pair.offer(offer_to_proto(offer, self.rt.sb.site_id), span, traceparent)

    def send(self, offer_id: str, kind: str, reason: str) -> bool:
        """The origin's later word on a leg of a pair stream; False: no such leg here."""
        for pair in self._pairs.values():
            if offer_id in pair.legs:
                if kind == "confirm":
                    pair.send(
                        offer_id, peer_pb2.ServeCallRequest(answer_confirmed=peer_pb2.AnswerConfirmed())
                    )
                else:
                    gone = peer_pb2.ServeCallRequest(caller_gone=peer_pb2.CallerGone(reason=reason))
                    pair.send(offer_id, gone, last=True)
                return True
        return False

    def _pair(self, site_id: str, address: str) -> PairStream:
        pair = self._pairs.get(site_id)
        if pair is None or pair.closed:
            pair = PairStream(
                self._channel_of(address, site_id),
                site_id,
                on_reply=self._on_reply,
                on_lost=self._on_lost,
                on_closed=self._on_closed,
            )
            self._pairs[site_id] = pair
            pair.open()
        return pair

    def _leg_span(self) -> tuple[trace.Span | None, str]:
        # One client span per leg, as on ServeCall: the target's guest call is its child.
        if self._tracing is None or not self._tracing.enabled:
            return None, ""
        span = self._tracing.tracer.start_span(
            SERVE_CALL,
            kind=trace.SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.method": SERVE_CALL, "vcc.peer_stream": "pair"},
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        return span, carrier.get("traceparent", "")

    def _on_reply(self, offer_id: str, reply: peer_pb2.ServeCallResponse) -> None:
        op = reply_op(self.rt.sb, offer_id, reply)
        if op is not None:
            self._apply(op)

    def _on_lost(self, offer_id: str, reason: str) -> None:
        self._apply(partial(self.rt.sb.remote_lost, offer_id=offer_id, reason=reason))

    def _on_closed(self, pair: PairStream) -> None:
        if self._pairs.get(pair.target_site_id) is pair:
            del self._pairs[pair.target_site_id]
        site_id = pair.target_site_id
        if self._closing or site_id in self._reopening:
            return
        task = asyncio.ensure_future(self._reopen(site_id))
        self._reopening[site_id] = task
        task.add_done_callback(lambda _: self._reopening.pop(site_id, None))

    async def _reopen(self, site_id: str) -> None:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(REOPEN_ATTEMPTS),
            wait=wait_exponential(multiplier=0.2, max=5.0) + wait_random(0, 0.2),
            retry=retry_if_exception_type((grpc.aio.AioRpcError, ConnectionError, TimeoutError)),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    address = self._address_of(site_id)
                    if address is None:
                        return
                    async with asyncio.timeout(REOPEN_TIMEOUT_S):
                        await self._pair(site_id, address).ready()
        except (grpc.aio.AioRpcError, ConnectionError, TimeoutError) as exc:
            log.warning(
                "pair stream to %s not re-opened in %d attempts (%s): the next offer opens it",
                site_id,
                REOPEN_ATTEMPTS,
                exc,
            )

    def _apply(self, op: Op) -> None:
        try:
            self.rt.do(op)
        except VccError as exc:
            log.debug("peer message refused by the switchboard: %s", exc)

    async def close(self) -> None:
        self._closing = True
        for task in list(self._reopening.values()):
            task.cancel()
        await asyncio.gather(*self._reopening.values(), return_exceptions=True)
        await asyncio.gather(*(pair.close() for pair in list(self._pairs.values())))
