"""One server interceptor for everything a vcc server does around each RPC.

It replaces a chain of three (OpenTelemetry's server span, the RPC latency histogram, the
authorizer), each of which awaited the next, rebuilt the method's handler and wrapped it again
at every RPC: at a thousand calls a second (about seventeen RPCs and stream messages each) that
chain was a tenth of a site node's CPU. Here a method's wrapped handler is built once and kept,
and one wrapper per RPC does the lot:

* unary: admit (vcc.authz table, per-client limits; a handler's own PERMISSION_DENIED audited
  through the authorizer), a server span continuing the caller's
  trace (W3C traceparent of the metadata), the handler, the latency histogram by status code;
* streams: admit, the caller's trace made current for the stream's task (no span: a call's
  stream is its whole life, the call's own spans describe it), the handler.

The per-RPC work of each piece is the same as before; `VCC_RPC_EDGE=chain` composes the old
chain instead (for `vcc bench throughput --compare edge`).
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from prometheus_client import Histogram

from vcc.authz import Authorizer
from vcc.metrics import Metrics, split_method
from vcc.tracing import Tracing

EDGE_ENV = "VCC_RPC_EDGE"

if TYPE_CHECKING:
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable["Handler | None"]]
_OK = grpc.StatusCode.OK.value[0]


def chained() -> bool:
    """The old chain of interceptors was asked for (a benchmark's comparison)."""
    return os.environ.get(EDGE_ENV, "") == "chain"


def _code(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    code: object = context.code()
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def _carrier(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


class ServerEdge(grpc.aio.ServerInterceptor):
    """Authorization, the server span and the latency histogram of every RPC, in one wrapper."""

    def __init__(
        self,
        *,
        tracer: trace.Tracer | None = None,
        latency: Histogram | None = None,
        authorizer: Authorizer | None = None,
    ) -> None:
        self._tracer = tracer
        self._latency = latency
        self._authorizer = authorizer
        # method -> (the servicer's handler, ours around it): the servicers are fixed once the
        # server runs, so each method's is built once.
        self._built: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        built = self._built.get(method)
        if built is not None and built[0] is handler:
            return built[1]
        wrapped = self._wrap(method, handler)
        self._built[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: Handler) -> Handler:
        serializers = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary), **serializers
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream), **serializers
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream(method, handler.stream_stream), **serializers
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._admitted(method, handler.stream_unary), **serializers
            )
        return handler

    def _unary(self, method: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        authorizer, tracer = self._authorizer, self._tracer
        service, name = split_method(method)
        timer = self._latency
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            start = time.perf_counter()
            code = "OK"
            span: trace.Span | None = None
            token: object = None
            try:
                if tracer is not None:
                    parent = propagate.extract(_carrier(context))
                    span = tracer.start_span(
                        method, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes
                    )
                    token = otel_context.attach(trace.set_span_in_context(span, parent))
                who = await authorizer.admit(method, context) if authorizer is not None else None
                try:
                    return await inner(request, context)
                except grpc.aio.AbortError:
                    if who is not None:
                        await authorizer.refused_by_handler(method, who, context)  # type: ignore[union-attr]
                    raise
                finally:
                    if who is not None:
                        authorizer.release(who)  # type: ignore[union-attr]
            except grpc.aio.AbortError:
                status = _code(context)
                code = status.name
                if span is not None:
                    span.set_attribute("rpc.grpc.status_code", status.value[0])
                    span.set_status(trace.Status(trace.StatusCode.ERROR, f"{code}: {context.details()}"))
                raise
            except BaseException as exc:
                code = "UNKNOWN"
                if span is not None:
                    span.set_attribute("rpc.grpc.status_code", grpc.StatusCode.UNKNOWN.value[0])
                    span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                raise
            finally:
                if span is not None:
                    if code == "OK":
                        span.set_attribute("rpc.grpc.status_code", _OK)
                    span.end()
                    otel_context.detach(token)  # type: ignore[arg-type]
                if timer is not None:
                    timer.labels(service, name, code).observe(time.perf_counter() - start)

        return unary

    def _stream(self, method: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        if not inspect.isasyncgenfunction(inner):
            # A streaming handler that writes through its context is a coroutine: it stays one.
            return self._admitted(method, inner)
        authorizer, traced = self._authorizer, self._tracer is not None

        async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            if traced:
                # The RPC's task has its own copy of the context: nothing to detach.
                otel_context.attach(propagate.extract(_carrier(context)))
            who = await authorizer.admit(method, context) if authorizer is not None else None
            items = inner(request, context)
            try:
                async for item in items:
                    yield item
            except grpc.aio.AbortError:
                if who is not None:
                    await authorizer.refused_by_handler(method, who, context)  # type: ignore[union-attr]
                raise
            finally:
                # At once, as grpc.aio would close the handler itself (its cleanup frees a trunk).
                await items.aclose()
                if who is not None:
                    authorizer.release(who)  # type: ignore[union-attr]

        return streaming

    def _admitted(self, method: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        authorizer = self._authorizer

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            who = await authorizer.admit(method, context) if authorizer is not None else None
            try:
                return await inner(request, context)
            except grpc.aio.AbortError:
                if who is not None:
                    await authorizer.refused_by_handler(method, who, context)  # type: ignore[union-attr]
                raise
            finally:
                if who is not None:
                    authorizer.release(who)  # type: ignore[union-attr]

        return unary


def server_interceptors(
    tracing: Tracing, metrics: Metrics, authorizer: Authorizer | None
) -> list[grpc.aio.ServerInterceptor]:
    """A process's server interceptors: the one edge, or (VCC_RPC_EDGE=chain) the old chain."""
    if chained():
        return [
            *tracing.server_interceptors(),
            metrics.server_interceptor(),
            *([authorizer] if authorizer else []),
        ]
    tracer = tracing.tracer if tracing.enabled else None
    return [ServerEdge(tracer=tracer, latency=metrics.rpc_server, authorizer=authorizer)]
