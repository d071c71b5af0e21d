"""The service desk's gRPC servicers: checks, then the stores; protobuf stays here and in .convert.

Errors are VccErrors raised by the rules and stores; vcc.rpc.maps_errors turns each into its
status code and `vcc-error-id` (the one table is in vcc.errors).
"""

from __future__ import annotations

from typing import Any

import grpc

from central.convert import customer_to_proto
from central.customer_pins import CustomerPins
from central.servicedesk import common, convert
from central.servicedesk.customer_store import CustomerStore
from central.servicedesk.customers import PHONE
from central.servicedesk.history_store import HistoryStore
from central.servicedesk.kb_store import Article, ArticleState, KnowledgeStore
from central.servicedesk.notification_store import Channel, NotificationStore
from central.servicedesk.ticket_queries import TicketQueries
from central.servicedesk.ticket_records import NewTicket
from central.servicedesk.ticket_store import TicketStore
from vcc.authz import peer_identity
from vcc.digits import is_digits
from vcc.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from vcc.person_assertion import ACTING
from vcc.rpc import maps_errors, timestamp, unix_s
from vcc.v1 import servicedesk_pb2 as pb
from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]
SERVICE_NAMES = (
    "vcc.v1.CustomerService",
    "vcc.v1.TicketService",
    "vcc.v1.KnowledgeService",
    "vcc.v1.HistoryService",
)


def _as_person(named: str) -> str:
    """Who acts, as the message names them: when a site or desktop acts for a person (vcc.
    person_assertion, checked before the handler), that person's code, never another one; a tool
    (the back office) names whom it likes."""
    person = ACTING.get()
    if person is None:
        return named
    if named and named != person.claim.agent:
        raise PermissionDenied(
            "not-the-acting-person", f"this call acts for agent {person.claim.agent}, not for {named!r}"
        )
    return person.claim.agent


def _need_id(field: str, value: str) -> None:
    if not value or len(value) > 64:
        raise InvalidArgument(f"bad-{field.replace('_', '-')}", f"{field}: 1 to 64 characters")


class CustomerService(pb_grpc.CustomerServiceServicer):
    def __init__(self, customers: CustomerStore, pins: CustomerPins | None = None) -> None:
        self._customers = customers
        self._pins = pins

    @maps_errors
    async def SetCustomerPin(
        self, request: pb.SetCustomerPinRequest, context: Context
    ) -> pb.SetCustomerPinResponse:
        _need_id("customer_id", request.customer_id)
        if self._pins is None:
            raise FailedPrecondition("pins-not-available", "this central keeps no PINs")
        who = peer_identity(context)
        await self._pins.set_pin(request.customer_id, request.pin, actor=str(who) if who else "unknown")
        return pb.SetCustomerPinResponse()

    @maps_errors
    async def CreateCustomer(
        self, request: pb.CreateCustomerRequest, context: Context
    ) -> pb.CreateCustomerResponse:
        c = await self._customers.create(
            convert.customer_from_proto(request.customer), request.idempotency_key
        )
        return pb.CreateCustomerResponse(customer=customer_to_proto(c))

    @maps_errors
    async def GetCustomer(self, request: pb.GetCustomerRequest, context: Context) -> pb.GetCustomerResponse:
        _need_id("customer_id", request.customer_id)
        return pb.GetCustomerResponse(
            customer=customer_to_proto(await self._customers.get(request.customer_id))
        )

    @maps_errors
    async def UpdateCustomer(
        self, request: pb.UpdateCustomerRequest, context: Context
    ) -> pb.UpdateCustomerResponse:
        if request.expected_version == 0:
            raise InvalidArgument("missing-version", "expected_version: the version the edit was made on")
        c = await self._customers.update(
            convert.customer_from_proto(request.customer), request.expected_version
        )
        return pb.UpdateCustomerResponse(customer=customer_to_proto(c))

    @maps_errors
    async def SearchCustomers(
        self, request: pb.SearchCustomersRequest, context: Context
    ) -> pb.SearchCustomersResponse:
        if not (request.phone or request.name or request.account or request.address):
            raise InvalidArgument("empty-search", "give a phone, name, account or address to search by")
        if request.phone and not is_digits(request.phone):
            raise InvalidArgument("bad-phone", "phone: digits 0-9 (a number or its beginning)")
        found, token = await self._customers.search(
            phone=request.phone,
            name=request.name,
            account=request.account,
            address=request.address,
            page_size=common.page_size(request.page_size),
            page_token=request.page_token,
        )
        return pb.SearchCustomersResponse(
            customers=[customer_to_proto(c) for c in found], next_page_token=token
        )

    @maps_errors
    async def ImportCustomers(
        self, request: pb.ImportCustomersRequest, context: Context
    ) -> pb.ImportCustomersResponse:
        if not request.rows:
            raise InvalidArgument("empty-batch", "rows: at least one")
        result = await self._customers.import_rows(
            [(row.line, convert.customer_from_proto(row.customer)) for row in request.rows]
        )
        return pb.ImportCustomersResponse(
            created=result.created,
            updated=result.updated,
            rejected=[
                pb.RejectedRow(line=r.line, error_id=r.error_id, reason=r.reason) for r in result.rejected
            ],
        )


