"""Prometheus metrics for every vcc process: a registry, the scrape endpoint, RPC interceptors.

Figures of the call center are read from the live objects at scrape time (each process
registers a collector over its own parts); only what has no live source is counted here: RPC
latencies, by a small grpc.aio interceptor on each side (the OpenTelemetry aio instrumentation
gives spans, not RPC metrics).

The endpoint runs on the process's event loop (asyncio.start_server), not in the thread that
prometheus_client's own server starts: collectors then read the live objects from the thread
that changes them, never halfway through a change.

Labels never carry call ids or agent codes: their number grows without bound, and they belong
in logs and spans.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# RPC latency buckets, seconds: loopback round trips are sub-millisecond, a database write a few
# milliseconds, a routing question across a province tens.
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# A scrape request larger than this, or slower than the timeout, is dropped.
MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT_S = 5.0
# Labels that must never appear: they identify one call or one agent.
FORBIDDEN_LABELS = frozenset({"call_id", "agent", "agent_code", "offer_id", "ani", "dnis", "customer"})

BeforeScrape = Callable[[], Awaitable[None]]


class Metrics:
    """One process's registry: the process and platform figures, RPC histograms, its collectors."""

    def __init__(self, process: str) -> None:
        self.process = process
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.rpc_server = Histogram(
            "vcc_rpc_server_duration_seconds",
            "Time a unary RPC took in this process's handlers, by method and status code.",
            ["service", "method", "code"],
            buckets=RPC_BUCKETS,
            registry=self.registry,
        )
        self.rpc_client = Histogram(
            "vcc_rpc_client_duration_seconds",
            "Time a unary RPC this process made took until its answer, by method and status code.",
            ["service", "method", "code"],
            buckets=RPC_BUCKETS,
            registry=self.registry,
        )
        self._before: list[BeforeScrape] = []

    def register(self, collector: Collector) -> None:
        self.registry.register(collector)

    def before_scrape(self, hook: BeforeScrape) -> None:
        """Run `hook` before each scrape (figures that need an await, e.g. a database read)."""
        self._before.append(hook)

    async def exposition(self) -> bytes:
        for hook in self._before:
            try:
                await hook()
            except Exception as exc:  # a figure that cannot be read must not break the others
                log.warning("metrics: refreshing figures failed: %s", exc)
        return generate_latest(self.registry)

    def server_interceptor(self) -> grpc.aio.ServerInterceptor:
        return _ServerLatency(self.rpc_server)

    def client_interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        return [_ClientLatency(self.rpc_client)]


def split_method(full: str) -> tuple[str, str]:
    """ "/vcc.v1.CentralService/IngestCallEvents" -> ("vcc.v1.CentralService", "IngestCallEvents")."""
    service, _, method = full.lstrip("/").rpartition("/")
    return service or "unknown", method or "unknown"


class _ServerLatency(grpc.aio.ServerInterceptor):
    """Times unary-unary handlers; streams are long-lived links, not latencies, and pass through."""

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler.request_streaming:
            return handler
        service, method = split_method(handler_call_details.method)
        inner = handler.unary_unary
        histogram = self._histogram

        async def timed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            start = time.perf_counter()
            code = "OK"
            try:
                return await inner(request, context)  # type: ignore[arg-type]
            except grpc.aio.AbortError:
                code = _code_name(context.code())
                raise
            except BaseException:
                code = "UNKNOWN"
                raise
            finally:
                histogram.labels(service, method, code).observe(time.perf_counter() - start)

        return grpc.unary_unary_rpc_method_handler(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _code_name(code: object) -> str:
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "UNKNOWN" if code is None else str(code)


class _ClientLatency(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram

    async def intercept_unary_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, Any], Awaitable[grpc.aio.UnaryUnaryCall[Any, Any]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> grpc.aio.UnaryUnaryCall[Any, Any]:
        start = time.perf_counter()
        method: object = client_call_details.method
        service, name = split_method(method.decode() if isinstance(method, bytes) else str(method))
        call = await continuation(client_call_details, request)
        try:
            # Waits for the answer (the caller awaits it anyway); never raises for a failed RPC.
            code = _code_name(await call.code())
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:
            self._histogram.labels(service, name, code).observe(time.perf_counter() - start)
        return call


# The client interceptors of the process being composed: the composition root sets them before it
# creates its links, and every channel vcc.rpc opens in that context (its tasks copy it) uses them.
# A context variable rather than a global: two nodes composed in one test process keep their own.
CLIENT_INTERCEPTORS: contextvars.ContextVar[Sequence[grpc.aio.ClientInterceptor]] = contextvars.ContextVar(
    "vcc_client_interceptors", default=()
)


class MetricsServer:
    """`GET /metrics` over HTTP/1.0 on the event loop; anything else is 404."""

    def __init__(self, metrics: Metrics, listen: str) -> None:
        self._metrics = metrics
        self._listen = listen
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        host = self._listen.rsplit(":", 1)[0].strip("[]")
        return f"http://{host}:{self.port}/metrics"

    async def start(self) -> int:
        host, port = self._listen.rsplit(":", 1)
        self._server = await asyncio.start_server(self._serve, host.strip("[]"), int(port))
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            try:
                # One request per connection: a lost cancel serves this request, no more.
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)  # noqa: TID251
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            if len(head) > MAX_REQUEST_BYTES:
                return
            parts = head.split(b"\r\n", 1)[0].split()
            path = parts[1].split(b"?", 1)[0] if len(parts) >= 2 else b""
            if len(parts) < 2 or parts[0] not in (b"GET", b"HEAD"):
                await _respond(writer, 405, b"method not allowed\n", "text/plain")
            elif path in (b"/metrics", b"/"):
                body = await self._metrics.exposition()
                await _respond(writer, 200, b"" if parts[0] == b"HEAD" else body, CONTENT_TYPE_LATEST)
            else:
                await _respond(writer, 404, b"not found: try /metrics\n", "text/plain")
        except (ConnectionError, OSError):
            pass
        finally:
            if task is not None:
                self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}


async def _respond(writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str) -> None:
    head = (
        f"HTTP/1.0 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()


def label_names(families: Iterable[Any]) -> set[str]:
    """Every label name used by the samples of `families` (prometheus_client metric families)."""
    return {name for f in families for s in f.samples for name in s.labels}
