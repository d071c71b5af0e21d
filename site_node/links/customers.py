"""Customer look-up at central for screen pops: short deadline, small cache, never blocks a call.

The numbers of the calls that arrived in one turn of the event loop are asked in one
LookupCustomers request (a unary RPC per call was about a tenth of a site's CPU and of
central's: docs/BENCHMARKS.md, throughput, wave 8); a number already being asked is not asked
twice. `VCC_SCREEN_POP_BATCH=0` asks one LookupCustomer per call, as before (a benchmark's
comparison), and so does a central that does not know LookupCustomers yet (an upgrade under way).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import grpc

from site_node.callcontrol.domain import CustomerInfo
from site_node.grpc_api.convert import customer_from_proto
from site_node.links.leader_channel import LeaderChannel
from vcc import env
from vcc.v1 import central_pb2, central_pb2_grpc

log = logging.getLogger(__name__)

# A screen pop that comes later than this is worth less than a call that rings on time.
LOOKUP_DEADLINE_S = 1.0
CACHE_TTL_S = 60.0
CACHE_SIZE = 10_000
# Numbers in one LookupCustomers (central refuses more: central.validation.MAX_LOOKUPS).
MAX_PER_REQUEST = 100
BATCH_ENV = "VCC_SCREEN_POP_BATCH"
# How long a look-up waits for others to share its request. A call is looked up as it arrives and
# its menu plays meanwhile: the wait costs a call with a menu nothing, one without at most this
# before it rings. At 100 calls/s a site's look-ups came about 1.4 to a request without it.
LINGER_S = 0.01
LINGER_ENV = "VCC_SCREEN_POP_LINGER_S"
MAX_LINGER_S = 0.2

Found = CustomerInfo | None


def linger_from_env() -> float:
    """VCC_SCREEN_POP_LINGER_S (0 to 0.2 s) if set, else LINGER_S."""
    value = env.bounded(LINGER_ENV, float, 0.0, MAX_LINGER_S, "seconds")
    return LINGER_S if value is None else value


def batched_from_env() -> bool:
    """VCC_SCREEN_POP_BATCH: "1" or unset, one request per turn of the loop; "0", one per call."""
    return env.switch(BATCH_ENV, "one look-up per call", "batched")


def _unavailable(details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details
    )


class CentralCustomers:
    """`central_address` is fixed, or a function giving the leading replica's address (it moves)."""

    def __init__(
        self,
        central_address: str | Callable[[], str | None],
        *,
        batched: bool | None = None,
        linger_s: float | None = None,
    ) -> None:
        self._address = central_address if callable(central_address) else (lambda: central_address)
        self._central = LeaderChannel()
        self._cache: OrderedDict[str, tuple[float, Found]] = OrderedDict()
        self._batched = batched_from_env() if batched is None else batched
        self._linger_s = linger_from_env() if linger_s is None else linger_s
        # Numbers asked and not answered yet (in the next request or in one under way) -> whoever
        # waits for them.
        self._waiting: dict[str, list[asyncio.Future[Found]]] = {}
        self._next: list[str] = []
        self._send_soon: asyncio.Handle | asyncio.TimerHandle | None = None
        self._requests: set[asyncio.Task[None]] = set()
        # Requests sent to central (either RPC): lets tests see that look-ups coalesce.
        self.requests = 0

    def lookup(self, phone: str) -> Awaitable[Found]:
        """The customer with this number (None: none has it); raises when central could not say."""
        hit = self._cache.get(phone)
        if hit is not None and time.monotonic() - hit[0] < CACHE_TTL_S:
            done: asyncio.Future[Found] = asyncio.get_running_loop().create_future()
            done.set_result(hit[1])
            return done
        if not self._batched:
            return self._ask_one(phone)
        try:
            channel = self.channel()
            if channel.get_state() == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                # gRPC would refuse the request at once too: the call need not wait for it.
                raise _unavailable("central unreachable")
        except grpc.aio.AioRpcError as exc:
            # No central known or reachable: said at once, and the call rings without its record.
            failed: asyncio.Future[Found] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed
        return self._ask(phone)

    def _ask(self, phone: str) -> asyncio.Future[Found]:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Found] = loop.create_future()
        waiting = self._waiting.get(phone)
        if waiting is not None:
            waiting.append(answer)
            return answer
        self._waiting[phone] = [answer]
        self._next.append(phone)
        if self._send_soon is None:
            # After the rest of this turn, or `linger_s` (the calls arriving meanwhile join its
            # request); at once when a request is full. In a context of its own: the request
            # belongs to no one call's trace.
            alone = contextvars.Context()
            if self._linger_s > 0:
                self._send_soon = loop.call_later(self._linger_s, self._send_next, context=alone)
            else:
                self._send_soon = loop.call_soon(self._send_next, context=alone)
        elif len(self._next) >= MAX_PER_REQUEST and isinstance(self._send_soon, asyncio.TimerHandle):
            self._send_soon.cancel()
            self._send_soon = loop.call_soon(self._send_next, context=contextvars.Context())
        return answer

    def _send_next(self) -> None:
        self._send_soon = None
        phones, self._next = self._next, []
        for i in range(0, len(phones), MAX_PER_REQUEST):
            task = asyncio.get_running_loop().create_task(
                self._request(phones[i : i + MAX_PER_REQUEST]), name="screen-pop-lookup"
            )
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)

    async def _request(self, phones: list[str]) -> None:
        try:
            self.requests += 1
            try:
                reply = await self._stub().LookupCustomers(
                    central_pb2.LookupCustomersRequest(phones=phones), timeout=LOOKUP_DEADLINE_S
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                # A central older than this site: one look-up per call from now on.
                log.info("central has no LookupCustomers yet: one screen-pop look-up per call")
                self._batched = False
                answers = await asyncio.gather(*map(self._ask_one, phones), return_exceptions=True)
                for phone, answer in zip(phones, answers, strict=True):
                    if isinstance(answer, Exception):
                        self._answer(phone, error=answer)
                    elif not isinstance(answer, BaseException):
                        self._answer(phone, found=answer)
                return
            if len(reply.matches) != len(phones):
                raise ValueError(f"central answered {len(reply.matches)} numbers of {len(phones)}")
            now = time.monotonic()
            for phone, match in zip(phones, reply.matches, strict=True):
                found = customer_from_proto(match.customer) if match.found else None
                self._remember(phone, found, now)
                self._answer(phone, found=found)
        except Exception as exc:
            # Central could not say (unreachable, too slow): not cached, the next call asks again.
            for phone in phones:
                self._answer(phone, error=exc)
        finally:
            # Cancelled (the site stops): whoever still waits is cancelled too.
            for phone in phones:
                self._answer(phone, cancelled=True)

    def _answer(
        self, phone: str, *, found: Found = None, error: Exception | None = None, cancelled: bool = False
    ) -> None:
        for waiter in self._waiting.pop(phone, []):
            if waiter.done():  # its call's task was cancelled meanwhile
                continue
            if cancelled:
                waiter.cancel()
            elif error is None:
                waiter.set_result(found)
            else:
                waiter.set_exception(error)

    async def _ask_one(self, phone: str) -> Found:
        """One LookupCustomer: the way before batches, and an older central's."""
        self.requests += 1
        now = time.monotonic()
        try:
            reply = await self._stub().LookupCustomer(
                central_pb2.LookupCustomerRequest(phone=phone), timeout=LOOKUP_DEADLINE_S
            )
            found: Found = customer_from_proto(reply.customer)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise  # central unreachable: not cached, the next call asks again
            found = None
        self._remember(phone, found, now)
        return found

    def _remember(self, phone: str, found: Found, at: float) -> None:
        self._cache[phone] = (at, found)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    def _stub(self) -> central_pb2_grpc.CentralServiceAsyncStub:
        return central_pb2_grpc.CentralServiceStub(self.channel())

    def forget(self, phones: list[str]) -> None:
        """A record edited at the desk: the next screen pop of its numbers asks central again."""
        for phone in phones:
            self._cache.pop(phone, None)

    def channel(self) -> grpc.aio.Channel:
        """The channel to the leading replica (shared by the desk's service-desk look-ups and the IVR's)."""
        address = self._address()
        if address is None:
            raise _unavailable("no central known")
        return self._central.to(address)

    async def close(self) -> None:
        if self._send_soon is not None:
            self._send_soon.cancel()
            self._send_soon = None
            for phone in self._next:
                self._answer(phone, cancelled=True)
            self._next = []
        for task in list(self._requests):
            task.cancel()
        await asyncio.gather(*self._requests, return_exceptions=True)
        await self._central.close()
