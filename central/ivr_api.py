"""The IvrService gRPC servicer: flows and the service catalog, validated, stored, handed to sites."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar

import grpc

from central.audit import AuditEntry
from central.flow_publisher import FlowPublisher
from central.flows import FlowStore, StoredFlow
from central.grpc_api import LeaderGate, _refuse_as_follower
from central.ivr_lookups import Lookups
from vcc.authz import peer_description, peer_identity
from vcc.config import ProvinceConfig
from vcc.errors import FailedPrecondition, InvalidArgument, NotFound, VccError
from vcc.ivr.catalog import CatalogError, Service, parse_catalog
from vcc.ivr.keys import decode_catalog
from vcc.ivr.validate import MAX_DOCUMENT_BYTES, FlowError, load_flow
from vcc.rpc import maps_errors, timestamp
from vcc.v1 import ivr_pb2, ivr_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "vcc.v1.IvrService"
Context = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R")


class IvrService(ivr_pb2_grpc.IvrServiceServicer):
    def __init__(
        self,
        flows: FlowStore,
        province: ProvinceConfig,
        publisher: FlowPublisher | None = None,
        *,
        leadership: LeaderGate | None = None,
        lookups: Lookups | None = None,
        audit: Callable[[AuditEntry], Awaitable[None]] | None = None,
    ) -> None:
        self._flows = flows
        # Every push, taken or refused, goes into central's audit log (who, what, from where).
        self._audit = audit
        self._lookups = lookups
        # None: no etcd (tests of the API alone); sites then get flows by GetFlow only.
        self._publisher = publisher
        self._leadership = leadership
        self._site_ids = frozenset(s.id for s in province.sites)
        self._skill_groups = frozenset(g.id for s in province.sites for g in s.skill_groups)

    async def _audited(
        self, context: Context, action: str, push: Callable[[], Awaitable[tuple[R, str, dict[str, str]]]]
    ) -> R:
        """Run a push and record it: target and detail from the push, or the refusal's error id."""
        who = peer_identity(context)
        actor, source = str(who) if who else "unknown", peer_description(context)
        try:
            reply, target, detail = await push()
        except VccError as exc:
            refused = {"error": exc.error_id}
            await self._record(AuditEntry(time.time(), actor, action, "", source, "refused", detail=refused))
            raise
        await self._record(AuditEntry(time.time(), actor, action, target, source, detail=detail))
        return reply

    async def _record(self, entry: AuditEntry) -> None:
        if self._audit is not None:
            try:
                await self._audit(entry)
            except Exception as exc:  # the push is done; a lost audit entry is logged, not raised
                log.error("audit entry %s not recorded: %s", entry.action, exc)

    @maps_errors
    async def PushFlow(self, request: ivr_pb2.PushFlowRequest, context: Context) -> ivr_pb2.PushFlowResponse:
        async def push() -> tuple[ivr_pb2.PushFlowResponse, str, dict[str, str]]:
            reply = await self._push_flow(request, context)
            detail = {"version": str(reply.flow.version), "created": str(reply.created).lower()}
            return reply, reply.flow.flow_id, detail

        return await self._audited(context, "flow-push", push)

    async def _push_flow(
        self, request: ivr_pb2.PushFlowRequest, context: Context
    ) -> ivr_pb2.PushFlowResponse:
        await self._only_leader(context)
        _check_size(request.document)
        try:
            flow = load_flow(request.document, self._skill_groups)
        except FlowError as exc:
            raise InvalidArgument("invalid-flow", str(exc)) from None
        stored, created = await self._flows.add_flow(flow, request.document)
        if self._publisher is not None:
            await self._publisher.publish_flow(stored.flow_id, stored.version, stored.canonical)
        if created:
            log.info("flow %s version %d stored (%d nodes)", stored.flow_id, stored.version, stored.nodes)
        return ivr_pb2.PushFlowResponse(flow=_info(stored), created=created)

    @maps_errors
    async def GetFlow(self, request: ivr_pb2.GetFlowRequest, context: Context) -> ivr_pb2.GetFlowResponse:
        if not request.flow_id:
            raise InvalidArgument("missing-flow-id", "flow_id: required")
        stored = await self._flows.flow(request.flow_id, request.version)
        if stored is None:
            which = f"version {request.version}" if request.version else "any version"
            raise NotFound("flow-not-found", f"no flow {request.flow_id!r} ({which}) at central")
        return ivr_pb2.GetFlowResponse(flow=_info(stored), document=stored.document)

    @maps_errors
    async def ListFlows(
        self, request: ivr_pb2.ListFlowsRequest, context: Context
    ) -> ivr_pb2.ListFlowsResponse:
        return ivr_pb2.ListFlowsResponse(flows=[_info(f) for f in await self._flows.flows(request.flow_id)])

    @maps_errors
    async def PushServiceCatalog(
        self, request: ivr_pb2.PushServiceCatalogRequest, context: Context
    ) -> ivr_pb2.PushServiceCatalogResponse:
        async def push() -> tuple[ivr_pb2.PushServiceCatalogResponse, str, dict[str, str]]:
            reply = await self._push_catalog(request, context)
            detail = {"revision": str(reply.revision), "created": str(reply.created).lower()}
            return reply, "service-catalog", detail

        return await self._audited(context, "catalog-push", push)

    async def _push_catalog(
        self, request: ivr_pb2.PushServiceCatalogRequest, context: Context
    ) -> ivr_pb2.PushServiceCatalogResponse:
        await self._only_leader(context)
        _check_size(request.document)
        try:
            catalog = parse_catalog(request.document)
        except CatalogError as exc:
            raise InvalidArgument("invalid-catalog", str(exc)) from None
        problems = _catalog_problems(catalog.services, self._site_ids, self._skill_groups)
        if problems:
            raise InvalidArgument("invalid-catalog", "; ".join(problems))
        versions = await self._flows.newest_versions()
        unknown = sorted({s.flow for s in catalog.services} - set(versions))
        if unknown:
            raise FailedPrecondition(
                "unknown-flow", f"the catalog names flows central does not have: {', '.join(unknown)}"
            )
        stored, created = await self._flows.add_catalog(catalog, request.document)
        if self._publisher is not None:
            await self._publisher.publish_catalog(stored.canonical)
        return ivr_pb2.PushServiceCatalogResponse(revision=stored.revision, created=created)

    @maps_errors
    async def GetServiceCatalog(
        self, request: ivr_pb2.GetServiceCatalogRequest, context: Context
    ) -> ivr_pb2.GetServiceCatalogResponse:
        if bool(request.number) != bool(request.site_id):
            raise InvalidArgument("bad-number-query", "number and site_id: give both, or neither")
        stored = await self._flows.catalog()
        if stored is None:
            if request.service_id or request.number:
                raise NotFound("service-not-found", "no service catalog has been pushed yet")
            return ivr_pb2.GetServiceCatalogResponse(revision=0)
        revision, catalog = decode_catalog(stored.canonical.encode())
        services = list(catalog.services)
        if request.service_id:
            services = [s for s in services if s.id == request.service_id]
            if not services:
                raise NotFound("service-not-found", f"no service {request.service_id!r} in the catalog")
        if request.number:
            found = catalog.for_number(request.number, request.site_id)
            if found is None or (request.service_id and found.id != request.service_id):
                raise NotFound(
                    "service-not-found", f"number {request.number} reaches no service in {request.site_id}"
                )
            services = [found]
        versions = await self._flows.newest_versions()
        return ivr_pb2.GetServiceCatalogResponse(
            revision=revision, services=[_service(s, versions.get(s.flow, 0)) for s in services]
        )

    @maps_errors
    async def Lookup(self, request: ivr_pb2.LookupRequest, context: Context) -> ivr_pb2.LookupResponse:
        if self._lookups is None:
            raise FailedPrecondition("lookup-not-available", "this central answers no look-ups")
        who = peer_identity(context)
        fields = await self._lookups.answer(request.name, dict(request.args), asker=str(who) if who else "")
        return ivr_pb2.LookupResponse(found=fields is not None, fields=fields or {})

    async def _only_leader(self, context: Context) -> None:
        gate = self._leadership
        if gate is None or gate.is_leader:
            return
        await _refuse_as_follower(context, gate.leader_address() or "")


