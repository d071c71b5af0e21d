"""The service desk on SQLite and PostgreSQL: whole ticket lifecycles with a real SMTP server,
optimistic customer edits, knowledge search, history, the notification outbox."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

import pytest

from central.customers import Customer
from central.records import EventKind, Outcome
from central.servicedesk import tickets as tk
from central.servicedesk.customer_store import StaleVersion
from central.servicedesk.desk import ServiceDesk
from central.servicedesk.kb_store import Article, ArticleState
from central.servicedesk.notification_store import Channel, NotificationState
from central.servicedesk.notify import EmailSender, HttpSmsSender
from central.servicedesk.settings import DeskSettings
from central.servicedesk.ticket_records import NewTicket
from central.servicedesk.timeline import ItemKind
from central.store import Store
from tests.central.desk_support import Clock, eventually, sms_gateway, smtp_server
from tests.central.factories import T0, ev, overflowed_call
from tests.central.province import province
from vcc.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

HOUR = 3600.0
FAST_RETRIES = DeskSettings(max_attempts=3, retry_base_s=0.01, retry_max_s=0.05)


async def desk_on(store: Store, clock: Clock, **kwargs: object) -> ServiceDesk:
    await store.sync_province(province())
    return ServiceDesk(store, ["gz", "sz"], clock=clock, **kwargs)  # type: ignore[arg-type]


def caller(phone: str = "13800000002", email: str = "zhang@example.com") -> Customer:
    return Customer(
        customer_id="",
        phone="",
        phones=(phone, "020" + phone[-8:]),
        name="张三 Zhang San",
        email=email,
        account="ACC-7",
        address="广州市天河区体育西路 1 号",
    )


async def test_ticket_lifecycle_across_cities_with_email(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="central")
    clock = Clock(T0 + 100)
    async with smtp_server() as (inbox, smtp):
        desk = await desk_on(store, clock, settings=FAST_RETRIES, senders={Channel.EMAIL: EmailSender(smtp)})
        # A call that entered in Guangzhou and was answered in Shenzhen.
        await store.ingest("gz", [e for e in overflowed_call("call-1") if e.site_id == "gz"])
        await store.ingest("sz", [e for e in overflowed_call("call-1") if e.site_id == "sz"])
        customer = await desk.customers.create(caller())

        # Raised by the Guangzhou agent from the call.
        ticket = await desk.tickets.create(
            NewTicket(
                category=tk.Category.COMPLAINT,
                title="包裹延误 parcel late",
                description="寄往深圳的包裹三天未到",
                customer_id=customer.customer_id,
                call_id="call-1",
                origin_site_id="gz",
                created_by="0101",
            )
        )
        assert (ticket.state, ticket.facts.due_at) == (tk.TicketState.NEW, T0 + 100 + 48 * HOUR)

        clock.now += 60
        ticket = await desk.tickets.dispatch(ticket.ticket_id, "city:sz", "0101", "深圳处理")
        assert (ticket.state, ticket.facts.unit) == (tk.TicketState.ASSIGNED, "city:sz")
        # Shenzhen sees it in its unit's list and takes it.
        listed, _ = await desk.ticket_queries.search(unit="city:sz", states=[tk.TicketState.ASSIGNED])
        assert [t.ticket_id for t in listed] == [ticket.ticket_id]
        ticket = await desk.tickets.start(ticket.ticket_id, "0201")
        note = await desk.tickets.add_note(ticket.ticket_id, "0201", "联系了快递公司", idempotency_key="n-1")
        # Sent again after a lost reply: added once.
        assert (
            await desk.tickets.add_note(ticket.ticket_id, "0201", "联系了快递公司", idempotency_key="n-1")
            == note
        )
        clock.now += 3600
        ticket, notification_id = await desk.tickets.reply(
            ticket.ticket_id, "0201", "您的包裹已找到，明天送达。", Channel.EMAIL
        )
        assert ticket.state == tk.TicketState.REPLIED and notification_id

        await desk.dispatcher.run_once()
        assert len(inbox.messages) == 1
        message = inbox.messages[0]
        assert message["To"] == "zhang@example.com"
        assert ticket.ticket_id in str(message["Subject"])
        assert "您的包裹已找到" in message.get_content()
        assert inbox.envelopes[0][1] == ["zhang@example.com"]
        (sent,) = await desk.notifications.of_ticket(ticket.ticket_id)
        assert (sent.state, sent.attempts) == (NotificationState.SENT, 1)

        clock.now += 60
        ticket = await desk.tickets.close(ticket.ticket_id, "back-office")
        assert ticket.state == tk.TicketState.CLOSED and ticket.facts.closed_at == clock.now
        clock.now += 60
        ticket = await desk.tickets.reopen(ticket.ticket_id, "back-office", "客户说仍未收到")
        assert ticket.state == tk.TicketState.REOPENED
        assert (ticket.facts.due_at, ticket.facts.reopen_count) == (clock.now + 48 * HOUR, 1)
        with pytest.raises(FailedPrecondition) as info:
            await desk.tickets.close(ticket.ticket_id, "back-office")
        assert info.value.error_id == "bad-transition"

        entries = await desk.ticket_queries.entries(ticket.ticket_id)
        assert [(e.kind, e.from_state, e.to_state) for e in entries] == [
            ("created", "", "new"),
            ("transition", "new", "assigned"),
            ("transition", "assigned", "in_progress"),
            ("note", "", ""),
            ("reply", "in_progress", "replied"),
            ("transition", "replied", "closed"),
            ("transition", "closed", "reopened"),
        ]
        assert [e.author for e in entries] == [
            "0101",
            "0101",
            "0201",
            "0201",
            "0201",
            "back-office",
            "back-office",
        ]

        # Shenzhen calls the customer back (an outbound call to their number).
        await store.ingest(
            "sz",
            [
                ev(
                    EventKind.ARRIVED,
                    7200.0,
                    1,
                    call_id="callback-1",
                    site="sz",
                    ani="95185",
                    dnis="13800000002",
                ),
                ev(EventKind.ENDED, 7260.0, 2, call_id="callback-1", site="sz", outcome=Outcome.ANSWERED),
            ],
        )
        # The customer's time line, by the number they called from: the call with both cities.
        found, items, _ = await desk.history.history(phone="13800000002")
        assert found is not None and found.customer_id == customer.customer_id
        kinds = {(i.kind, i.ref_id) for i in items}
        assert kinds == {
            (ItemKind.CALL, "call-1"),
            (ItemKind.TICKET, ticket.ticket_id),
            (ItemKind.NOTIFICATION, notification_id),
            (ItemKind.CALLBACK, "callback-1"),
        }
        call = next(i for i in items if i.kind == ItemKind.CALL)
        assert call.sites == ("gz", "sz")
        assert [i.at for i in items] == sorted((i.at for i in items), reverse=True)
        # Paged, the same items in the same order.
        paged, token = [], ""
        while True:
            _, page, token = await desk.history.history(phone="13800000002", page_size=1, page_token=token)
            paged.extend(page)
            if not token:
                break
        assert paged == items
    # Numbers are masked in the logs.
    assert "13800000002" not in caplog.text and "138****0002" in caplog.text


async def test_overdue_escalation_with_time_given(store: Store) -> None:
    clock = Clock(T0)
    desk = await desk_on(store, clock, settings=DeskSettings(due_hours={tk.Category.INQUIRY: 2}))
    inquiry = await desk.tickets.create(
        NewTicket(tk.Category.INQUIRY, "查询邮政编码", created_by="back-office", unit="dept:post")
    )
    complaint = await desk.tickets.create(
        NewTicket(tk.Category.COMPLAINT, "投诉", created_by="0101", unit="city:gz")
    )
    assert inquiry.facts.due_at == T0 + 2 * HOUR

    # The clock of the store does not move: only the time handed to the escalation counts.
    assert await desk.tickets.escalate_overdue(T0 + 2 * HOUR) == []
    assert await desk.tickets.escalate_overdue(T0 + 3 * HOUR) == [(inquiry.ticket_id, 1)]
    assert await desk.tickets.escalate_overdue(T0 + 4 * HOUR) == []  # once per episode
    assert await desk.tickets.escalate_overdue(T0 + 49 * HOUR) == [(complaint.ticket_id, 1)]
    entries = await desk.ticket_queries.entries(inquiry.ticket_id)
    assert entries[-1].kind == "escalation" and entries[-1].at == T0 + 3 * HOUR
    assert (await desk.tickets.get(inquiry.ticket_id)).facts.escalation == 1

    overdue, _ = await desk.ticket_queries.search(overdue_at=T0 + 3 * HOUR)
    assert [t.ticket_id for t in overdue] == [inquiry.ticket_id]
    # Replied and closed after its due time: closed late; the complaint still open and overdue.
    await desk.tickets.reply(inquiry.ticket_id, "back-office", "邮编是 510000", None)
    clock.now = T0 + 5 * HOUR
    await desk.tickets.close(inquiry.ticket_id, "back-office")
    rows = {(r.unit, r.category): r for r in await desk.ticket_queries.report(T0 + 50 * HOUR)}
    post, gz = rows[("dept:post", tk.Category.INQUIRY)], rows[("city:gz", tk.Category.COMPLAINT)]
    assert (post.open, post.overdue, post.closed_in_time, post.closed_late) == (0, 0, 0, 1)
    assert (gz.open, gz.overdue, gz.closed_in_time, gz.closed_late) == (1, 1, 0, 0)


async def test_two_agents_edit_one_customer_the_stale_edit_is_refused(store: Store) -> None:
    desk = await desk_on(store, Clock(T0))
    created = await desk.customers.create(caller())
    # Both agents read version 1 ...
    first = await desk.customers.get(created.customer_id)
    second = await desk.customers.get(created.customer_id)
    # ... and save at the same moment.
    results = await asyncio.gather(
        desk.customers.update(replace(first, address="深圳市福田区 2 号"), first.version),
        desk.customers.update(replace(second, notes="prefers e-mail"), second.version),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, Customer)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and len(lost) == 1
    assert isinstance(lost[0], StaleVersion) and lost[0].error_id == "stale-version"
    stored = await desk.customers.get(created.customer_id)
    assert stored == won[0] and stored.version == 2
    # Nothing lost: the loser reads again and re-applies its change on top of the winner's.
    loser_change = (
        {"notes": "prefers e-mail"} if won[0].address != created.address else {"address": "深圳市福田区 2 号"}
    )
    again = await desk.customers.update(replace(stored, **loser_change), stored.version)
    assert (again.version, again.address, again.notes) == (3, "深圳市福田区 2 号", "prefers e-mail")


async def test_customers_create_search_numbers_and_import(store: Store) -> None:
    desk = await desk_on(store, Clock(T0))
    c = await desk.customers.create(caller(), idempotency_key="k-1")
    assert await desk.customers.create(caller(), idempotency_key="k-1") == c  # a retry: same customer
    with pytest.raises(AlreadyExists) as info:
        await desk.customers.create(caller(phone="13900000009"), idempotency_key="k-1")
    assert info.value.error_id == "idempotency-key-reused"
    with pytest.raises(AlreadyExists) as info:
        await desk.customers.create(caller())  # its numbers belong to c
    assert info.value.error_id == "phone-taken"
    # The screen pop finds the customer by any of their numbers.
    for number in c.phones:
        found = await store.lookup_customer(number)
        assert found is not None and found.customer_id == c.customer_id
    for query in ({"phone": "0200000"}, {"name": "Zhang"}, {"account": "ACC-7"}, {"address": "体育西路"}):
        hits, _ = await desk.customers.search(**query)  # type: ignore[arg-type]
        assert [h.customer_id for h in hits] == [c.customer_id], query
    assert (await desk.customers.search(name="50%_"))[0] == []

    result = await desk.customers.import_rows(
        [
            (2, Customer("imp-1", "", "李四", phones=("13900000001",))),
            (3, Customer("imp-2", "", "", phones=("13900000002",))),  # no name
            (4, Customer("imp-3", "", "王五", phones=("13800000002",))),  # c's number
            (5, Customer("imp-1", "", "李四 (new name)", phones=("13900000001",))),  # update
        ]
    )
    assert (result.created, result.updated) == (1, 1)
    assert [(r.line, r.error_id) for r in result.rejected] == [(3, "bad-name"), (4, "phone-taken")]
    assert (await desk.customers.get("imp-1")).name == "李四 (new name)"
    with pytest.raises(NotFound):
        await desk.customers.get("imp-2")

    many = [Customer(f"p-{i:03d}", "", f"Page {i:03d}", phones=(f"1370000{i:04d}",)) for i in range(7)]
    for m in many:
        await desk.customers.create(m)
    seen: list[str] = []
    token = ""
    while True:
        page, token = await desk.customers.search(name="Page", page_size=3, page_token=token)
        seen.extend(p.customer_id for p in page)
        if not token:
            break
    assert seen == [m.customer_id for m in many]


ARTICLES = [
    ("查询邮政编码的方法", "登录中国邮政网站，在首页输入详细地址即可查询邮政编码。", "postal", ["邮编"]),
    ("邮政储蓄营业时间", "邮政储蓄网点周一至周日营业。", "banking", []),
    ("包裹丢失怎么办", "请拨打 185 登记，我们会在三个工作日内答复。", "parcel", ["投诉"]),
    (
        "How to track a parcel",
        "Enter the tracking number on the website to track parcels.",
        "parcel",
        ["tracking"],
    ),
    ("Postal codes of Guangdong", "Guangzhou 510000, Shenzhen 518000.", "postal", []),
]


async def test_knowledge_search_chinese_and_english_ranked(store: Store) -> None:
    desk = await desk_on(store, Clock(T0))
    ids = {}
    for title, body, service, tags in ARTICLES:
        proposed = await desk.knowledge.propose(
            Article("", title, body, category="faq", service=service, tags=tuple(tags), proposed_by="0101")
        )
        ids[title] = proposed.article_id
    assert await _titles(desk, "邮政编码") == []  # proposed articles are not found before review
    for article_id in ids.values():
        published = await desk.knowledge.publish(article_id, "reviewer-1")
        assert published.state == ArticleState.PUBLISHED and published.reviewed_by == "reviewer-1"

    # 邮政编码 is a word inside 查询邮政编码的方法: found, and ranked above 邮政储蓄 (only 邮政).
    assert await _titles(desk, "邮政编码") == ["查询邮政编码的方法", "邮政储蓄营业时间"]
    assert (await _titles(desk, "怎么查询邮编"))[0] == "查询邮政编码的方法"
    assert await _titles(desk, "track parcels") == ["How to track a parcel"]
    assert (await _titles(desk, "postal code"))[0] == "Postal codes of Guangdong"
    assert await _titles(desk, "邮政", service="banking") == ["邮政储蓄营业时间"]
    assert await _titles(desk, "火星") == []
    with pytest.raises(InvalidArgument) as info:
        await desk.knowledge.search("the of")
    assert info.value.error_id == "bad-query"

    # A proposal can be rejected once; a rejected article is never published.
    extra = await desk.knowledge.propose(
        Article("", "重复的问题", "重复", proposed_by="0102", question="怎么寄信?")
    )
    await desk.knowledge.reject(extra.article_id, "reviewer-1")
    with pytest.raises(FailedPrecondition):
        await desk.knowledge.publish(extra.article_id, "reviewer-1")
    queue, _ = await desk.knowledge.list_articles(state=ArticleState.REJECTED)
    assert [a.article_id for a in queue] == [extra.article_id]


async def _titles(desk: ServiceDesk, query: str, **filters: str) -> list[str]:
    return [a.title for a, _ in await desk.knowledge.search(query, **filters)]


async def test_a_failing_sender_does_not_block_the_others(store: Store) -> None:
    """The SMS gateway hangs: e-mail is delivered meanwhile. Then it refuses every request: the
    SMS end failed after the bounded attempts, each one recorded; back, it delivers again."""
    clock = Clock(T0)
    async with smtp_server() as (inbox, smtp):
        with sms_gateway() as (gateway, sms_settings):
            gateway.mode = "hang"
            sms = HttpSmsSender(sms_settings(60.0))
            desk = await desk_on(
                store,
                clock,
                settings=FAST_RETRIES,
                senders={Channel.EMAIL: EmailSender(smtp), Channel.SMS: sms},
            )
            by_sms = await desk.customers.create(caller(phone="13700000001", email=""))
            by_mail = await desk.customers.create(caller(phone="13700000002"))
            replies = []
            for customer, channel in ((by_sms, Channel.SMS), (by_mail, Channel.EMAIL), (by_sms, Channel.SMS)):
                t = await desk.tickets.create(
                    NewTicket(
                        tk.Category.INQUIRY, "问题", customer_id=customer.customer_id, created_by="0101"
                    )
                )
                replies.append((await desk.tickets.reply(t.ticket_id, "0101", "答复", channel))[1])

            await desk.dispatcher.kick()

            # E-mail is through while both SMS wait for the hung gateway.
            async def mail_recorded() -> bool:
                sent = (await desk.notifications.get([replies[1]]))[replies[1]]
                return sent.state == NotificationState.SENT

            await eventually(mail_recorded)
            await eventually(lambda: len(gateway.received) == 2)
            assert len(inbox.messages) == 1
            states = await desk.notifications.get(replies)
            assert [states[r].state for r in (replies[0], replies[2])] == [NotificationState.PENDING] * 2
            assert [states[r].attempts for r in (replies[0], replies[2])] == [0, 0]

            gateway.mode = "fail"
            gateway.release.set()
            await desk.dispatcher.drain()
            states = await desk.notifications.get(replies)
            for sms_id in (replies[0], replies[2]):
                assert (states[sms_id].state, states[sms_id].attempts) == (NotificationState.FAILED, 3)
                attempts = await desk.notifications.attempts_of(sms_id)
                assert [(n, ok) for n, _, ok, _ in attempts] == [(1, False), (2, False), (3, False)]
                assert all("HTTP 503" in detail for _, _, _, detail in attempts)
            assert len(gateway.received) == 6
            assert gateway.received[0]["auth"] == "Bearer t0ken"
            # Failed for good: a later look at the outbox does not send them again.
            assert await desk.dispatcher.kick() == 0

            # The gateway back: a new SMS goes through at the first attempt.
            gateway.mode = "ok"
            t = await desk.tickets.create(
                NewTicket(tk.Category.INQUIRY, "再问", customer_id=by_sms.customer_id, created_by="0101")
            )
            _, sms_id = await desk.tickets.reply(t.ticket_id, "0101", "好的", Channel.SMS)
            await desk.dispatcher.run_once()
            assert (await desk.notifications.get([sms_id]))[sms_id].state == NotificationState.SENT
            assert gateway.received[-1]["body"]["to"] == "13700000001"
            await sms.close()


class NeverAnswers:
    """A sender whose server never answers (a hung connection)."""

    async def send(self, notification: object) -> str:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_an_attempt_with_no_answer_times_out_and_counts(store: Store) -> None:
    settings = DeskSettings(max_attempts=2, retry_base_s=0.01, retry_max_s=0.01, attempt_timeout_s=0.05)
    desk = await desk_on(store, Clock(T0), settings=settings, senders={Channel.SMS: NeverAnswers()})
    customer = await desk.customers.create(caller(email=""))
    t = await desk.tickets.create(
        NewTicket(tk.Category.INQUIRY, "q", customer_id=customer.customer_id, created_by="x")
    )
    _, notification_id = await desk.tickets.reply(t.ticket_id, "x", "a", Channel.SMS)
    await desk.dispatcher.run_once()
    assert (await desk.notifications.get([notification_id]))[
        notification_id
    ].state == NotificationState.FAILED
    attempts = await desk.notifications.attempts_of(notification_id)
    assert [(n, ok, detail) for n, _, ok, detail in attempts] == [
        (1, False, "no answer in 0.05 s"),
        (2, False, "no answer in 0.05 s"),
    ]


async def test_reply_needs_an_address(store: Store) -> None:
    desk = await desk_on(store, Clock(T0))
    customer = await desk.customers.create(caller(email=""))
    t = await desk.tickets.create(
        NewTicket(tk.Category.INQUIRY, "q", customer_id=customer.customer_id, created_by="x")
    )
    with pytest.raises(FailedPrecondition) as info:
        await desk.tickets.reply(t.ticket_id, "x", "a", Channel.EMAIL)
    assert info.value.error_id == "no-email-address"
    assert (await desk.tickets.get(t.ticket_id)).state == tk.TicketState.NEW  # nothing changed
    assert await desk.notifications.of_ticket(t.ticket_id) == []


async def test_the_databases_ranking_is_the_pure_bm25(store: Store) -> None:
    """Two sources: the SQL that ranks in the database, and textsearch.bm25 over the same index
    rows read back; the order and the scores agree."""
    import sqlalchemy as sa

    from central.servicedesk import textsearch

    desk = await desk_on(store, Clock(T0))
    for title, body, service, tags in ARTICLES:
        article = await desk.knowledge.propose(
            Article("", title, body, service=service, tags=tuple(tags), proposed_by="0101")
        )
        await desk.knowledge.publish(article.article_id, "r")

    async def index(conn: sa.ext.asyncio.AsyncConnection) -> tuple[list[Any], list[Any]]:
        terms = (await conn.execute(sa.text("select term, article_id, tf from kb_terms"))).all()
        lengths = (await conn.execute(sa.text("select article_id, length from kb_articles"))).all()
        return list(terms), list(lengths)

    terms, lengths = await store.transaction(index)
    postings: dict[str, dict[str, int]] = {}
    for term, article_id, tf in terms:
        postings.setdefault(term, {})[article_id] = tf
    doc_len = {a: n for a, n in lengths}
    for query in ("邮政编码", "怎么查询邮编", "track parcels", "postal code 邮政"):
        expected = textsearch.bm25(
            textsearch.query_terms(query),
            postings,
            doc_freq={t: len(p) for t, p in postings.items()},
            doc_len=doc_len,
            n_docs=len(doc_len),
            avg_len=sum(doc_len.values()) / len(doc_len),
        )
        got = [(a.article_id, score) for a, score in await desk.knowledge.search(query, limit=100)]
        assert [a for a, _ in got] == [a for a, _ in expected], query
        assert [round(s, 9) for _, s in got] == [round(s, 9) for _, s in expected], query


async def test_two_replies_at_once_one_wins_one_notification(store: Store) -> None:
    desk = await desk_on(store, Clock(T0))
    customer = await desk.customers.create(caller())
    t = await desk.tickets.create(
        NewTicket(tk.Category.COMPLAINT, "投诉", customer_id=customer.customer_id, created_by="0101")
    )
    results = await asyncio.gather(
        desk.tickets.reply(t.ticket_id, "0101", "答复一", Channel.EMAIL),
        desk.tickets.reply(t.ticket_id, "0201", "答复二", Channel.EMAIL),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(refused) == 1 and isinstance(refused[0], FailedPrecondition)
    assert refused[0].error_id == "bad-transition"
    assert len(await desk.notifications.of_ticket(t.ticket_id)) == 1
    assert [e.kind for e in await desk.ticket_queries.entries(t.ticket_id)] == ["created", "reply"]


async def test_the_outbox_keeps_what_it_could_not_send(store: Store) -> None:
    """No e-mail sender configured: the notification waits, pending; a central that has one
    (after a restart with VCC_SMTP_HOST set) sends it."""
    clock = Clock(T0)
    desk = await desk_on(store, clock, senders={})
    customer = await desk.customers.create(caller())
    t = await desk.tickets.create(
        NewTicket(tk.Category.INQUIRY, "q", customer_id=customer.customer_id, created_by="x")
    )
    _, notification_id = await desk.tickets.reply(t.ticket_id, "x", "a", Channel.EMAIL)
    assert await desk.dispatcher.kick() == 0
    assert (await desk.notifications.get([notification_id]))[
        notification_id
    ].state == NotificationState.PENDING
    async with smtp_server() as (inbox, smtp):
        restarted = await desk_on(store, clock, senders={Channel.EMAIL: EmailSender(smtp)})
        await restarted.dispatcher.run_once()
        assert len(inbox.messages) == 1
    assert (await desk.notifications.get([notification_id]))[notification_id].state == NotificationState.SENT
