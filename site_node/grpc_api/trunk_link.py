"""A trunk group link's signalling stream (TrunkIngressService.Signalling): many calls on one stream.

An ISDN PRI carries the signalling of all its channels on one D-channel, each message tagged with
its call's reference (Q.931); a media gateway does not open a connection per call. A PlaceCall
stream per call costs each call a stream's set-up (headers, the server's authorization, a handler
task) and a message per step; the link is set up once, each of its calls is a reference, and the
steps of every call the site has at one moment leave in one message. A call means what it means
on PlaceCall, through the same port of the runtime (`SiteRuntime.offer`, its `CallerLine`): a
channel held from offer to release, an idempotent re-offer, the end heard once its records are
durable, and the stream's end before a call's `ended` as that caller hanging up.

`LinkOutbox` keeps the link's reports in order; `SignallingLink` is one stream's handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate

from site_node.grpc_api import convert
from site_node.runtime import CallerLine, CallerStep, SiteRuntime
from vcc.call_events import Outcome
from vcc.errors import AlreadyExists, InvalidArgument, Unavailable, VccError
from vcc.rpc import timestamp
from vcc.v1 import trunk_pb2

log = logging.getLogger(__name__)

# Signals in one message of the link (more: the link is malformed, INVALID_ARGUMENT).
MAX_SIGNALS = 1000
MAX_CALL_REF = 128
# A W3C traceparent is 55 characters; room for a tracestate-free future version.
MAX_TRACEPARENT = 128
# Reports in one message of the site: far below gRPC's 4 MB at a few hundred bytes each.
MAX_REPORTS = 500


class LinkOutbox:
    """The link's reports waiting to be written: the ready ones in order, and each call's steps held
    behind one whose records are not durable yet (its caller hears the end only then, as on
    PlaceCall; the other calls of the link do not wait for it). `wake` is told of each report."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._ready: list[trunk_pb2.CallReport] = []
        self._held: dict[str, deque[CallerStep]] = {}

    def __len__(self) -> int:
        return len(self._ready)

    def holding(self) -> int:
        """Calls whose next step waits for its records."""
        return len(self._held)

    def progress(self, ref: str, step: CallerStep) -> None:
        held = self._held.get(ref)
        if held is not None:
            held.append(step)
            return
        durable = step[1]
        if durable is not None and not durable.done():
            self._held[ref] = deque([step])
            durable.add_done_callback(lambda _: self._release(ref))
            return
        self._add(ref, step)

    def error(self, ref: str, code: str, message: str) -> None:
        error = trunk_pb2.SignallingError(code=code, message=message)
        self._ready.append(trunk_pb2.CallReport(call_ref=ref, error=error))
        self._wake()

    def take(self, limit: int = MAX_REPORTS) -> list[trunk_pb2.CallReport]:
        out, self._ready = self._ready[:limit], self._ready[limit:]
        return out

    def _add(self, ref: str, step: CallerStep) -> None:
        msg, durable = step
        if durable is not None and (durable.cancelled() or durable.exception() is not None):
            # Its records could not be kept: the caller is not told the call ended, as a PlaceCall
            # stream breaks before its `ended` then.
            self.error(ref, "records-not-durable", "the call's records could not be kept")
            return
        self._ready.append(trunk_pb2.CallReport(call_ref=ref, progress=msg))
        self._wake()

    def _release(self, ref: str) -> None:
        held = self._held.get(ref)
        while held:
            durable = held[0][1]
            if durable is not None and not durable.done():
                durable.add_done_callback(lambda _: self._release(ref))
                return
            self._add(ref, held.popleft())
        self._held.pop(ref, None)


def offer_call(rt: SiteRuntime, line: CallerLine, key: str, offer: trunk_pb2.CallOffer) -> str:
    """A new call from the trunk (a link's or a PlaceCall stream's offer): its id."""
    return rt.offer(
        line,
        idempotency_key=key,
        ani=offer.ani,
        dnis=offer.dnis,
        trunk_group=offer.trunk_group,
        call_id=offer.call_id,
        attached=dict(offer.attached_data),
        dial_id=offer.dial_id,
    )


