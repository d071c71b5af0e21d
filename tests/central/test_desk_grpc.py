"""The service desk's gRPC services on a real grpc.aio server (127.0.0.1:0), on SQLite and
PostgreSQL: the happy paths through protobuf, and bad input on every RPC (status code, error
id, and nothing changed in the database)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from central.grpc_api import SERVICE_NAME, CentralService
from central.membership_view import MembershipView
from central.servicedesk.desk import ServiceDesk
from central.servicedesk.grpc_api import SERVICE_NAMES
from central.store import Store
from tests.central.province import province
from tests.helpers import full_width
from vcc import rpc
from vcc.errors import from_rpc_error
from vcc.v1 import (
    central_pb2,
    central_pb2_grpc,
    common_pb2,
)
from vcc.v1 import (
    servicedesk_pb2 as pb,
)
from vcc.v1 import (
    servicedesk_pb2_grpc as pb_grpc,
)

DEADLINE = rpc.DEFAULT_DEADLINE_S
DESK_TABLES = (
    "customers",
    "customer_phones",
    "tickets",
    "ticket_entries",
    "notifications",
    "kb_articles",
    "kb_terms",
    "idempotency_keys",
)
C = grpc.StatusCode


@dataclass
class Stubs:
    central: central_pb2_grpc.CentralServiceAsyncStub
    customers: pb_grpc.CustomerServiceAsyncStub
    tickets: pb_grpc.TicketServiceAsyncStub
    kb: pb_grpc.KnowledgeServiceAsyncStub
    history: pb_grpc.HistoryServiceAsyncStub
    engine: AsyncEngine

    async def counts(self) -> dict[str, int]:
        async with self.engine.connect() as conn:
            return {
                t: int((await conn.execute(sa.text(f"select count(*) from {t}"))).scalar_one())
                for t in DESK_TABLES
            }


@pytest.fixture
async def stubs(store: Store, engine: AsyncEngine) -> AsyncIterator[Stubs]:
    config = province()
    await store.sync_province(config)
    view = MembershipView((s.id, s.name) for s in config.sites)
    server = rpc.Server([SERVICE_NAME, *SERVICE_NAMES])
    central_pb2_grpc.add_CentralServiceServicer_to_server(
        CentralService(store, config.province.id, [s.id for s in config.sites], view.sites), server.grpc
    )
    ServiceDesk(store, [s.id for s in config.sites], senders={}).add_to(server.grpc)
    port = await server.start("127.0.0.1:0")
    async with rpc.channel(f"127.0.0.1:{port}") as ch:
        yield Stubs(
            central_pb2_grpc.CentralServiceStub(ch),
            pb_grpc.CustomerServiceStub(ch),
            pb_grpc.TicketServiceStub(ch),
            pb_grpc.KnowledgeServiceStub(ch),
            pb_grpc.HistoryServiceStub(ch),
            engine,
        )
    await server.stop(0)


def customer(phone: str = "13800000002", **kw: Any) -> common_pb2.Customer:
    fields: dict[str, Any] = {
        "name": "张三",
        "phones": [phone, "0755" + phone[-7:]],
        "email": "z@example.com",
    }
    fields.update(kw)
    return common_pb2.Customer(**fields)


async def test_happy_paths_through_protobuf(stubs: Stubs) -> None:
    made = (
        await stubs.customers.CreateCustomer(pb.CreateCustomerRequest(customer=customer()), timeout=DEADLINE)
    ).customer
    assert made.customer_id and made.version == 1 and list(made.phones) == ["13800000002", "07550000002"]
    # The sites' screen pop (CentralService.LookupCustomer) finds the customer by either number,
    # with the grown message.
    for number in made.phones:
        pop = await stubs.central.LookupCustomer(
            central_pb2.LookupCustomerRequest(phone=number), timeout=DEADLINE
        )
        assert (pop.customer.customer_id, pop.customer.phone, pop.customer.email) == (
            made.customer_id,
            "13800000002",
            "z@example.com",
        )
    edited = made.__deepcopy__()
    edited.address = "深圳市南山区"
    updated = (
        await stubs.customers.UpdateCustomer(
            pb.UpdateCustomerRequest(customer=edited, expected_version=1), timeout=DEADLINE
        )
    ).customer
    assert (updated.version, updated.address) == (2, "深圳市南山区")
    hits = await stubs.customers.SearchCustomers(pb.SearchCustomersRequest(address="南山"), timeout=DEADLINE)
    assert [c.customer_id for c in hits.customers] == [made.customer_id]

    create = pb.CreateTicketRequest(
        category=pb.TICKET_CATEGORY_WORK_ORDER,
        title="线路故障",
        customer_id=made.customer_id,
        call_id="call-9",
        origin_site_id="gz",
        created_by="0101",
        unit="city:sz",
        idempotency_key="desk-1",
    )
    first = (await stubs.tickets.CreateTicket(create, timeout=DEADLINE)).ticket
    again = (await stubs.tickets.CreateTicket(create, timeout=DEADLINE)).ticket
    assert (
        first.ticket_id == again.ticket_id
        and first.state == pb.TICKET_STATE_ASSIGNED
        and first.unit == "city:sz"
    )
    await stubs.tickets.StartTicket(
        pb.StartTicketRequest(ticket_id=first.ticket_id, actor="0201"), timeout=DEADLINE
    )
    reply = await stubs.tickets.ReplyTicket(
        pb.ReplyTicketRequest(ticket_id=first.ticket_id, author="0201", body="已修复"), timeout=DEADLINE
    )
    assert reply.ticket.state == pb.TICKET_STATE_REPLIED and reply.notification_id  # e-mail by default
    got = await stubs.tickets.GetTicket(pb.GetTicketRequest(ticket_id=first.ticket_id), timeout=DEADLINE)
    assert [n.address for n in got.notifications] == ["z***@example.com"]
    assert [e.kind for e in got.entries] == ["created", "transition", "transition", "reply"]
    listed = await stubs.tickets.SearchTickets(
        pb.SearchTicketsRequest(unit="city:sz", states=[pb.TICKET_STATE_REPLIED]), timeout=DEADLINE
    )
    assert [t.ticket_id for t in listed.tickets] == [first.ticket_id]
    report = await stubs.tickets.GetTicketReport(pb.GetTicketReportRequest(), timeout=DEADLINE)
    assert [(r.unit, r.category, r.open) for r in report.rows] == [
        ("city:sz", pb.TICKET_CATEGORY_WORK_ORDER, 0)
    ]

    article = (
        await stubs.kb.ProposeArticle(
            pb.ProposeArticleRequest(
                title="宽带故障申告", body="拨打 112 申告线路故障。", author="0201", question="宽带断了怎么办"
            ),
            timeout=DEADLINE,
        )
    ).article
    await stubs.kb.PublishArticle(
        pb.PublishArticleRequest(article_id=article.article_id, reviewer="r1"), timeout=DEADLINE
    )
    found = await stubs.kb.SearchArticles(
        pb.SearchArticlesRequest(query="线路故障怎么申告"), timeout=DEADLINE
    )
    assert [h.article.article_id for h in found.hits] == [article.article_id] and found.hits[0].score > 0

    history = await stubs.history.GetHistory(pb.GetHistoryRequest(phone="07550000002"), timeout=DEADLINE)
    assert history.customer.customer_id == made.customer_id
    assert [i.kind for i in history.items] == ["notification", "ticket"]


async def expect(call: Awaitable[Any], code: grpc.StatusCode, error_id: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    assert from_rpc_error(info.value).error_id == error_id, info.value.details()


async def test_bad_input_on_every_rpc_changes_nothing(stubs: Stubs) -> None:
    made = (
        await stubs.customers.CreateCustomer(
            pb.CreateCustomerRequest(customer=customer(), idempotency_key="k1"), timeout=DEADLINE
        )
    ).customer
    ticket = (
        await stubs.tickets.CreateTicket(
            pb.CreateTicketRequest(category=pb.TICKET_CATEGORY_INQUIRY, title="t", created_by="0101"),
            timeout=DEADLINE,
        )
    ).ticket
    article = (
        await stubs.kb.ProposeArticle(
            pb.ProposeArticleRequest(title="a", body="b", author="x"), timeout=DEADLINE
        )
    ).article
    before = await stubs.counts()
    cs, ts, kb, hs = stubs.customers, stubs.tickets, stubs.kb, stubs.history
    stale = made.__deepcopy__()
    stale.notes = "stale"
    cases: list[tuple[Awaitable[Any], grpc.StatusCode, str]] = [
        (
            cs.CreateCustomer(pb.CreateCustomerRequest(customer=customer("12ab"))),
            C.INVALID_ARGUMENT,
            "bad-phone",
        ),
        (
            cs.CreateCustomer(pb.CreateCustomerRequest(customer=customer(name=""))),
            C.INVALID_ARGUMENT,
            "bad-name",
        ),
        (
            cs.CreateCustomer(pb.CreateCustomerRequest(customer=customer(email="x@"))),
            C.INVALID_ARGUMENT,
            "bad-email",
        ),
        (cs.CreateCustomer(pb.CreateCustomerRequest(customer=customer())), C.ALREADY_EXISTS, "phone-taken"),
        (
            cs.CreateCustomer(
                pb.CreateCustomerRequest(customer=customer("13900000000"), idempotency_key="k1")
            ),
            C.ALREADY_EXISTS,
            "idempotency-key-reused",
        ),
        (
            cs.CreateCustomer(
                pb.CreateCustomerRequest(customer=customer("13900000000", customer_id=made.customer_id))
            ),
            C.ALREADY_EXISTS,
            "customer-exists",
        ),
        (cs.GetCustomer(pb.GetCustomerRequest()), C.INVALID_ARGUMENT, "bad-customer-id"),
        (cs.GetCustomer(pb.GetCustomerRequest(customer_id="nobody")), C.NOT_FOUND, "customer-not-found"),
        (cs.UpdateCustomer(pb.UpdateCustomerRequest(customer=made)), C.INVALID_ARGUMENT, "missing-version"),
        (
            cs.UpdateCustomer(pb.UpdateCustomerRequest(customer=stale, expected_version=7)),
            C.FAILED_PRECONDITION,
            "stale-version",
        ),
        (
            cs.UpdateCustomer(
                pb.UpdateCustomerRequest(customer=customer(customer_id="nobody"), expected_version=1)
            ),
            C.NOT_FOUND,
            "customer-not-found",
        ),
        (cs.SearchCustomers(pb.SearchCustomersRequest()), C.INVALID_ARGUMENT, "empty-search"),
        (cs.SearchCustomers(pb.SearchCustomersRequest(phone="13x")), C.INVALID_ARGUMENT, "bad-phone"),
        # Full-width digits (what a Chinese input method types) are not digits of a phone number.
        (
            cs.SearchCustomers(pb.SearchCustomersRequest(phone=full_width("138"))),
            C.INVALID_ARGUMENT,
            "bad-phone",
        ),
        (
            cs.SearchCustomers(pb.SearchCustomersRequest(name="a", page_size=9999)),
            C.INVALID_ARGUMENT,
            "bad-page-size",
        ),
        (
            cs.SearchCustomers(pb.SearchCustomersRequest(name="a", page_token="zz")),
            C.INVALID_ARGUMENT,
            "bad-page-token",
        ),
        (cs.ImportCustomers(pb.ImportCustomersRequest()), C.INVALID_ARGUMENT, "empty-batch"),
        (
            ts.CreateTicket(pb.CreateTicketRequest(title="t", created_by="x")),
            C.INVALID_ARGUMENT,
            "bad-category",
        ),
        (
            ts.CreateTicket(pb.CreateTicketRequest(category=1, created_by="x")),
            C.INVALID_ARGUMENT,
            "missing-title",
        ),
        (
            ts.CreateTicket(pb.CreateTicketRequest(category=1, title="t")),
            C.INVALID_ARGUMENT,
            "missing-created-by",
        ),
        (
            ts.CreateTicket(pb.CreateTicketRequest(category=9, title="t", created_by="x")),
            C.INVALID_ARGUMENT,
            "bad-category",
        ),
        (
            ts.CreateTicket(pb.CreateTicketRequest(category=1, title="t", created_by="x", unit="city:xx")),
            C.NOT_FOUND,
            "unknown-unit",
        ),
        (
            ts.CreateTicket(pb.CreateTicketRequest(category=1, title="t", created_by="x", unit="sz")),
            C.INVALID_ARGUMENT,
            "bad-unit",
        ),
        (
            ts.CreateTicket(
                pb.CreateTicketRequest(category=1, title="t", created_by="x", customer_id="nobody")
            ),
            C.NOT_FOUND,
            "customer-not-found",
        ),
        (
            ts.CreateTicket(
                pb.CreateTicketRequest(category=1, title="t", created_by="x", origin_site_id="xx")
            ),
            C.NOT_FOUND,
            "unknown-site",
        ),
        (ts.GetTicket(pb.GetTicketRequest(ticket_id="T0")), C.NOT_FOUND, "ticket-not-found"),
        (ts.GetTicket(pb.GetTicketRequest()), C.INVALID_ARGUMENT, "bad-ticket-id"),
        (
            ts.DispatchTicket(pb.DispatchTicketRequest(ticket_id=ticket.ticket_id, unit="x", actor="a")),
            C.INVALID_ARGUMENT,
            "bad-unit",
        ),
        (
            ts.DispatchTicket(pb.DispatchTicketRequest(ticket_id=ticket.ticket_id, unit="city:sz")),
            C.INVALID_ARGUMENT,
            "missing-actor",
        ),
        (
            ts.StartTicket(pb.StartTicketRequest(ticket_id=ticket.ticket_id, actor="a")),
            C.FAILED_PRECONDITION,
            "bad-transition",
        ),
        (
            ts.CloseTicket(pb.CloseTicketRequest(ticket_id=ticket.ticket_id, actor="a")),
            C.FAILED_PRECONDITION,
            "bad-transition",
        ),
        (
            ts.ReopenTicket(pb.ReopenTicketRequest(ticket_id=ticket.ticket_id, actor="a")),
            C.INVALID_ARGUMENT,
            "missing-reason",
        ),
        (
            ts.ReopenTicket(pb.ReopenTicketRequest(ticket_id=ticket.ticket_id, actor="a", reason="r")),
            C.FAILED_PRECONDITION,
            "bad-transition",
        ),
        (
            ts.ReplyTicket(pb.ReplyTicketRequest(ticket_id=ticket.ticket_id, author="a")),
            C.INVALID_ARGUMENT,
            "missing-body",
        ),
        (
            ts.ReplyTicket(
                pb.ReplyTicketRequest(ticket_id=ticket.ticket_id, author="a", body="b", channel=9)
            ),
            C.INVALID_ARGUMENT,
            "bad-channel",
        ),
        (
            ts.ReplyTicket(
                pb.ReplyTicketRequest(
                    ticket_id=ticket.ticket_id, author="a", body="b", channel=pb.NOTIFICATION_CHANNEL_EMAIL
                )
            ),
            C.FAILED_PRECONDITION,
            "no-customer",
        ),
        (
            ts.AddTicketNote(pb.AddTicketNoteRequest(ticket_id=ticket.ticket_id, body="b")),
            C.INVALID_ARGUMENT,
            "missing-author",
        ),
        (
            ts.AddTicketNote(pb.AddTicketNoteRequest(ticket_id="T0", author="a", body="b")),
            C.NOT_FOUND,
            "ticket-not-found",
        ),
        (ts.SearchTickets(pb.SearchTicketsRequest(states=[42])), C.INVALID_ARGUMENT, "bad-state"),
        (ts.SearchTickets(pb.SearchTicketsRequest(category=42)), C.INVALID_ARGUMENT, "bad-category"),
        (
            ts.SearchTickets(pb.SearchTicketsRequest(page_token="WyJjdXN0b21lcnMiLCJ4Il0")),
            C.INVALID_ARGUMENT,
            "bad-page-token",
        ),
        (kb.ProposeArticle(pb.ProposeArticleRequest(body="b", author="x")), C.INVALID_ARGUMENT, "bad-title"),
        (
            kb.ProposeArticle(pb.ProposeArticleRequest(title="t", body="b")),
            C.INVALID_ARGUMENT,
            "missing-author",
        ),
        (
            kb.ProposeArticle(pb.ProposeArticleRequest(title="t", body="b", author="x", tags=[""])),
            C.INVALID_ARGUMENT,
            "bad-tags",
        ),
        (
            kb.PublishArticle(pb.PublishArticleRequest(article_id="K0", reviewer="r")),
            C.NOT_FOUND,
            "article-not-found",
        ),
        (
            kb.PublishArticle(pb.PublishArticleRequest(article_id=article.article_id)),
            C.INVALID_ARGUMENT,
            "missing-reviewer",
        ),
        (kb.RejectArticle(pb.RejectArticleRequest(article_id="")), C.INVALID_ARGUMENT, "bad-article-id"),
        (kb.GetArticle(pb.GetArticleRequest(article_id="K0")), C.NOT_FOUND, "article-not-found"),
        (kb.ListArticles(pb.ListArticlesRequest(state="draft")), C.INVALID_ARGUMENT, "bad-article-state"),
        (kb.SearchArticles(pb.SearchArticlesRequest(query="")), C.INVALID_ARGUMENT, "bad-query"),
        (kb.SearchArticles(pb.SearchArticlesRequest(query="x" * 201)), C.INVALID_ARGUMENT, "bad-query"),
        (
            kb.SearchArticles(pb.SearchArticlesRequest(query="邮编", limit=1000)),
            C.INVALID_ARGUMENT,
            "bad-limit",
        ),
        (hs.GetHistory(pb.GetHistoryRequest()), C.INVALID_ARGUMENT, "bad-history-key"),
        (hs.GetHistory(pb.GetHistoryRequest(phone="1", customer_id="c")), C.INVALID_ARGUMENT, "bad-phone"),
        (
            hs.GetHistory(pb.GetHistoryRequest(phone=full_width("13800000002"))),
            C.INVALID_ARGUMENT,
            "bad-phone",
        ),
        (hs.GetHistory(pb.GetHistoryRequest(customer_id="nobody")), C.NOT_FOUND, "customer-not-found"),
        (
            hs.GetHistory(pb.GetHistoryRequest(phone="13800000002", page_token="e30")),
            C.INVALID_ARGUMENT,
            "bad-page-token",
        ),
    ]
    for call, code, error_id in cases:
        await expect(call, code, error_id)
    assert await stubs.counts() == before
