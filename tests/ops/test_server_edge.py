"""The one server interceptor (vcc.server_edge): a server span continuing the caller's trace, the
latency histogram by status code, the caller's trace current in a stream, over a real grpc.aio
server and channel in this process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, Histogram

from vcc.server_edge import ServerEdge

SERVICE = "test.Edge"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def _echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    if request == b"missing":
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    if request == b"crash":
        raise RuntimeError("boom")
    return request


async def _trace_of_stream(
    request: bytes, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[bytes]:
    # What a handler (a guest call's spans) sees as its parent: the caller's trace.
    ctx = trace.get_current_span().get_span_context()
    yield f"{ctx.trace_id:032x}".encode()


@pytest.fixture
async def served() -> AsyncIterator[tuple[grpc.aio.Channel, InMemorySpanExporter, Histogram, ServerEdge]]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    labels = ["service", "method", "code"]
    latency = Histogram("edge_rpc_seconds", "test", labels, registry=CollectorRegistry())
    edge = ServerEdge(tracer=provider.get_tracer("test"), latency=latency)
    server = grpc.aio.server(interceptors=[edge])
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
        "Trace": grpc.unary_stream_rpc_method_handler(_trace_of_stream),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel, spans, latency, edge
    finally:
        await channel.close()
        await server.stop(None)


def _count(latency: Histogram, code: str) -> float:
    for metric in latency.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count") and sample.labels["code"] == code:
                return sample.value
    return 0.0


async def test_a_unary_rpc_gets_a_server_span_in_the_callers_trace_and_is_timed(
    served: tuple[grpc.aio.Channel, InMemorySpanExporter, Histogram, ServerEdge],
) -> None:
    channel, spans, latency, _ = served
    echo: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(f"/{SERVICE}/Echo")
    assert await echo(b"hello", metadata=(("traceparent", TRACEPARENT),), timeout=5) == b"hello"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await echo(b"missing", timeout=5)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as crashed:
        await echo(b"crash", timeout=5)
    assert crashed.value.code() == grpc.StatusCode.UNKNOWN
    ok, missing, crash = spans.get_finished_spans()
    assert ok.name == f"/{SERVICE}/Echo" and ok.kind == trace.SpanKind.SERVER
    assert ok.parent is not None and f"{ok.context.trace_id:032x}" == TRACEPARENT.split("-")[1]
    assert ok.attributes is not None and ok.attributes["rpc.grpc.status_code"] == 0
    assert ok.status.status_code == trace.StatusCode.UNSET
    assert missing.attributes is not None and missing.attributes["rpc.grpc.status_code"] == 5
    assert missing.status.status_code == trace.StatusCode.ERROR
    assert crash.status.status_code == trace.StatusCode.ERROR
    assert (_count(latency, "OK"), _count(latency, "NOT_FOUND"), _count(latency, "UNKNOWN")) == (1, 1, 1)


async def test_a_stream_runs_in_the_callers_trace_and_each_method_is_wrapped_once(
    served: tuple[grpc.aio.Channel, InMemorySpanExporter, Histogram, ServerEdge],
) -> None:
    channel, spans, _, edge = served
    stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(f"/{SERVICE}/Trace")
    for _ in range(3):
        got = [m async for m in stream(b"", metadata=(("traceparent", TRACEPARENT),), timeout=5)]
        assert got == [TRACEPARENT.split("-")[1].encode()]
    # A stream gets no span of its own (the call's spans describe it), and its wrapper was built
    # at its first RPC only.
    assert spans.get_finished_spans() == ()
    assert list(edge._built) == [f"/{SERVICE}/Trace"]
