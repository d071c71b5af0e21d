"""What every vcc gRPC server and client shares: health, reflection, error mapping, deadlines."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar

import grpc
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from vcc import tls as vcc_tls
from vcc.errors import ERROR_ID_KEY, InvalidArgument, VccError
from vcc.metrics import CLIENT_INTERCEPTORS

log = logging.getLogger(__name__)

# Default deadline of a unary RPC between vcc processes, in seconds.
DEFAULT_DEADLINE_S = 5.0
# Largest message a vcc server accepts: bounds what a bad client can make us allocate.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024

# Keepalive, both ways: a peer that went silent (a cut link drops packets rather than refusing)
# is noticed within about KEEPALIVE_TIME_MS + KEEPALIVE_TIMEOUT_MS by BOTH ends of an open stream
# (its calls are recovered). Clients ping their servers; servers ping their clients too, because
# the serving side of a stream (a city serving another city's call in SitePeerService.ServeCall)
# must notice on its own: it never dials. grpcio 1.85 closes a transport whose ping goes unanswered
# only after `grpc.http2.ping_timeout_ms` (default a minute; `keepalive_timeout_ms` alone is not
# enough there, measured in tests/chaos/test_faultproxy.py), so both are set.
KEEPALIVE_TIME_MS = 2_000
# 3 s, not 1: a process starved of CPU for a second (two CPU-bound loops beside a simulation)
# answered its pings late, and 32 healthy calls were ended "Stream removed (ping timeout)".
KEEPALIVE_TIMEOUT_MS = 3_000
# The shortest gap a server accepts between two pings of a client while it sends no data: half
# the clients' interval, a margin for a busy machine (closer pings earn strikes, and two strikes
# a GOAWAY "too_many_pings"). Only servers police pings; the server's own pings do not count.
MIN_PING_INTERVAL_MS = KEEPALIVE_TIME_MS // 2
# How long one connection attempt may take (gRPC's own default): an RPC's deadline still bounds
# what its caller waits, and a refused connection still fails at once.
CONNECT_TIMEOUT_MS = 20_000

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    # Only while calls (streams) are open: an idle channel has nothing to recover.
    ("grpc.keepalive_permit_without_calls", 0),
    # A stream may carry no data for minutes (a call being talked): pings must go on regardless.
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 0),
    # A peer that comes back is reached within a second, not after gRPC's default back-off (up
    # to two minutes), which would stretch every failover.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Not a back-off at all in gRPC core: the time one connection attempt (TCP, TLS, the server's
    # HTTP/2 SETTINGS) is given. At 100 ms a server starved of CPU for a moment failed every new
    # channel at once ("connection attempt timed out before receiving SETTINGS frame").
    ("grpc.min_reconnect_backoff_ms", CONNECT_TIMEOUT_MS),
]
SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # The server's own pings, on every connection with a stream open.
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.http2.max_pings_without_data", 0),
    # Accept the clients' keepalive pings, also on a connection with no call open right now.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
    ("grpc.so_reuseport", 0),
]

F = TypeVar("F", bound=Callable[..., Any])


def maps_errors(method: F) -> F:
    """Server edge: a VccError raised by a handler becomes its gRPC status and error id."""

    @functools.wraps(method)
    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await method(self, request, context)
        except VccError as exc:
            await _abort(context, exc)

    return unary  # type: ignore[return-value]


def maps_stream_errors(method: F) -> F:
    """Like maps_errors, for server-streaming handlers (async generators)."""

    @functools.wraps(method)
    async def streaming(
        self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        try:
            async for item in method(self, request, context):
                yield item
        except VccError as exc:
            await _abort(context, exc)

    return streaming  # type: ignore[return-value]


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: VccError) -> None:
    context.set_trailing_metadata(((ERROR_ID_KEY, exc.error_id),))
    await context.abort(exc.status, exc.message)


# RPCs (streams included) one server runs at once, from all its clients together; past it a new
# call is refused RESOURCE_EXHAUSTED rather than queued without bound.
# Room for a site's 10,000 callers and 5,000 desktops at once, with the province's links beside.
MAX_CONCURRENT_RPCS = 20_000


class Server:
    """A grpc.aio server with health and reflection; NOT_SERVING before a graceful stop.

    With `tls`, it listens with mutual TLS only (a plaintext client fails the handshake) and
    `interceptors` (vcc.authz.Authorizer) decide who may call what.
    """

    def __init__(
        self,
        service_names: Iterable[str],
        *,
        tls: vcc_tls.TlsFiles | None = None,
        interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
        max_concurrent_rpcs: int = MAX_CONCURRENT_RPCS,
    ) -> None:
        self.tls = tls
        self.grpc = grpc.aio.server(
            options=SERVER_OPTIONS,
            interceptors=list(interceptors) or None,
            maximum_concurrent_rpcs=max_concurrent_rpcs,
        )
        self._health = health.aio.HealthServicer()
        self._names = [*service_names, health.SERVICE_NAME]
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self.grpc)
        reflection.enable_server_reflection([*self._names, reflection.SERVICE_NAME], self.grpc)
        self.port = 0

    async def start(self, listen: str) -> int:
        if self.tls is not None:
            self.port = self.grpc.add_secure_port(listen, vcc_tls.server_credentials(self.tls))
        else:
            log.warning("gRPC on %s without TLS: no client is authenticated (tls not configured)", listen)
            self.port = self.grpc.add_insecure_port(listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {listen}")
        await self.grpc.start()
        await self.set_serving(True)
        return self.port

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self._names):
            await self._health.set(name, status)

    async def stop(self, grace_s: float = 2.0) -> None:
        await self.set_serving(False)
        await self.grpc.stop(grace_s)


# A process's dial map: {"host:port": "host:port"} as JSON. Every link it dials (gRPC channels and
# etcd clients) goes to the mapped address instead: the chaos tools put a fault proxy there to cut
# a site from the province (tools/province/faultproxy.py). Unset in production.
DIAL_MAP_ENV = "VCC_DIAL_MAP"


def dial_map() -> dict[str, str]:
    raw = os.environ.get(DIAL_MAP_ENV, "")
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise ValueError(f"{DIAL_MAP_ENV}: not JSON: {raw[:80]!r}") from None
    if not isinstance(parsed, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()
    ):
        raise ValueError(f'{DIAL_MAP_ENV}: want {{"host:port": "host:port"}}, got {raw[:80]!r}')
    return parsed


def dialled(address: str) -> str:
    """The address this process really dials for `address` (itself unless the dial map says so)."""
    return dial_map().get(address, address)


def channel(
    address: str,
    *,
    persona: str | None = None,
    tls: vcc_tls.TlsFiles | None = None,
    expect: str | None = None,
    options: Iterable[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A channel with this process's TLS identity (vcc.tls), or `persona`'s, or `tls`'s.

    `expect`: the server identity's name (vcc.tls.site_server / central_server) its certificate
    must carry; the handshake fails otherwise. Without it, the address's host is checked.
    Plaintext only when the process has no TLS identity at all (TLS not configured).
    """
    files = tls or vcc_tls.process_files(persona)
    # The caller's options replace the defaults of the same name (gRPC would keep one of the two).
    extra = list(options)
    given = {name for name, _ in extra}
    opts = [*(o for o in CHANNEL_OPTIONS if o[0] not in given), *extra]
    # The interceptors of the process composed in this context (vcc.metrics.CLIENT_INTERCEPTORS).
    interceptors = list(CLIENT_INTERCEPTORS.get()) or None
    if files is None:
        return grpc.aio.insecure_channel(dialled(address), options=opts, interceptors=interceptors)
    target = dialled(address)
    if expect is not None:
        # Whom we dial, not where: any address (a fault proxy's too) must answer as that identity.
        opts.append(("grpc.ssl_target_name_override", expect))
    elif target != address:
        # Through a fault proxy: the certificate names the real server's host, not the proxy's.
        opts.append(("grpc.ssl_target_name_override", address.rsplit(":", 1)[0].strip("[]")))
    return grpc.aio.secure_channel(
        target, vcc_tls.channel_credentials(files), options=opts, interceptors=interceptors
    )