def already_ended(rt: SiteRuntime, over: tuple[str, Outcome]) -> trunk_pb2.PlaceCallResponse:
    """The answer to a re-sent offer whose call is over: how it ended (nothing is created)."""
    ended = trunk_pb2.CallEnded(outcome=convert.outcome_to_proto(over[1]), reason="already-ended")
    return trunk_pb2.PlaceCallResponse(call_id=over[0], at=timestamp(rt.clock()), ended=ended)


def same_offer(a: trunk_pb2.CallOffer, b: trunk_pb2.CallOffer) -> bool:
    """The same call offered again (the idempotency key is the reference; batching is the link's)."""
    return (a.ani, a.dnis, a.trunk_group, a.call_id, a.dial_id) == (
        b.ani,
        b.dnis,
        b.trunk_group,
        b.call_id,
        b.dial_id,
    ) and dict(a.attached_data) == dict(b.attached_data)


@dataclass(eq=False)
class _LinkCall:
    line: CallerLine
    offer: trunk_pb2.CallOffer
    call_id: str = ""


class _Wake:
    """The inbox's token: the outbox has reports to write."""


_WAKE = _Wake()
_Inbox = asyncio.Queue[trunk_pb2.SignallingRequest | _Wake | None]


class SignallingLink:
    """One Signalling stream's handler: its live calls by reference, their progress out in batches,
    and, however the stream ends, every call still on it hung up."""

    def __init__(self, runtime: SiteRuntime) -> None:
        self.rt = runtime
        self.calls: dict[str, _LinkCall] = {}
        self.outbox = LinkOutbox(self._wake)
        self._inbox: _Inbox = asyncio.Queue()
        self._woken = False

    def _wake(self) -> None:
        if not self._woken:
            self._woken = True
            self._inbox.put_nowait(_WAKE)

    async def serve(
        self,
        requests: AsyncIterator[trunk_pb2.SignallingRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncGenerator[trunk_pb2.SignallingResponse]:
        # The gateway knows the link is up before its first offer.
        await context.send_initial_metadata(())
        # The gateway's signals (from the pump) are carried out in this task, which also writes
        # the reports: an offer's first steps leave in the turn that took it, with whatever else
        # the link has at that moment.
        pump = asyncio.create_task(self._pump(requests))
        writing = True
        try:
            while True:
                item = await self._inbox.get()
                while True:
                    if item is None:
                        writing = False  # the gateway half-closed: serve its calls to their ends
                    elif isinstance(item, _Wake):
                        self._woken = False
                    else:
                        self._take(item)
                    if self._inbox.empty():
                        break
                    item = self._inbox.get_nowait()
                while self.outbox:
                    yield trunk_pb2.SignallingResponse(reports=self.outbox.take())
                idle = not self.calls and not self.outbox.holding()
                if idle and not writing:
                    return
                if idle and self.rt.closed:
                    raise Unavailable("site-stopping", f"site {self.rt.sb.site_id} is shutting down")
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            # A call still on the link when it ends: its caller hung up (the channel is released).
            for call in list(self.calls.values()):
                if self.rt.callers.get(call.call_id) is call.line:
                    self._hang_up(call.call_id, "caller-stream-lost")
            self.calls.clear()

    async def _pump(self, requests: AsyncIterator[trunk_pb2.SignallingRequest]) -> None:
        try:
            async for request in requests:
                self._inbox.put_nowait(request)
        except grpc.aio.AioRpcError as exc:
            log.debug("signalling link ended: %s", exc)
        self._inbox.put_nowait(None)

    def _take(self, request: trunk_pb2.SignallingRequest) -> None:
        n = len(request.signals)
        if n == 0 or n > MAX_SIGNALS:
            raise InvalidArgument("signals-count", f"signals: 1 to {MAX_SIGNALS} in a message, not {n}")
        for signal in request.signals:
            self._signal(signal)

    def _signal(self, signal: trunk_pb2.CallSignal) -> None:
        ref = signal.call_ref
        if not ref or len(ref) > MAX_CALL_REF:
            self.outbox.error("", "call-ref-invalid", f"call_ref: 1 to {MAX_CALL_REF} characters")
            return
        kind = signal.WhichOneof("action")
        try:
            if kind == "offer":
                self._offer(ref, signal)
            elif kind == "digits":
                digits = signal.digits.digits
                call = self._live(ref)
                if call is not None:
                    call_id = call.call_id
                    self._apply(lambda now: self.rt.sb.caller_digits(now, call_id, digits))
            elif kind == "hang_up":
                call = self._live(ref)
                if call is not None:
                    self._hang_up(call.call_id, "caller-hung-up")
            else:
                raise InvalidArgument("action-required", "a signal carries an offer, digits or a hang-up")
        except VccError as exc:
            self.outbox.error(ref, exc.error_id, exc.message)

    def _live(self, ref: str) -> _LinkCall | None:
        """The live call of `ref` on this link; None for one that just ended (its end crossed the
        signal); an error for a reference this link never had."""
        call = self.calls.get(ref)
        if call is None and self.rt.sb.ended_outcome(ref) is None:
            raise InvalidArgument("unknown-call-ref", "no call of this reference on this link")
        return call

    def _offer(self, ref: str, signal: trunk_pb2.CallSignal) -> None:
        offer = signal.offer
        if offer.idempotency_key and offer.idempotency_key != ref:
            raise InvalidArgument("call-ref-mismatch", "offer.idempotency_key: must be the signal's call_ref")
        if len(signal.traceparent) > MAX_TRACEPARENT:
            raise InvalidArgument("field-too-large", f"traceparent: at most {MAX_TRACEPARENT} characters")
        live = self.calls.get(ref)
        if live is not None:
            if not same_offer(live.offer, offer):
                raise AlreadyExists("call-ref-live", "this call reference is live with other details")
            # The same offer again (the gateway unsure the first arrived): the call's last step again.
            if live.line.last is not None:
                self.outbox.progress(ref, (live.line.last, None))
            return
        sb = self.rt.sb
        call_id = sb.call_for_key(ref)
        entry = _LinkCall(CallerLine(sink=partial(self._progress, ref)), offer)
        if call_id is not None:
            over = sb.ended_outcome(ref)
            if over is not None:
                # The call this reference made is over: how it ended, nothing created.
                self.outbox.progress(ref, (already_ended(self.rt, over), None))
                return
            if call_id in self.rt.callers:
                # Bound to the stream that made it (as on PlaceCall): the live caller keeps it.
                raise AlreadyExists("call-key-live", "this call reference's call is live on another stream")
            # Its first stream is gone but the call is not over: this link is its caller now.
            entry.call_id = call_id
            self.calls[ref] = entry
            self.rt.attach_caller(call_id, entry.line)
            return
        # Registered first: the offer's own steps (an `ended` at once: no channel) find it.
        self.calls[ref] = entry
        try:
            with _trace(signal.traceparent):
                entry.call_id = offer_call(self.rt, entry.line, ref, offer)
        except VccError:
            if self.calls.get(ref) is entry:
                del self.calls[ref]
            raise

    def _progress(self, ref: str, step: CallerStep | None) -> None:
        """A call's step from the runtime (its CallerLine's sink)."""
        if step is None:
            self.calls.pop(ref, None)  # another stream took the call over
            return
        self.outbox.progress(ref, step)
        if step[0].WhichOneof("progress") == "ended":
            self.calls.pop(ref, None)

    def _hang_up(self, call_id: str, reason: str) -> None:
        if call_id in self.rt.sb.calls:
            self._apply(lambda now: self.rt.sb.caller_hang_up(now, call_id, reason))

    def _apply(self, op: Callable[[float], list[Any]]) -> None:
        try:
            self.rt.do(op)
        except VccError as exc:
            # A caller action that no longer applies (the call just ended) changes nothing.
            log.debug("signalling link: caller action refused: %s", exc)


@contextlib.contextmanager
def _trace(traceparent: str) -> Iterator[None]:
    """The call's own trace while its offer is carried out, not the link's (a call is a root
    without one): the call's spans start under whatever is current."""
    ctx = propagate.extract({"traceparent": traceparent}) if traceparent else otel_context.Context()
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)
