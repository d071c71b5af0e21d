"""The CentralService gRPC servicer: validation, then the store and membership; protobuf stays here."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NoReturn, Protocol

import grpc

from central import convert, lost_sites, validation
from central.membership_view import SiteLiveness
from central.records import CallRecord
from central.router import Router, SiteStream, StreamCommand
from central.store import RecordedDecision, Store
from routing.global_router import CallToRoute
from vcc.authz import peer_description, peer_identity, require_site
from vcc.errors import ERROR_ID_KEY, InvalidArgument, NotFound, Unavailable
from vcc.rpc import maps_errors, maps_stream_errors, timestamp
from vcc.v1 import central_pb2, central_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "vcc.v1.CentralService"
Context = grpc.aio.ServicerContext[Any, Any]
# Trailing metadata of a follower's refusal: the leader's address ("" when not known).
LEADER_KEY = "vcc-leader"
NOT_LEADER = "not-leader"
# An operator's note on closing a lost city's calls (kept in the audit log).
MAX_REASON = 200
# How often an open state stream checks that this replica still leads.
LEADER_CHECK_S = 0.2


class LeaderGate(Protocol):
    """Whether this replica leads now (central.leadership.Leadership), and who does otherwise."""

    @property
    def is_leader(self) -> bool: ...

    def leader_address(self) -> str | None: ...


class CentralService(central_pb2_grpc.CentralServiceServicer):
    def __init__(
        self,
        store: Store,
        province_id: str,
        site_ids: Sequence[str],
        sites: Callable[[], list[SiteLiveness]],
        router: Router | None = None,
        *,
        leadership: LeaderGate | None = None,
        lost: lost_sites.LostSites | None = None,
    ) -> None:
        self._store = store
        # Open calls of down cities: marked in the records, closed on an operator's word.
        self._lost = lost or lost_sites.LostSites(store, sites)
        # None: a lone central, always the leader (tests, no election).
        self._leadership = leadership
        self._province_id = province_id
        self._site_ids = frozenset(site_ids)
        self._sites = sites
        self._router = router

    @maps_errors
    async def IngestCallEvents(
        self, request: central_pb2.IngestCallEventsRequest, context: Context
    ) -> central_pb2.IngestCallEventsResponse:
        await self._only_leader(context)
        validation.check_ingest(request, self._site_ids)
        # A site ingests only its own records (else first writer wins against the real site).
        await require_site(context, request.site_id)
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
    async def LookupCustomers(
        self, request: central_pb2.LookupCustomersRequest, context: Context
    ) -> central_pb2.LookupCustomersResponse:
        # The screen pops of calls a site took in together: one RPC instead of one per call.
        validation.check_phones(request.phones)
        reply = central_pb2.LookupCustomersResponse()
        for phone in request.phones:
            customer = await self._store.lookup_customer(phone)
            match = reply.matches.add(found=customer is not None)
            if customer is not None:
                match.customer.CopyFrom(convert.customer_to_proto(customer))
        return reply

    @maps_errors
    async def GetCallRecord(
        self, request: central_pb2.GetCallRecordRequest, context: Context
    ) -> central_pb2.GetCallRecordResponse:
        validation.check_call_id(request.call_id)
        record = await self._store.get_call(request.call_id)
        if record is None:
            raise NotFound("call-not-found", f"no call record {request.call_id!r}")
        decisions = await self._decisions_of([record])
        return central_pb2.GetCallRecordResponse(record=self._record_to_proto(record, decisions))

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
            open_only=request.open_only,
        )
        decisions = await self._decisions_of(records) if request.with_events else {}
        return central_pb2.ListCallRecordsResponse(
            records=[self._record_to_proto(r, decisions) for r in records],
            next_page_token=next_token,
        )

    def _record_to_proto(
        self, record: CallRecord, decisions: dict[str, list[RecordedDecision]]
    ) -> central_pb2.CallRecord:
        msg = convert.record_to_proto(record, decisions.get(record.call_id, []))
        down = self._lost.down(record)
        if down is not None:
            msg.open_at_down_site.site_id = down.site_id
            if down.down_since is not None:
                msg.open_at_down_site.down_since.CopyFrom(timestamp(down.down_since))
        return msg

    @maps_errors
    async def CloseLostSiteCalls(
        self, request: central_pb2.CloseLostSiteCallsRequest, context: Context
    ) -> central_pb2.CloseLostSiteCallsResponse:
        await self._only_leader(context)
        self._check_site(request.site_id)
        if len(request.reason) > MAX_REASON:
            raise InvalidArgument("bad-reason", f"reason: at most {MAX_REASON} characters")
        who = peer_identity(context)
        closed, since = await self._lost.close(
            request.site_id, str(who) if who else "unknown", peer_description(context), request.reason
        )
        reply = central_pb2.CloseLostSiteCallsResponse(call_ids=closed)
        if since is not None:
            reply.down_since.CopyFrom(timestamp(since))
        return reply

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

    # ---- global routing -------------------------------------------------------------------

    @maps_stream_errors
    async def StreamSiteState(
        self, request_iterator: AsyncIterator[central_pb2.StreamSiteStateRequest], context: Context
    ) -> AsyncIterator[central_pb2.StreamSiteStateResponse]:
        router = self._need_router()
        await self._only_leader(context)
        requests = aiter(request_iterator)
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            return
        site_id = _check_state(first, self._site_ids, "")
        # A site streams only its own state (else central would follow an impostor).
        await require_site(context, site_id)
        stream = router.attach(site_id)
        reader = asyncio.create_task(self._read_states(router, stream, first, requests))
        command: asyncio.Task[StreamCommand] | None = None
        try:
            while True:
                if command is None:
                    command = asyncio.create_task(stream.commands.get())
                done, _ = await asyncio.wait(
                    {command, reader}, timeout=LEADER_CHECK_S, return_when=asyncio.FIRST_COMPLETED
                )
                if command in done:
                    yield _command(command.result())
                    command = None
                    continue
                if reader in done:
                    # The site closed its side (or sent something wrong: raised here).
                    reader.result()
                    return
                # Deposed: the site reconnects to the new leader, which rebuilds the live state.
                await self._only_leader(context)
        finally:
            if command is not None:
                command.cancel()
            reader.cancel()
            router.detach(stream)
            log.info("site %s: state stream closed", site_id)

    @staticmethod
    async def _read_states(
        router: Router,
        stream: SiteStream,
        first: central_pb2.StreamSiteStateRequest,
        requests: AsyncIterator[central_pb2.StreamSiteStateRequest],
    ) -> None:
        router.on_state(stream, first.seq, first.state, first.presence)
        router.on_routed(stream, first.routed)
        log.info("site %s: state stream open", stream.site_id)
        async for request in requests:
            _check_state(request, (stream.site_id,), stream.site_id)
            router.on_state(stream, request.seq, request.state, request.presence)
            router.on_routed(stream, request.routed)

    @maps_errors
    async def RouteCall(
        self, request: central_pb2.RouteCallRequest, context: Context
    ) -> central_pb2.RouteCallResponse:
        router = self._need_router()
        await self._only_leader(context)
        validation.check_call_id(request.call_id)
        self._check_site(request.site_id)
        await require_site(context, request.site_id)
        if not request.skill_group:
            raise InvalidArgument("missing-skill-group", "skill_group: required")
        if not router.knows_skill_group(request.skill_group):
            raise NotFound("unknown-skill-group", f"skill_group: no skill group {request.skill_group!r}")
        if not (math.isfinite(request.waited_s) and 0.0 <= request.waited_s <= MAX_WAITED_S):
            raise InvalidArgument("bad-waited", f"waited_s: 0 to {MAX_WAITED_S:.0f} seconds")
        if request.priority > MAX_PRIORITY:
            raise InvalidArgument("bad-priority", f"priority: 0 to {MAX_PRIORITY}")
        if len(request.exclude_site_ids) > MAX_EXCLUDED:
            raise InvalidArgument("bad-exclude", f"exclude_site_ids: at most {MAX_EXCLUDED}")
        call = CallToRoute(
            origin=request.site_id,
            skill_group=request.skill_group,
            waited_s=request.waited_s,
            priority=request.priority,
            excluded=frozenset(request.exclude_site_ids),
        )
        record = await router.route_call(request.call_id, call)
        return central_pb2.RouteCallResponse(decision=convert.decision_to_proto(record))

    @maps_errors
    async def PreRouteCall(
        self, request: central_pb2.PreRouteCallRequest, context: Context
    ) -> central_pb2.PreRouteCallResponse:
        router = self._need_router()
        await self._only_leader(context)
        self._check_site(request.home_site_id)
        for key, number in (("ani", request.ani), ("dnis", request.dnis)):
            if number and not validation.PHONE.fullmatch(number):
                raise InvalidArgument("bad-phone", f"{key}: 3 to 20 digits (or empty)")
        record, address = await router.pre_route(request.home_site_id)
        return central_pb2.PreRouteCallResponse(
            site_id=record.decision.target, address=address, decision=convert.decision_to_proto(record)
        )

    @maps_errors
    async def ListAgents(
        self, request: central_pb2.ListAgentsRequest, context: Context
    ) -> central_pb2.ListAgentsResponse:
        router = self._need_router()
        if request.site_id:
            self._check_site(request.site_id)
        return central_pb2.ListAgentsResponse(
            agents=[
                central_pb2.DirectoryEntry(
                    agent_code=a.agent_code, name=a.name, site_id=a.site_id, state=a.state, skills=a.skills
                )
                for a in router.directory(request.site_id)
            ]
        )

    @maps_errors
    async def ListRoutingDecisions(
        self, request: central_pb2.ListRoutingDecisionsRequest, context: Context
    ) -> central_pb2.ListRoutingDecisionsResponse:
        self._need_router()
        validation.check_call_id(request.call_id)
        record = await self._store.get_call(request.call_id)
        decisions = await self._decisions_of([record] if record is not None else [], [request.call_id])
        return central_pb2.ListRoutingDecisionsResponse(
            decisions=[convert.decision_to_proto(d) for d in decisions.get(request.call_id, [])]
        )

    async def _only_leader(self, context: Context) -> None:
        """A follower refuses: UNAVAILABLE `not-leader`, with the leader's address in `vcc-leader`."""
        gate = self._leadership
        if gate is None or gate.is_leader:
            return
        await _refuse_as_follower(context, gate.leader_address() or "")

    def _need_router(self) -> Router:
        if self._router is None:
            raise Unavailable("routing-unavailable", "this central serves no global routing")
        return self._router

    def _check_site(self, site_id: str) -> None:
        if not site_id:
            raise InvalidArgument("missing-site-id", "site_id: required")
        if site_id not in self._site_ids:
            raise NotFound("unknown-site", f"site_id: no site {site_id!r} in the province config")

    async def _decisions_of(
        self, records: Sequence[CallRecord], call_ids: Sequence[str] = ()
    ) -> dict[str, list[RecordedDecision]]:
        """The decisions of these calls: recorded with their call id, or named by their events."""
        ids = sorted({*call_ids, *(r.call_id for r in records)})
        if self._router is None or not ids:
            return {}
        referenced = {
            r.call_id: [e.data[DECISION_ID] for e in r.events if e.data.get(DECISION_ID)] for r in records
        }
        return await self._router.decisions_of(ids, referenced)


