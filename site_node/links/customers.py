"""Customer look-up at central for screen pops: short deadline, small cache, never blocks a call."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import grpc

from site_node.callcontrol.domain import CustomerInfo
from site_node.grpc_api.convert import customer_from_proto
from site_node.links.leader_channel import LeaderChannel
from vcc.v1 import central_pb2, central_pb2_grpc

log = logging.getLogger(__name__)

# A screen pop that comes later than this is worth less than a call that rings on time.
LOOKUP_DEADLINE_S = 1.0
CACHE_TTL_S = 60.0
CACHE_SIZE = 10_000


class CentralCustomers:
    """`central_address` is fixed, or a function giving the leading replica's address (it moves)."""

    def __init__(self, central_address: str | Callable[[], str | None]) -> None:
        self._address = central_address if callable(central_address) else (lambda: central_address)
        self._central = LeaderChannel()
        self._cache: OrderedDict[str, tuple[float, CustomerInfo | None]] = OrderedDict()

    async def lookup(self, phone: str) -> CustomerInfo | None:
        hit = self._cache.get(phone)
        now = time.monotonic()
        if hit is not None and now - hit[0] < CACHE_TTL_S:
            return hit[1]
        try:
            reply = await self._stub().LookupCustomer(
                central_pb2.LookupCustomerRequest(phone=phone), timeout=LOOKUP_DEADLINE_S
            )
            found: CustomerInfo | None = customer_from_proto(reply.customer)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise  # central unreachable: not cached, the next call asks again
            found = None
        self._cache[phone] = (now, found)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return found

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
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "no central known"
            )
        return self._central.to(address)

    async def close(self) -> None:
        await self._central.close()
