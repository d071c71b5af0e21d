"""Customer look-up at central for screen pops: short deadline, small cache, never blocks a call."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

import grpc

from site_node.convert import customer_from_proto
from site_node.domain import CustomerInfo
from vcc import rpc
from vcc.v1 import central_pb2, central_pb2_grpc

log = logging.getLogger(__name__)

# A screen pop that comes later than this is worth less than a call that rings on time.
LOOKUP_DEADLINE_S = 1.0
CACHE_TTL_S = 60.0
CACHE_SIZE = 10_000


class CentralCustomers:
    def __init__(self, central_address: str) -> None:
        self._address = central_address
        self._channel = rpc.channel(central_address)
        self._stub = central_pb2_grpc.CentralServiceStub(self._channel)
        self._cache: OrderedDict[str, tuple[float, CustomerInfo | None]] = OrderedDict()

    async def lookup(self, phone: str) -> CustomerInfo | None:
        hit = self._cache.get(phone)
        now = time.monotonic()
        if hit is not None and now - hit[0] < CACHE_TTL_S:
            return hit[1]
        try:
            reply = await self._stub.LookupCustomer(
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

    async def close(self) -> None:
        await self._channel.close()