# The key of a call event's data that names the routing decision behind it (ROUTED events).
DECISION_ID = "decision_id"
# Bounds of a RouteCall request.
MAX_WAITED_S = 86_400.0
MAX_PRIORITY = 9
MAX_EXCLUDED = 64


async def _refuse_as_follower(context: Context, leader: str) -> NoReturn:
    # Not through maps_errors: that trailer carries the error id only, and sites need the address.
    context.set_trailing_metadata(((ERROR_ID_KEY, NOT_LEADER), (LEADER_KEY, leader)))
    await context.abort(
        grpc.StatusCode.UNAVAILABLE,
        f"this central replica is not the leader; the leader is at {leader or 'an unknown address'}",
    )
    raise AssertionError("unreachable: abort raises")


# A site sends at most 256 (site_node.links.central_link.ROUTED_PER_MESSAGE).
MAX_ROUTED_PER_STATE = 1000


def _check_state(
    request: central_pb2.StreamSiteStateRequest, known: Sequence[str] | frozenset[str], site: str
) -> str:
    """The site a state message is from; `site` is the stream's site once the first message named it."""
    site_id = request.state.site_id
    if not site_id:
        raise InvalidArgument("missing-site-id", "state.site_id: required")
    if len(request.routed) > MAX_ROUTED_PER_STATE:
        raise InvalidArgument("too-many-routed", f"routed: at most {MAX_ROUTED_PER_STATE} per message")
    if site and site_id != site:
        raise InvalidArgument(
            "site-mismatch", f"state.site_id: this stream is site {site!r}, not {site_id!r}"
        )
    if site_id not in known:
        raise NotFound("unknown-site", f"state.site_id: no site {site_id!r} in the province config")
    return site_id


def _command(command: StreamCommand) -> central_pb2.StreamSiteStateResponse:
    if isinstance(command, central_pb2.StreamSiteStateResponse):
        return command
    return central_pb2.StreamSiteStateResponse(
        pull_call=central_pb2.PullCall(
            skill_group=command.pull.skill_group,
            to_site_id=command.pull.target,
            decision=convert.decision_to_proto(command.record),
        )
    )


def _site_status(s: SiteLiveness) -> central_pb2.SiteStatus:
    status = central_pb2.SiteStatus(site_id=s.site_id, name=s.name, up=s.up)
    if s.up and s.summary is not None:
        status.summary.CopyFrom(s.summary)
    if s.last_seen is not None:
        status.last_seen.CopyFrom(timestamp(s.last_seen))
    return status
