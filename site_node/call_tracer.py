"""A call's spans at this site, made from the call control's effects (the core itself has no clock
of its own and no tracer: it returns journal entries stamped with the time they happened).

One `call` span per call and site (`call.guest` where another city's caller is served), a child
of whatever span is current when the call's first entry is carried out: the trunk's PlaceCall,
or the peer's ServeCall from the origin city, whose traceparent came over gRPC. Below it, one
span per phase (ivr, queue, ring, talk, hold), instants for transfers and routing, and
`record.shipped` once central has acknowledged the call's records (the batch that took its
last). Outgoing RPCs made for a call (the routing question, the offer to another city) run in
`context_of(call_id)`, so the other process continues the same trace.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanContext, Tracer

from site_node.callcontrol.domain import Effect, Journal, RecordedEvent, ToAgent
from vcc.call_events import EventKind

# Phase each kind of entry starts (None: the phase goes on).
_PHASE_AFTER: dict[EventKind, str | None] = {
    EventKind.ARRIVED: None,
    EventKind.IVR_STARTED: "ivr",
    EventKind.DIGITS: None,
    EventKind.QUEUED: "queue",
    EventKind.RINGING: "ring",
    EventKind.RING_NO_ANSWER: "queue",
    EventKind.ANSWERED: "talk",
    EventKind.HELD: "hold",
    EventKind.RETRIEVED: "talk",
    EventKind.RETURNED: "queue",
    EventKind.TRANSFERRED: None,
    EventKind.AGENT_HUNG_UP: None,
    EventKind.CALLER_HUNG_UP: None,
    EventKind.ROUTED: None,
    EventKind.ROUTE_FAILED: None,
}
_INSTANTS = {
    EventKind.TRANSFERRED: "transfer",
    EventKind.ROUTED: "routed",
    EventKind.ROUTE_FAILED: "route-failed",
}
_ENDS = (EventKind.ENDED, EventKind.BLOCKED, EventKind.ABANDONED)
# Ended calls whose root span is remembered, for the record's shipping span.
REMEMBER_ENDED = 20_000


def _ns(at: float) -> int:
    return round(at * 1e9)


@dataclass
class _Live:
    root: Span
    phase: Span | None = None
    # Another city's caller served here: the leg ends with its agent's, not with an ENDED entry.
    guest: bool = False
    # The sampler kept the call's trace: only then are its phases, instants and shipping made
    # (an untraced call costs its root's decision; its context still goes to the other cities,
    # so that they drop it too: a call is traced whole or not at all).
    traced: bool = True
    # The root's attributes as last set: each entry sets only what changed.
    agent_code: str = ""
    skill_group: str = ""


class CallTracer:
    def __init__(self, tracer: Tracer, site_id: str) -> None:
        self._tracer = tracer
        self._site_id = site_id
        self._live: dict[str, _Live] = {}
        self._ended: OrderedDict[str, SpanContext] = OrderedDict()
        # Ended calls whose `record.shipped` is made (one per call).
        self._shipped: OrderedDict[str, None] = OrderedDict()

    def observe(self, effects: Sequence[Effect]) -> None:
        for fx in effects:
            if isinstance(fx, Journal):
                self._entry(fx.event)
            elif isinstance(fx, ToAgent) and fx.kind in ("ended", "withdrawn"):
                live = self._live.get(fx.call_id)
                if live is not None and live.guest:
                    self._end(fx.call_id, live, _ns(fx.at), fx.reason or fx.kind)

    def _entry(self, e: RecordedEvent) -> None:
        live = self._live.get(e.call_id)
        if live is None and e.kind in _ENDS and e.call_id in self._ended:
            # The end that follows an end (ENDED after ABANDONED): the call's span is over, and a
            # new one here would take the call's place for its shipping and links.
            return
        if live is None:
            guest = e.kind not in (EventKind.ARRIVED, EventKind.BLOCKED)
            root = self._tracer.start_span(
                "call.guest" if guest else "call",
                context=otel_context.get_current(),
                start_time=_ns(e.at),
                attributes={"vcc.call_id": e.call_id, "vcc.site": self._site_id},
            )
            live = self._live[e.call_id] = _Live(root, guest=guest, traced=root.is_recording())
        at = _ns(e.at)
        if not live.traced:
            if e.kind in _ENDS or (live.guest and e.kind == EventKind.RING_NO_ANSWER):
                self._end(e.call_id, live, at, "")
            return
        if e.agent_code and e.agent_code != live.agent_code:
            live.agent_code = e.agent_code
            live.root.set_attribute("vcc.agent_code", e.agent_code)
        if e.skill_group and e.skill_group != live.skill_group:
            live.skill_group = e.skill_group
            live.root.set_attribute("vcc.skill_group", e.skill_group)
        instant = _INSTANTS.get(e.kind)
        if instant is not None:
            span = self._child(live, instant, at, e)
            span.end(end_time=at)
        if e.kind in _ENDS or (live.guest and e.kind == EventKind.RING_NO_ANSWER):
            self._end(e.call_id, live, at, str(e.outcome or e.kind))
            return
        phase = _PHASE_AFTER.get(e.kind)
        if phase is not None:
            if live.phase is not None:
                live.phase.end(end_time=at)
            live.phase = self._child(live, phase, at, e)

    def _end(self, call_id: str, live: _Live, at: int, outcome: str) -> None:
        if live.traced:
            if live.phase is not None:
                live.phase.end(end_time=at)
            live.root.set_attribute("vcc.outcome", outcome)
            live.root.end(end_time=at)
        del self._live[call_id]
        self._ended[call_id] = live.root.get_span_context()
        while len(self._ended) > REMEMBER_ENDED:
            self._ended.popitem(last=False)

    def _child(self, live: _Live, name: str, at: int, e: RecordedEvent) -> Span:
        attributes = {"vcc.call_id": e.call_id, "vcc.site": self._site_id, "vcc.event": str(e.kind)}
        if e.agent_code:
            attributes["vcc.agent_code"] = e.agent_code
        attributes.update({f"vcc.data.{k}": v for k, v in e.data if k in ("stage", "to_site", "reason")})
        return self._tracer.start_span(
            name, context=trace.set_span_in_context(live.root), start_time=at, attributes=attributes
        )

    def span_context(self, call_id: str) -> SpanContext | None:
        live = self._live.get(call_id)
        if live is not None:
            return live.root.get_span_context()
        return self._ended.get(call_id)

    @contextlib.contextmanager
    def context_of(self, call_id: str) -> Iterator[None]:
        """Make the call's span current (for the RPCs, and the tasks, started for it)."""
        ctx = self.span_context(call_id)
        if ctx is None:
            yield
            return
        token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(ctx)))
        try:
            yield
        finally:
            otel_context.detach(token)

    def shipped(self, call_ids: Sequence[str], sent_at: float, acked_at: float) -> None:
        """The calls' records reached central: a `record.shipped` span in each call's trace, once,
        for the batch that took its last records here (the call had ended here when it was
        sent). A call's records go in two or three batches: a span per batch was three times the
        spans, about a twentieth of a site's CPU at 200 calls/s."""
        for call_id in dict.fromkeys(call_ids):
            ctx = self._ended.get(call_id)
            if ctx is None or not ctx.trace_flags.sampled or call_id in self._shipped:
                continue
            self._shipped[call_id] = None
            while len(self._shipped) > REMEMBER_ENDED:
                self._shipped.popitem(last=False)
            parent = trace.set_span_in_context(trace.NonRecordingSpan(ctx))
            span = self._tracer.start_span(
                "record.shipped",
                context=parent,
                start_time=_ns(sent_at),
                attributes={"vcc.call_id": call_id, "vcc.site": self._site_id},
            )
            span.end(end_time=_ns(acked_at))

    def links(self, call_ids: Sequence[str]) -> list[trace.Link]:
        found = (self.span_context(c) for c in dict.fromkeys(call_ids))
        # Only to traces that are kept: a link to a dropped one leads nowhere.
        return [trace.Link(ctx) for ctx in found if ctx is not None and ctx.trace_flags.sampled]


class ShipTracing:
    """The shipper's spans: `records.ship` per batch (current while the batch is sent, so central's
    IngestCallEvents continues it; linked to each call's trace), then `record.shipped` per call.
    `catch_up`: the steps not yet observed are observed first (site_node/step_observers.py), so
    that every call of the batch has its span to link to."""

    def __init__(
        self, tracer: Tracer, calls: CallTracer, catch_up: Callable[[], None] = lambda: None
    ) -> None:
        self._tracer = tracer
        self._calls = calls
        self._catch_up = catch_up

    @contextlib.contextmanager
    def batch(self, call_ids: Sequence[str], events: int) -> Iterator[None]:
        self._catch_up()
        with self._tracer.start_as_current_span(
            "records.ship", links=self._calls.links(call_ids), attributes={"vcc.events": events}
        ):
            yield

    def shipped(self, call_ids: Sequence[str], sent_at: float, acked_at: float) -> None:
        self._catch_up()
        self._calls.shipped(call_ids, sent_at, acked_at)
