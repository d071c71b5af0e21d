"""The CentralService gRPC servicer: validation, then the store and membership; protobuf stays here."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from central import convert, validation
from central.membership_view import SiteLiveness
from central.store import Store
from vcc.errors import NotFound
from vcc.rpc import maps_errors, timestamp
from vcc.v1 import central_pb2, central_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "vcc.v1.CentralService"
Context = grpc.aio.ServicerContext[Any, Any]


class CentralService(central_pb2_grpc.CentralServiceServicer):
    def __init__(
        self,
        store: Store,
        province_id: str,
        site_ids: Sequence[str],
        sites: Callable[[], list[SiteLiveness]],
    ) -> None:
        self._store = store
        self._province_id = province_id
        self._site_ids = frozenset(site_ids)
        self._sites = sites

    @maps_errors
    async def IngestCallEvents(
        self, request: central_pb2.IngestCallEventsRequest, context: Context
    ) -> central_pb2.IngestCallEventsResponse:
        validation.check_ingest(request, self._site_ids)
        events = [convert.event_from_proto(e) for e in request.events]
        result = await self._store.ingest(request.site_id, events)
        log.debug(
            "site %s: %d events stored, %d duplicates", request.site_id, result.stored, result.duplicates
        )
        return central_pb2.IngestCallEventsResponse(stored=result.stored, duplicates=result.duplicates)

    @maps_errors
    async def LookupCustomer(
        self, request: central_pb2.LookupCustomerRequest, context: Context
    ) -> central_pb2.LookupCustomerResponse:
        validation.check_phone(request.phone)
        customer = await self._store.lookup_customer(request.phone)
        if customer is None:
            raise NotFound("customer-not-found", f"no customer with phone {request.phone}")
        return central_pb2.LookupCustomerResponse(customer=convert.customer_to_proto(customer))

    @maps_errors
    async def GetCallRecord(
        self, request: central_pb2.GetCallRecordRequest, context: Context
    ) -> central_pb2.GetCallRecordResponse:
        validation.check_call_id(request.call_id)
        record = await self._store.get_call(request.call_id)
        if record is None:
            raise NotFound("call-not-found", f"no call record {request.call_id!r}")
        return central_pb2.GetCallRecordResponse(record=convert.record_to_proto(record))

    @maps_errors
    async def ListCallRecords(
        self, request: central_pb2.ListCallRecordsRequest, context: Context
    ) -> central_pb2.ListCallRecordsResponse:
        records, next_token = await self._store.list_calls(
            entry_site_id=request.entry_site_id,
            ended_only=request.ended_only,
            page_size=validation.page_size(request.page_size),
            page_token=request.page_token,
            with_events=request.with_events,
        )
        return central_pb2.ListCallRecordsResponse(
            records=[convert.record_to_proto(r) for r in records], next_page_token=next_token
        )

    @maps_errors
    async def GetProvinceStatus(
        self, request: central_pb2.GetProvinceStatusRequest, context: Context
    ) -> central_pb2.GetProvinceStatusResponse:
        count = await self._store.count_calls()
        return central_pb2.GetProvinceStatusResponse(
            province_id=self._province_id,
            sites=[_site_status(s) for s in self._sites()],
            call_records=count,
        )


def _site_status(s: SiteLiveness) -> central_pb2.SiteStatus:
    status = central_pb2.SiteStatus(site_id=s.site_id, name=s.name, up=s.up)
    if s.up and s.summary is not None:
        status.summary.CopyFrom(s.summary)
    if s.last_seen is not None:
        status.last_seen.CopyFrom(timestamp(s.last_seen))
    return status
