"""Ships the outbox to central: batches in order, acknowledged rows deleted, nothing lost.

Central's ingest is idempotent on (call_id, site_id, seq), so a batch re-sent after a lost reply
or a crash lands once; the shipper therefore only has to never skip a row. A batch central
refuses as INVALID_ARGUMENT, or as RESOURCE_EXHAUSTED because it is larger than a message may
be, is split until the bad events are isolated; those are parked in the outbox's dead_letter table,
with an alert (an error log and `on_dead_letter`, which the site node sends to central's audit
log), so the rest keeps flowing. (A RESOURCE_EXHAUSTED for load is retried like UNAVAILABLE.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import grpc
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential, wait_random

from site_node.links.leader_channel import LeaderChannel
from site_node.records.outbox import Outbox
from vcc import env, rpc
from vcc.v1 import central_pb2, common_pb2

if TYPE_CHECKING:
    from site_node.call_tracer import ShipTracing

log = logging.getLogger(__name__)

# (row id, call id, the event as the outbox stored it: CallEvent's wire bytes).
Row = tuple[int, str, bytes]
INGEST_METHOD = "/vcc.v1.CentralService/IngestCallEvents"
# "0": every event parsed back and the request serialized again (the way before; a comparison).
RAW_ENV = "VCC_SHIPPER_RAW"

# A batch smaller than batch_size waits this long for more events first. Central's ingest has a
# fixed cost per batch (one transaction, several database round trips) and refolds each call of
# the batch from all its events: a few large batches cost it a fraction of many small ones, and a
# call whose events (about 8, over the call's first second) come in one or two batches is folded
# once or twice instead of five or six times (0.1 s before; `vcc bench throughput --compare
# linger` measures the two). The events are already durable here, so waiting delays only
# central's view of them (records and statistics; live state has its own stream), by at most this.
LINGER_S = 0.5
LINGER_ENV = "VCC_SHIPPER_LINGER_S"
MAX_LINGER_S = 5.0


def linger_from_env() -> float:
    """The shipper's linger: VCC_SHIPPER_LINGER_S (0 to 5 s) if set, else LINGER_S."""
    value = env.bounded(LINGER_ENV, float, 0.0, MAX_LINGER_S, "seconds")
    return LINGER_S if value is None else value


def raw_from_env() -> bool:
    """VCC_SHIPPER_RAW: "1" or unset, the stored bytes are sent as they are; "0", parsed again."""
    return env.switch(RAW_ENV, "parse the events again", "send them as stored")


def ingest_request_bytes(site_id: str, events: Sequence[bytes]) -> bytes:
    """IngestCallEventsRequest{site_id, events} on the wire, from events already serialized: a
    message's fields are tag, length, bytes one after the other, and a repeated message field is
    its items so written in turn (the same bytes as building the request and serializing it)."""
    parts = [_length_delimited(1, site_id.encode())] if site_id else []
    parts.extend(_length_delimited(2, raw) for raw in events)
    return b"".join(parts)


def _length_delimited(field_number: int, payload: bytes) -> bytes:
    return _varint(field_number << 3 | 2) + _varint(len(payload)) + payload


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class _Transient(Exception):
    """Central could not take the batch now (down, moving, overloaded): try again later."""


class _Rejected(Exception):
    """Central refused the batch's content (INVALID_ARGUMENT, or too large): retrying it as is
    cannot help."""


def _too_large(exc: grpc.aio.AioRpcError) -> bool:
    # gRPC's own message-size refusals, on either side ("Sent/Received message larger than max").
    return exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in (exc.details() or "")