class TicketService(pb_grpc.TicketServiceServicer):
    def __init__(
        self, tickets: TicketStore, queries: TicketQueries, notifications: NotificationStore
    ) -> None:
        self._tickets = tickets
        self._queries = queries
        self._notifications = notifications

    @maps_errors
    async def CreateTicket(
        self, request: pb.CreateTicketRequest, context: Context
    ) -> pb.CreateTicketResponse:
        category = convert.category_from_proto(request.category, required=True)
        assert category is not None
        ticket = await self._tickets.create(
            NewTicket(
                category=category,
                title=request.title,
                description=request.description,
                customer_id=request.customer_id,
                call_id=request.call_id,
                origin_site_id=request.origin_site_id,
                created_by=_as_person(request.created_by),
                unit=request.unit,
            ),
            request.idempotency_key,
        )
        return pb.CreateTicketResponse(ticket=convert.ticket_to_proto(ticket))

    @maps_errors
    async def GetTicket(self, request: pb.GetTicketRequest, context: Context) -> pb.GetTicketResponse:
        _need_id("ticket_id", request.ticket_id)
        ticket = await self._queries.get(request.ticket_id)
        entries = await self._queries.entries(request.ticket_id)
        notifications = await self._notifications.of_ticket(request.ticket_id)
        return pb.GetTicketResponse(
            ticket=convert.ticket_to_proto(ticket),
            entries=[convert.entry_to_proto(e) for e in entries],
            notifications=[convert.notification_to_proto(n) for n in notifications],
        )

    @maps_errors
    async def DispatchTicket(
        self, request: pb.DispatchTicketRequest, context: Context
    ) -> pb.DispatchTicketResponse:
        _need_id("ticket_id", request.ticket_id)
        ticket = await self._tickets.dispatch(
            request.ticket_id, request.unit, _as_person(request.actor), request.note
        )
        return pb.DispatchTicketResponse(ticket=convert.ticket_to_proto(ticket))

    @maps_errors
    async def StartTicket(self, request: pb.StartTicketRequest, context: Context) -> pb.StartTicketResponse:
        _need_id("ticket_id", request.ticket_id)
        ticket = await self._tickets.start(request.ticket_id, _as_person(request.actor))
        return pb.StartTicketResponse(ticket=convert.ticket_to_proto(ticket))

    @maps_errors
    async def ReplyTicket(self, request: pb.ReplyTicketRequest, context: Context) -> pb.ReplyTicketResponse:
        _need_id("ticket_id", request.ticket_id)
        wanted = convert.channel_from_proto(request.channel)
        channel: Channel | None
        if wanted == convert.DEFAULT_CHANNEL:
            email, phone = await self._tickets.contact(request.ticket_id)
            channel = self._tickets.default_channel(email, phone)
        else:
            channel = wanted
        ticket, notification_id = await self._tickets.reply(
            request.ticket_id, _as_person(request.author), request.body, channel
        )
        return pb.ReplyTicketResponse(ticket=convert.ticket_to_proto(ticket), notification_id=notification_id)

    @maps_errors
    async def CloseTicket(self, request: pb.CloseTicketRequest, context: Context) -> pb.CloseTicketResponse:
        _need_id("ticket_id", request.ticket_id)
        ticket = await self._tickets.close(request.ticket_id, _as_person(request.actor))
        return pb.CloseTicketResponse(ticket=convert.ticket_to_proto(ticket))

    @maps_errors
    async def ReopenTicket(
        self, request: pb.ReopenTicketRequest, context: Context
    ) -> pb.ReopenTicketResponse:
        _need_id("ticket_id", request.ticket_id)
        ticket = await self._tickets.reopen(request.ticket_id, _as_person(request.actor), request.reason)
        return pb.ReopenTicketResponse(ticket=convert.ticket_to_proto(ticket))

    @maps_errors
    async def AddTicketNote(
        self, request: pb.AddTicketNoteRequest, context: Context
    ) -> pb.AddTicketNoteResponse:
        _need_id("ticket_id", request.ticket_id)
        entry = await self._tickets.add_note(
            request.ticket_id, _as_person(request.author), request.body, request.idempotency_key
        )
        return pb.AddTicketNoteResponse(entry=convert.entry_to_proto(entry))

    @maps_errors
    async def SearchTickets(
        self, request: pb.SearchTicketsRequest, context: Context
    ) -> pb.SearchTicketsResponse:
        found, token = await self._queries.search(
            unit=request.unit,
            states=[convert.state_from_proto(s) for s in request.states],
            category=convert.category_from_proto(request.category, required=False),
            customer_id=request.customer_id,
            call_id=request.call_id,
            due_before=unix_s(request.due_before) if request.HasField("due_before") else None,
            overdue_at=self._queries.now() if request.overdue_only else None,
            page_size=common.page_size(request.page_size),
            page_token=request.page_token,
        )
        return pb.SearchTicketsResponse(
            tickets=[convert.ticket_to_proto(t) for t in found], next_page_token=token
        )

    @maps_errors
    async def GetTicketReport(
        self, request: pb.GetTicketReportRequest, context: Context
    ) -> pb.GetTicketReportResponse:
        now = self._queries.now()
        rows = await self._queries.report(now)
        return pb.GetTicketReportResponse(
            rows=[convert.report_row_to_proto(r) for r in rows], at=timestamp(now)
        )


