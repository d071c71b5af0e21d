"""A call's spans at a site (site_node.call_tracer): a traced call has its root, one span per
phase and its shipping; a call the sampler dropped costs no span at all, yet its context still
goes to the other cities (not sampled), so that they drop it too."""

from __future__ import annotations

from typing import Any, cast

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler
from opentelemetry.trace import Span, Tracer

from site_node.call_tracer import CallTracer, ShipTracing
from site_node.callcontrol.domain import Journal, RecordedEvent
from vcc.call_events import EventKind, Outcome

PHASES = (
    (EventKind.ARRIVED, ""),
    (EventKind.IVR_STARTED, ""),
    (EventKind.QUEUED, ""),
    (EventKind.RINGING, "0101"),
    (EventKind.ANSWERED, "0101"),
    (EventKind.ENDED, "0101"),
)


class _Counting:
    """A tracer that counts the spans started through it (sampled or not)."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self.started: list[str] = []

    def start_span(self, name: str, **kw: Any) -> Span:
        self.started.append(name)
        return self._tracer.start_span(name, **kw)

    def start_as_current_span(self, name: str, **kw: Any) -> Any:
        return self._tracer.start_as_current_span(name, **kw)


def _tracer(sampler: Sampler) -> tuple[CallTracer, ShipTracing, InMemorySpanExporter, _Counting]:
    spans = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer = _Counting(provider.get_tracer("test"))
    calls = CallTracer(cast(Tracer, tracer), "gz")
    return calls, ShipTracing(cast(Tracer, tracer), calls), spans, tracer


def _call(calls: CallTracer, call_id: str) -> None:
    for seq, (kind, agent) in enumerate(PHASES):
        outcome = Outcome.ANSWERED if kind == EventKind.ENDED else None
        event = RecordedEvent(
            call_id, "gz", seq, kind, 100.0 + seq, agent_code=agent, skill_group="general", outcome=outcome
        )
        calls.observe([Journal(event)])


def test_a_traced_call_has_its_phases_its_attributes_and_its_shipping() -> None:
    calls, ship, spans, _ = _tracer(ALWAYS_ON)
    _call(calls, "c1")
    with ship.batch(["c1"], 6):
        pass
    ship.shipped(["c1"], 107.0, 107.5)
    names = [s.name for s in spans.get_finished_spans()]
    assert names == ["ivr", "queue", "ring", "talk", "call", "records.ship", "record.shipped"]
    root = next(s for s in spans.get_finished_spans() if s.name == "call")
    assert root.attributes is not None
    assert root.attributes["vcc.agent_code"] == "0101"
    assert root.attributes["vcc.skill_group"] == "general"
    assert root.attributes["vcc.outcome"] == "ANSWERED"
    batch = next(s for s in spans.get_finished_spans() if s.name == "records.ship")
    assert [link.context.trace_id for link in batch.links] == [root.context.trace_id]


def test_a_call_shipped_over_several_batches_has_one_record_shipped_after_its_last() -> None:
    calls, ship, spans, _ = _tracer(ALWAYS_ON)
    # Its first records go while it is still up: not its records yet.
    calls.observe([Journal(RecordedEvent("c2", "gz", 1, EventKind.ARRIVED, 100.0))])
    ship.shipped(["c2", "c2"], 100.5, 100.6)
    assert [s.name for s in spans.get_finished_spans()] == []
    for seq, (kind, agent) in enumerate(PHASES[1:], start=2):
        outcome = Outcome.ANSWERED if kind == EventKind.ENDED else None
        event = RecordedEvent("c2", "gz", seq, kind, 100.0 + seq, agent_code=agent, outcome=outcome)
        calls.observe([Journal(event)])
    ship.shipped(["c2"], 108.0, 108.5)
    # A late record of it (a wrap-up code) in a later batch makes no second one.
    ship.shipped(["c2"], 109.0, 109.5)
    shipped = [s for s in spans.get_finished_spans() if s.name == "record.shipped"]
    assert [(s.start_time, s.end_time) for s in shipped] == [(108_000_000_000, 108_500_000_000)]
    root = next(s for s in spans.get_finished_spans() if s.name == "call")
    assert shipped[0].context.trace_id == root.context.trace_id


def test_a_dropped_call_costs_no_span_but_its_context_still_travels() -> None:
    calls, ship, spans, tracer = _tracer(ALWAYS_OFF)
    _call(calls, "c1")
    with ship.batch(["c1"], 6):
        pass
    ship.shipped(["c1"], 107.0, 107.5)
    assert spans.get_finished_spans() == ()
    # Only the root's decision was asked for: no phase, no shipping span made to be dropped.
    assert tracer.started == ["call"]
    # The other cities continue the same (dropped) trace: they must drop it too.
    ctx = calls.span_context("c1")
    assert ctx is not None and ctx.is_valid and not ctx.trace_flags.sampled
    assert calls.links(["c1"]) == []


def test_the_end_after_an_abandon_opens_no_second_span() -> None:
    """An abandoned call's ABANDONED is followed by its ENDED: one `call` span, and its shipping
    and links in that span's trace (a span opened by the ENDED took the call's place)."""
    calls, ship, spans, _ = _tracer(ALWAYS_ON)
    steps = [
        (EventKind.ARRIVED, None),
        (EventKind.ABANDONED, Outcome.ABANDONED),
        (EventKind.ENDED, Outcome.ABANDONED),
    ]
    for seq, (kind, outcome) in enumerate(steps):
        calls.observe([Journal(RecordedEvent("c1", "gz", seq, kind, 100.0 + seq, outcome=outcome))])
    with ship.batch(["c1"], 3):
        pass
    ship.shipped(["c1"], 103.0, 103.5)
    finished = spans.get_finished_spans()
    roots = [s for s in finished if s.name.startswith("call")]
    assert [s.name for s in roots] == ["call"]
    (batch,) = [s for s in finished if s.name == "records.ship"]
    (shipped,) = [s for s in finished if s.name == "record.shipped"]
    assert [link.context.trace_id for link in batch.links] == [roots[0].context.trace_id]
    assert shipped.context.trace_id == roots[0].context.trace_id