class Shipper:
    """Moves outbox rows to CentralService.IngestCallEvents. Run `run()` as a task; `stop()` ends it."""

    def __init__(
        self,
        outbox: Outbox,
        site_id: str,
        central_address: Callable[[], str | None],
        *,
        batch_size: int = 500,
        rpc_timeout_s: float = rpc.DEFAULT_DEADLINE_S,
        attempts_per_cycle: int = 6,
        max_backoff_s: float = 2.0,
        linger_s: float | None = None,
        on_dead_letter: Callable[[common_pb2.CallEvent, str], None] | None = None,
        tracing: ShipTracing | None = None,
        raw: bool | None = None,
    ) -> None:
        self._tracing = tracing
        self._outbox = outbox
        self._site_id = site_id
        self._central_address = central_address
        self._batch_size = batch_size
        self._rpc_timeout_s = rpc_timeout_s
        self._attempts = attempts_per_cycle
        self._max_backoff_s = max_backoff_s
        self._linger_s = linger_from_env() if linger_s is None else linger_s
        self._on_dead_letter = on_dead_letter
        self._raw = raw_from_env() if raw is None else raw
        self._central = LeaderChannel()
        self._task: asyncio.Task[None] | None = None
        # Set while the outbox has nothing committed left to ship.
        self._idle = asyncio.Event()
        # Whether the last cycle gave up: the outage is logged once, not every cycle.
        self._down = False
        self.shipped = 0
        self.failures = 0
        self.dead_lettered = 0
        self.last_error: str | None = None

    async def run(self) -> None:
        """Ship until cancelled or stopped; never raises for a central that is down."""
        self._task = asyncio.current_task()
        try:
            while True:
                try:
                    await self._ship_or_wait()
                except _Transient:
                    # This cycle's retries are spent; pause, then start again with the same rows.
                    if not self._down:
                        self._down = True
                        log.warning(
                            "central unreachable, %d events waiting (%s); will keep trying",
                            self._outbox.pending_count,
                            self.last_error,
                        )
                    await asyncio.sleep(self._max_backoff_s)
                except Exception as exc:
                    # A bug or a disk error must not silently stop shipping: say it, and go on.
                    log.exception("shipping failed unexpectedly; will keep trying")
                    self._failed(f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(self._max_backoff_s)
        finally:
            await self._central.close()

    async def _ship_or_wait(self) -> None:
        if 0 < self._outbox.pending_count < self._batch_size and self._linger_s > 0:
            await asyncio.sleep(self._linger_s)
        # Cleared before reading: a commit that lands after the read sets it again.
        self._outbox.changed.clear()
        rows = await self._outbox.pending_stored(self._batch_size)
        if not rows:
            self._idle.set()
            await self._outbox.changed.wait()
            return
        self._idle.clear()
        await self._deliver(rows)

    async def stop(self, drain_s: float = 0.0) -> None:
        """End run(); with drain_s > 0, first give it that long to empty the outbox."""
        task = self._task
        if task is None or task.done():
            return
        if drain_s > 0:
            if self._outbox.pending_count:
                # Rows appended since the shipper last found the outbox empty.
                self._idle.clear()
            with contextlib.suppress(TimeoutError):
                # One-shot drain before the cancel below: a lost cancel goes on to stop the shipper.
                await asyncio.wait_for(self._idle.wait(), drain_s)  # noqa: TID251
        task.cancel()
        # asyncio.wait: our own cancellation still propagates, the task's does not.
        await asyncio.wait({task})

    async def _deliver(self, rows: Sequence[Row]) -> None:
        call_ids = [call_id for _, call_id, _ in rows]
        sent_at = time.time()
        try:
            with self._tracing.batch(call_ids, len(rows)) if self._tracing else contextlib.nullcontext():
                await self._send_with_retry(rows)
        except _Rejected as exc:
            if len(rows) > 1:
                # Split to find the bad events; halves go in order, so nothing is re-ordered.
                mid = len(rows) // 2
                await self._deliver(rows[:mid])
                await self._deliver(rows[mid:])
                return
            row_id, _, stored = rows[0]
            event = common_pb2.CallEvent.FromString(stored)
            log.error(
                "central refused event call_id=%s seq=%d kind=%s: %s; parked in dead_letter",
                event.call_id,
                event.seq,
                common_pb2.CallEventKind.Name(event.kind),
                exc,
            )
            self.dead_lettered += await self._outbox.park([row_id], str(exc))
            if self._on_dead_letter is not None:
                self._on_dead_letter(event, str(exc))
            return
        await self._outbox.ack([row_id for row_id, _, _ in rows])
        self.shipped += len(rows)
        if self._tracing is not None:
            self._tracing.shipped(call_ids, sent_at, time.time())
        if self._down:
            self._down = False
            log.info("central reachable again; %d events waiting", self._outbox.pending_count)

    async def _send_with_retry(self, rows: Sequence[Row]) -> None:
        if self._raw:
            request = ingest_request_bytes(self._site_id, [stored for _, _, stored in rows])
        else:
            events = [common_pb2.CallEvent.FromString(stored) for _, _, stored in rows]
            request = central_pb2.IngestCallEventsRequest(
                site_id=self._site_id, events=events
            ).SerializeToString()
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=0.05, max=self._max_backoff_s) + wait_random(0, 0.05),
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        ):
            with attempt:
                await self._send(request, len(rows))

    async def _send(self, request: bytes, events: int) -> None:
        ingest = await self._ingest_for(self._central_address())
        try:
            reply = await ingest(request, timeout=self._rpc_timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise _Rejected(exc.details() or "invalid argument") from exc
            if _too_large(exc):
                raise _Rejected(f"RESOURCE_EXHAUSTED: {exc.details()}") from exc
            self._failed(f"{exc.code().name}: {exc.details()}")
            raise _Transient(self.last_error) from exc
        log.debug("shipped %d events (%d already at central)", events, reply.duplicates)

    async def _ingest_for(
        self, address: str | None
    ) -> grpc.aio.UnaryUnaryMultiCallable[bytes, central_pb2.IngestCallEventsResponse]:
        if address is None:
            self._failed("no central address known")
            raise _Transient(self.last_error)
        if address != self._central.dialled:
            # Central moved (another replica leads now): one channel per address.
            log.info("shipping call events to central at %s", address)
        # The request goes as the bytes given (no serializer): IngestCallEvents as the stub's.
        return self._central.to(address).unary_unary(
            INGEST_METHOD, response_deserializer=central_pb2.IngestCallEventsResponse.FromString
        )

    def _failed(self, error: str) -> None:
        self.failures += 1
        self.last_error = error
