"""Traces for every vcc process: OpenTelemetry SDK, context carried over gRPC between processes.

Each process builds one `Tracing` (its own TracerProvider: no global one is installed, so two
nodes composed in one test process keep theirs apart). Its gRPC interceptors (the
OpenTelemetry aio instrumentation's) go on the process's server and, through
vcc.metrics.CLIENT_INTERCEPTORS, on every channel it opens: a client span injects the W3C
traceparent, the server side continues the caller's trace.

Spans are exported over OTLP when an endpoint is configured (`tracing.otlp_endpoint`, or
OTEL_EXPORTER_OTLP_ENDPOINT), and otherwise to a local JSON-lines file, one span per line,
which `vcc trace CALL_ID --run-dir D` reads. Export runs in the SDK's batch thread, never on
the event loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import orjson
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.instrumentation.grpc._aio_client import (
    StreamUnaryAioClientInterceptor,
    UnaryUnaryAioClientInterceptor,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import StatusCode

from vcc.config import TracingConfig

log = logging.getLogger(__name__)

_UNARY_CLIENT = (UnaryUnaryAioClientInterceptor, StreamUnaryAioClientInterceptor)

OTLP_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_FILE_SUFFIX = ".traces.jsonl"


class JsonLinesExporter(SpanExporter):
    """One JSON object per finished span, appended to a file (the default when no OTLP endpoint).

    Bounded: once the file reaches `max_bytes` it is renamed `<name>.1` (the older ones shift to
    `.2` ... `.<keep>`, the oldest dropped) and a new one begun, so a long-running process keeps at
    most `keep + 1` files of about `max_bytes` each. A batch is never split across two files."""

    def __init__(self, path: Path, process: str, *, max_bytes: int = 64 * 1024 * 1024, keep: int = 3) -> None:
        self.path = path
        self._process = process
        self._max_bytes = max_bytes
        self._keep = keep
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("ab")
        self._size = self._file.tell()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        # The exporter's thread holds the GIL while it serializes, and the event loop waits
        # meanwhile: orjson (UTF-8, as the file is read) costs a sixth of json.dumps per span.
        data = b"".join(orjson.dumps(span_record(s, self._process), default=str) + b"\n" for s in spans)
        with self._lock:
            if self._file.closed:
                return SpanExportResult.FAILURE
            try:
                if self._size and self._size + len(data) > self._max_bytes:
                    self._rotate()
                self._file.write(data)
                self._file.flush()
            except OSError as exc:
                # A full disk loses spans, never the process.
                log.warning("traces: cannot write %s: %s", self.path, exc)
                return SpanExportResult.FAILURE
            self._size += len(data)
        return SpanExportResult.SUCCESS

    def rotated(self) -> list[Path]:
        """The older files, newest first."""
        return [p for i in range(1, self._keep + 1) if (p := self._numbered(i)).exists()]

    def _numbered(self, i: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{i}")

    def _rotate(self) -> None:
        self._file.close()
        self._numbered(self._keep).unlink(missing_ok=True)
        for i in range(self._keep - 1, 0, -1):
            if self._numbered(i).exists():
                self._numbered(i).rename(self._numbered(i + 1))
        self.path.rename(self._numbered(1))
        self._file = self.path.open("ab")
        self._size = 0

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


_STATUS_NAMES = {code: code.name for code in StatusCode}


def span_record(span: ReadableSpan, process: str) -> dict[str, Any]:
    ctx = span.get_span_context()
    assert ctx is not None
    parent = span.parent
    return {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_id": f"{parent.span_id:016x}" if parent is not None else "",
        "remote_parent": bool(parent is not None and parent.is_remote),
        "name": span.name,
        "process": process,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": _STATUS_NAMES[span.status.status_code],
        "attributes": dict(span.attributes or ()),
        "links": [f"{link.context.trace_id:032x}/{link.context.span_id:016x}" for link in span.links],
    }


class Tracing:
    """One process's tracer provider, exporter and gRPC interceptors; `shutdown()` flushes."""

    def __init__(self, process: str, config: TracingConfig, *, traces_dir: Path | None = None) -> None:
        self.process = process
        self.enabled = config.enabled
        self.path: Path | None = None
        resource = Resource.create({"service.name": "vcc", "service.instance.id": process})
        sampler = ParentBased(TraceIdRatioBased(config.sample_ratio))
        self.provider = TracerProvider(resource=resource, sampler=sampler)
        if self.enabled:
            endpoint = config.otlp_endpoint or os.environ.get(OTLP_ENV, "")
            exporter: SpanExporter
            if endpoint:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

                exporter = OTLPSpanExporter(endpoint=endpoint, insecure=not endpoint.startswith("https"))
            else:
                folder = traces_dir if traces_dir is not None else Path(config.file_dir)
                self.path = folder / f"{process.replace(':', '-')}{TRACES_FILE_SUFFIX}"
                exporter = JsonLinesExporter(
                    self.path, process, max_bytes=config.file_max_bytes, keep=config.file_keep
                )
            self.provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
        self.tracer = self.provider.get_tracer("vcc")

    @classmethod
    def disabled(cls, process: str) -> Tracing:
        """No spans at all (a node composed in a test process, unless the test asks for traces)."""
        return cls(process, TracingConfig(enabled=False))

    def server_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        if not self.enabled:
            return []
        spans = aio_server_interceptor(tracer_provider=self.provider)  # type: ignore[no-untyped-call]
        return [_ByKind(unary=spans, streaming=_StreamParent())]

    def client_interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        """Spans for the unary RPCs a process makes. Not for streams: the instrumentation ends a
        stream's span only when its caller reads the stream to its very end, and ours stop reading
        at their last word (a peer leg's), or live as long as the process (a state stream); those
        spans were never exported. A stream that belongs to a call is traced by `stream_span`."""
        if not self.enabled:
            return []
        every = aio_client_interceptors(tracer_provider=self.provider)  # type: ignore[no-untyped-call]
        return [i for i in every if isinstance(i, _UNARY_CLIENT)]

    @contextlib.contextmanager
    def stream_span(self, method: str) -> Iterator[list[tuple[str, str]]]:
        """A client span for one stream RPC, ended when the block ends (however the stream does);
        yields the metadata that carries it (W3C traceparent) for the call's `metadata=`."""
        if not self.enabled:
            yield []
            return
        with self.tracer.start_as_current_span(
            method,
            kind=trace.SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.method": method},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            try:
                yield list(carrier.items())
            except grpc.aio.AioRpcError as exc:
                span.set_status(trace.Status(trace.StatusCode.ERROR, f"{exc.code().name}: {exc.details()}"))
                raise

    def shutdown(self) -> None:
        """Flush what is buffered and close the exporter (a blocking flush: call it off the loop)."""
        self.provider.shutdown()


Continuation = Callable[[grpc.HandlerCallDetails], Awaitable["grpc.RpcMethodHandler[Any, Any] | None"]]


class _ByKind(grpc.aio.ServerInterceptor):
    """Unary RPCs to the OpenTelemetry interceptor (a span each); streams to `_StreamParent`.

    The instrumentation's own stream wrapper broke our long bidi streams (a caller's PlaceCall
    ended INTERNAL "Internal error from Core" when it hung up): a call's stream is its whole life,
    not one operation, and the call's own spans (site_node.call_tracer) describe it."""

    def __init__(self, unary: grpc.aio.ServerInterceptor, streaming: grpc.aio.ServerInterceptor) -> None:
        self._unary = unary
        self._streaming = streaming

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None

        async def known(_: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
            return handler

        inner = self._streaming if handler.request_streaming or handler.response_streaming else self._unary
        return await inner.intercept_service(known, handler_call_details)


class _StreamParent(grpc.aio.ServerInterceptor):
    """A stream continues the caller's trace: the traceparent of its metadata becomes the current
    context of the RPC's task (its own copy: nothing to detach), so spans made while handling it
    (a guest call's, at the city serving another's caller) are children of the caller's span."""

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.stream_stream is None:
            return handler
        behavior = handler.stream_stream

        async def traced(request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            carrier = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
            parent = propagate.extract(carrier)
            otel_context.attach(parent)
            async for response in behavior(request_iterator, context):  # type: ignore[arg-type,attr-defined]
                yield response

        return grpc.stream_stream_rpc_method_handler(
            traced,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def current_span() -> trace.Span:
    return trace.get_current_span()