def _check_size(document: str) -> None:
    if not document.strip():
        raise InvalidArgument("missing-document", "document: required")
    if len(document.encode()) > MAX_DOCUMENT_BYTES:
        raise InvalidArgument("document-too-large", f"document: at most {MAX_DOCUMENT_BYTES // 1024} KiB")


def _catalog_problems(
    services: Collection[Service], site_ids: Collection[str], skill_groups: Collection[str]
) -> list[str]:
    problems = []
    for service in services:
        for city in service.cities:
            if city not in site_ids:
                problems.append(f"services.{service.id}.cities: no site {city!r} in the province")
        for group in service.skill_groups:
            if group not in skill_groups:
                problems.append(
                    f"services.{service.id}.skill_groups: no skill group {group!r} in the province"
                )
    return problems


def _info(f: StoredFlow) -> ivr_pb2.FlowInfo:
    return ivr_pb2.FlowInfo(
        flow_id=f.flow_id,
        version=f.version,
        description=f.description,
        digest=f.digest,
        nodes=f.nodes,
        pushed_at=timestamp(f.pushed_at),
    )


def _service(s: Service, flow_version: int) -> ivr_pb2.Service:
    return ivr_pb2.Service(
        service_id=s.id,
        name=dict(s.name),
        numbers=list(s.numbers),
        flow_id=s.flow,
        site_ids=list(s.cities),
        skill_groups=list(s.skill_groups),
        hours=[
            ivr_pb2.OpeningHours(
                days=list(h.days), to=h.to.strftime("%H:%M"), **{"from": h.from_.strftime("%H:%M")}
            )
            for h in s.hours
        ],
        flow_version=flow_version,
    )
