"""A call's spans are made after its steps (site_node/step_observers.py), yet an RPC made for a
call new in this very turn still continues its trace, and the shipper's batch still links to it.
The real runtime, outbox and call tracer (an in-memory exporter)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from site_node.call_tracer import CallTracer, ShipTracing
from site_node.callcontrol import Switchboard
from site_node.records.outbox import Outbox
from site_node.runtime import CallerLine, SiteRuntime
from tests.site_node.test_switchboard import SERVICE, sequential_ids, site_config
from vcc.config import RoutingConfig


async def _no_customer(_ani: str) -> None:
    return None


async def test_an_rpc_for_a_call_of_this_turn_continues_its_trace(tmp_path: Path) -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer = provider.get_tracer("test")
    calls = CallTracer(tracer, "gz")
    outbox = await Outbox.open(tmp_path / "outbox.db")
    sb = Switchboard(
        site_config(), SERVICE, new_call_id=sequential_ids(), routing=RoutingConfig(mode="overflow")
    )
    rt = SiteRuntime(sb, outbox, _no_customer, tracer=calls)
    assert rt.observers.after_step
    try:
        # A call offered in this turn: its first steps are not observed yet (no await since),
        # and an RPC made for it (the routing question, the offer to another city) runs in its
        # context, which makes the observers catch up first.
        call_id = rt.offer(CallerLine(), idempotency_key="a", ani="13800000001", dnis=SERVICE)
        assert calls.span_context(call_id) is None
        with rt._call_context(call_id):
            current = trace.get_current_span().get_span_context()
        root = calls.span_context(call_id)
        assert root is not None and root.is_valid
        assert current == root
        # The shipper's batch, sent before the observers' turn, links to the call's trace.
        rt.do(lambda now: rt.sb.caller_hang_up(now, call_id))
        shipping = ShipTracing(tracer, calls, rt.observers.catch_up)
        with shipping.batch([call_id], events=3):
            pass
        (batch,) = [s for s in spans.get_finished_spans() if s.name == "records.ship"]
        assert [link.context.trace_id for link in batch.links] == [root.trace_id]
        await asyncio.sleep(0)
        assert {s.name for s in spans.get_finished_spans()} >= {"call", "records.ship"}
    finally:
        await rt.close()
        await outbox.close()