class KnowledgeService(pb_grpc.KnowledgeServiceServicer):
    def __init__(self, knowledge: KnowledgeStore) -> None:
        self._kb = knowledge

    @maps_errors
    async def ProposeArticle(
        self, request: pb.ProposeArticleRequest, context: Context
    ) -> pb.ProposeArticleResponse:
        article = await self._kb.propose(
            Article(
                article_id="",
                title=request.title,
                body=request.body,
                category=request.category,
                service=request.service,
                tags=tuple(request.tags),
                question=request.question,
                proposed_by=_as_person(request.author),
            ),
            request.idempotency_key,
        )
        return pb.ProposeArticleResponse(article=convert.article_to_proto(article))

    @maps_errors
    async def PublishArticle(
        self, request: pb.PublishArticleRequest, context: Context
    ) -> pb.PublishArticleResponse:
        _need_id("article_id", request.article_id)
        article = await self._kb.publish(request.article_id, request.reviewer)
        return pb.PublishArticleResponse(article=convert.article_to_proto(article))

    @maps_errors
    async def RejectArticle(
        self, request: pb.RejectArticleRequest, context: Context
    ) -> pb.RejectArticleResponse:
        _need_id("article_id", request.article_id)
        article = await self._kb.reject(request.article_id, request.reviewer)
        return pb.RejectArticleResponse(article=convert.article_to_proto(article))

    @maps_errors
    async def GetArticle(self, request: pb.GetArticleRequest, context: Context) -> pb.GetArticleResponse:
        _need_id("article_id", request.article_id)
        return pb.GetArticleResponse(article=convert.article_to_proto(await self._kb.get(request.article_id)))

    @maps_errors
    async def ListArticles(
        self, request: pb.ListArticlesRequest, context: Context
    ) -> pb.ListArticlesResponse:
        state: ArticleState | None = None
        if request.state:
            try:
                state = ArticleState(request.state)
            except ValueError:
                raise InvalidArgument("bad-article-state", "state: proposed, published or rejected") from None
        found, token = await self._kb.list_articles(
            state=state,
            category=request.category,
            service=request.service,
            page_size=common.page_size(request.page_size),
            page_token=request.page_token,
        )
        return pb.ListArticlesResponse(
            articles=[convert.article_to_proto(a) for a in found], next_page_token=token
        )

    @maps_errors
    async def SearchArticles(
        self, request: pb.SearchArticlesRequest, context: Context
    ) -> pb.SearchArticlesResponse:
        hits = await self._kb.search(
            request.query, category=request.category, service=request.service, limit=request.limit or 10
        )
        return pb.SearchArticlesResponse(
            hits=[pb.ArticleHit(article=convert.article_to_proto(a), score=score) for a, score in hits]
        )


class HistoryService(pb_grpc.HistoryServiceServicer):
    def __init__(self, history: HistoryStore) -> None:
        self._history = history

    @maps_errors
    async def GetHistory(self, request: pb.GetHistoryRequest, context: Context) -> pb.GetHistoryResponse:
        if request.phone and not PHONE.fullmatch(request.phone):
            raise InvalidArgument("bad-phone", "phone: 3 to 20 digits 0-9")
        customer, items, token = await self._history.history(
            customer_id=request.customer_id,
            phone=request.phone,
            page_size=common.page_size(request.page_size),
            page_token=request.page_token,
        )
        reply = pb.GetHistoryResponse(items=[convert.item_to_proto(i) for i in items], next_page_token=token)
        if customer is not None:
            reply.customer.CopyFrom(customer_to_proto(customer))
        return reply