# A channel's close cancels its calls at once (no grace); past this it is left to the runtime.
CLOSE_S = 2.0


async def close_channel(channel: grpc.aio.Channel, timeout_s: float = CLOSE_S) -> None:
    """Close a channel within a bound: a close waits on the calls it cancels, and a peer cut
    silently (or a half-closed stream nobody reads) must not hold a stop or a re-dial."""
    try:
        async with asyncio.timeout(timeout_s):
            await channel.close()
    except Exception as exc:
        log.debug("closing a channel: %s", exc)


async def wait_serving(address: str, timeout_s: float = 20.0, *, tls: vcc_tls.TlsFiles | None = None) -> None:
    """Block until the server at `address` reports SERVING (used by launchers and tests)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with channel(address, tls=tls) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if loop.time() > deadline:
                raise TimeoutError(f"{address} not serving after {timeout_s}s")
            await asyncio.sleep(0.1)


def timestamp(unix_s: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(round(unix_s * 1e9))
    return ts


def unix_s(ts: timestamp_pb2.Timestamp) -> float:
    """Seconds since the epoch; a timestamp out of protobuf's range (negative nanos, year 10000)
    is the client's mistake: InvalidArgument, never a crash of the handler."""
    try:
        return float(ts.ToNanoseconds()) / 1e9
    except ValueError as exc:
        raise InvalidArgument("bad-timestamp", f"a timestamp out of range: {exc}") from None
