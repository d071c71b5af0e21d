"""Tickets at central: each change is one transaction that runs the pure state machine
(central.servicedesk.tickets) on the stored facts and writes the result with its effects."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from central.db import models
from central.servicedesk import common
from central.servicedesk import tickets as tk
from central.servicedesk.customers import mask_phone
from central.servicedesk.notification_store import Channel, enqueue
from central.servicedesk.ticket_records import (
    ENTRIES,
    TICKETS,
    Entry,
    NewTicket,
    Ticket,
    entry_from_row,
    load_one,
)
from central.store import Store
from vcc.errors import FailedPrecondition, InvalidArgument, NotFound

log = logging.getLogger(__name__)

CUSTOMERS = models.Base.metadata.tables["customers"]
MAX_TITLE = 200
MAX_TEXT = 10_000
MAX_ACTOR = 64
# Overdue tickets escalated per transaction (a backlog is worked through in several).
ESCALATE_BATCH = 200


def check_text(field: str, value: str, limit: int, *, required: bool = False) -> None:
    if required and not value.strip():
        raise InvalidArgument(f"missing-{field.replace('_', '-')}", f"{field}: required")
    if len(value) > limit:
        raise InvalidArgument(f"bad-{field.replace('_', '-')}", f"{field}: at most {limit} characters")


class TicketStore:
    def __init__(
        self,
        store: Store,
        sites: Collection[str],
        due_s: Mapping[tk.Category, float] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._sites = frozenset(sites)
        self._due_s = dict(tk.DEFAULT_DUE_S) | dict(due_s or {})
        self._clock = clock

    async def create(self, new: NewTicket, idempotency_key: str = "") -> Ticket:
        check_text("title", new.title, MAX_TITLE, required=True)
        check_text("description", new.description, MAX_TEXT)
        check_text("created_by", new.created_by, MAX_ACTOR, required=True)
        if new.origin_site_id and new.origin_site_id not in self._sites:
            raise NotFound("unknown-site", f"origin_site_id: no site {new.origin_site_id!r}")
        if len(new.call_id) > 128:
            raise InvalidArgument("bad-call-id", "call_id: at most 128 characters")
        if new.unit:
            tk.check_unit(new.unit, self._sites)
        common.check_idempotency_key(idempotency_key)
        digest = common.request_hash({**new.__dict__, "category": new.category.value})
        now = self._clock()

        async def attempt(conn: AsyncConnection) -> str:
            earlier = await common.remembered(conn, "ticket", idempotency_key, digest)
            if earlier is not None:
                return earlier
            if new.customer_id:
                await _customer_contact(conn, new.customer_id)
            ticket_id = common.new_id("T")
            facts = tk.TicketFacts(tk.TicketState.NEW, "", now + self._due_s[new.category])
            await conn.execute(
                sa.insert(TICKETS).values(
                    ticket_id=ticket_id,
                    category=new.category.value,
                    title=new.title.strip(),
                    description=new.description,
                    customer_id=new.customer_id,
                    call_id=new.call_id,
                    origin_site_id=new.origin_site_id,
                    created_by=new.created_by,
                    created_at=now,
                    entry_count=0,
                    **_facts_row(facts, now),
                )
            )
            await _add_entry(
                conn, ticket_id, "created", new.created_by, now, new.description, "", facts.state.value
            )
            if new.unit:
                await self._apply(conn, ticket_id, tk.Dispatch(new.unit), new.created_by, now, "")
            await common.remember(conn, "ticket", idempotency_key, digest, ticket_id, now=now)
            return ticket_id

        ticket_id = await self._store.transaction(attempt, write=True)
        return await self.get(ticket_id)

    async def dispatch(self, ticket_id: str, unit: str, actor: str, note: str = "") -> Ticket:
        tk.check_unit(unit, self._sites)
        return await self._change(ticket_id, tk.Dispatch(unit), actor, note)

    async def start(self, ticket_id: str, actor: str) -> Ticket:
        return await self._change(ticket_id, tk.Start(), actor, "")

    async def reply(
        self, ticket_id: str, author: str, body: str, channel: Channel | None
    ) -> tuple[Ticket, str]:
        """The reply, and the id of its queued notification ("" when `channel` is None: none)."""
        check_text("body", body, MAX_TEXT, required=True)
        queued: list[str] = []
        ticket = await self._change(ticket_id, tk.Reply(), author, body, channel=channel, queued=queued)
        return ticket, queued[0] if queued else ""

    async def close(self, ticket_id: str, actor: str) -> Ticket:
        return await self._change(ticket_id, tk.Close(), actor, "")

    async def reopen(self, ticket_id: str, actor: str, reason: str) -> Ticket:
        check_text("reason", reason, MAX_TEXT, required=True)
        return await self._change(ticket_id, None, actor, reason)

    async def add_note(self, ticket_id: str, author: str, body: str, idempotency_key: str = "") -> Entry:
        check_text("author", author, MAX_ACTOR, required=True)
        check_text("body", body, MAX_TEXT, required=True)
        common.check_idempotency_key(idempotency_key)
        digest = common.request_hash({"ticket_id": ticket_id, "author": author, "body": body})
        now = self._clock()

        async def attempt(conn: AsyncConnection) -> int:
            earlier = await common.remembered(conn, "note", idempotency_key, digest)
            if earlier is not None:
                return int(earlier.rsplit(":", 1)[1])
            await load_one(conn, ticket_id)
            seq = await _add_entry(conn, ticket_id, "note", author, now, body, "", "")
            await conn.execute(
                sa.update(TICKETS).where(TICKETS.c.ticket_id == ticket_id).values(updated_at=now)
            )
            await common.remember(conn, "note", idempotency_key, digest, f"{ticket_id}:{seq}", now=now)
            return seq

        seq = await self._store.transaction(attempt, write=True)
        entries = await self._entries(ticket_id)
        return next(e for e in entries if e.seq == seq)

    async def _entries(self, ticket_id: str) -> list[Entry]:
        async def attempt(conn: AsyncConnection) -> list[Entry]:
            query = sa.select(ENTRIES).where(ENTRIES.c.ticket_id == ticket_id).order_by(ENTRIES.c.seq)
            return [entry_from_row(r._mapping) for r in (await conn.execute(query)).all()]

        return await self._store.transaction(attempt)

    async def escalate_overdue(self, now: float) -> list[tuple[str, int]]:
        """Escalate every open ticket past its due time at `now` (given: never read from a clock
        here) that is not escalated yet; returns (ticket id, level) of those escalated."""
        done: list[tuple[str, int]] = []
        while True:

            async def attempt(conn: AsyncConnection) -> list[tuple[str, int]]:
                query = (
                    sa.select(TICKETS.c.ticket_id)
                    .where(
                        TICKETS.c.state.in_([s.value for s in tk.OPEN_STATES]),
                        TICKETS.c.due_at < now,
                        TICKETS.c.escalation == 0,
                    )
                    .order_by(TICKETS.c.due_at, TICKETS.c.ticket_id)
                    .limit(ESCALATE_BATCH)
                )
                batch: list[tuple[str, int]] = []
                for ticket_id in (await conn.execute(query)).scalars().all():
                    facts = await self._apply(conn, ticket_id, tk.Escalate(), "system", now, "")
                    batch.append((ticket_id, facts.escalation))
                return batch

            batch = await self._store.transaction(attempt, write=True)
            done.extend(batch)
            if len(batch) < ESCALATE_BATCH:
                return done

    async def _change(
        self,
        ticket_id: str,
        event: tk.Event | None,
        actor: str,
        body: str,
        *,
        channel: Channel | None = None,
        queued: list[str] | None = None,
    ) -> Ticket:
        check_text("actor", actor, MAX_ACTOR, required=True)
        check_text("note", body, MAX_TEXT)
        now = self._clock()

        async def attempt(conn: AsyncConnection) -> None:
            if queued is not None:
                queued.clear()
            change = event
            if change is None:
                # Reopen: its new due time comes from the ticket's category.
                current = await load_one(conn, ticket_id)
                change = tk.Reopen(now + self._due_s[current.category])
            await self._apply(conn, ticket_id, change, actor, now, body, channel=channel, queued=queued)

        await self._store.transaction(attempt, write=True)
        return await self.get(ticket_id)

    async def _apply(
        self,
        conn: AsyncConnection,
        ticket_id: str,
        event: tk.Event,
        actor: str,
        now: float,
        body: str,
        *,
        channel: Channel | None = None,
        queued: list[str] | None = None,
    ) -> tk.TicketFacts:
        ticket = await load_one(conn, ticket_id)
        facts, effects = tk.transition(ticket.facts, event, now)
        if not effects:
            return facts
        await conn.execute(
            sa.update(TICKETS).where(TICKETS.c.ticket_id == ticket_id).values(**_facts_row(facts, now))
        )
        for effect in effects:
            if isinstance(effect, tk.Transitioned):
                log.info(
                    "ticket %s: %s -[%s]-> %s (%s)",
                    ticket_id,
                    effect.from_state.value,
                    effect.event,
                    effect.to_state.value,
                    actor,
                )
                kind = "reply" if effect.event == "reply" else "transition"
                text = body or (f"dispatched to {facts.unit}" if effect.event == "dispatch" else "")
                await _add_entry(
                    conn, ticket_id, kind, actor, now, text, effect.from_state.value, effect.to_state.value
                )
            elif isinstance(effect, tk.NotifyCustomer):
                notification_id = await self._notify(conn, ticket, body, channel, now)
                if notification_id and queued is not None:
                    queued.append(notification_id)
            elif isinstance(effect, tk.Escalated):
                log.warning(
                    "ticket %s escalated (level %d): %.0f s overdue at %s",
                    ticket_id,
                    effect.level,
                    effect.overdue_s,
                    effect.unit or "no unit",
                )
                await _add_entry(
                    conn,
                    ticket_id,
                    "escalation",
                    actor,
                    now,
                    f"overdue by {effect.overdue_s / 3600:.1f} h; escalated to the supervisor of "
                    f"{effect.unit or 'the back office'} (level {effect.level})",
                    facts.state.value,
                    facts.state.value,
                )
        return facts

    async def _notify(
        self, conn: AsyncConnection, ticket: Ticket, body: str, channel: Channel | None, now: float
    ) -> str:
        if channel is None:
            return ""
        if not ticket.customer_id:
            raise FailedPrecondition("no-customer", "the ticket has no customer to notify (channel NONE)")
        email, phone = await _customer_contact(conn, ticket.customer_id)
        address = email if channel == Channel.EMAIL else phone
        if not address:
            raise FailedPrecondition(
                f"no-{channel.value}-address", f"customer {ticket.customer_id} has no {channel.value} address"
            )
        notification_id = await enqueue(
            conn,
            ticket_id=ticket.ticket_id,
            customer_id=ticket.customer_id,
            channel=channel,
            address=address,
            subject=f"[{ticket.ticket_id}] 答复 / Reply: {ticket.title}",
            body=body,
            now=now,
        )
        shown = mask_phone(address) if channel == Channel.SMS else address.split("@")[0][:1] + "***"
        log.info("ticket %s: reply queued for %s %s", ticket.ticket_id, channel.value, shown)
        return notification_id

    async def get(self, ticket_id: str) -> Ticket:
        async def attempt(conn: AsyncConnection) -> Ticket:
            return await load_one(conn, ticket_id)

        return await self._store.transaction(attempt)

    def default_channel(self, email: str, phone: str) -> Channel | None:
        return Channel.EMAIL if email else Channel.SMS if phone else None

    async def contact(self, ticket_id: str) -> tuple[str, str]:
        """The (email, phone) of a ticket's customer, ("", "") without one."""

        async def attempt(conn: AsyncConnection) -> tuple[str, str]:
            ticket = await load_one(conn, ticket_id)
            return await _customer_contact(conn, ticket.customer_id) if ticket.customer_id else ("", "")

        return await self._store.transaction(attempt)


async def _customer_contact(conn: AsyncConnection, customer_id: str) -> tuple[str, str]:
    row = (
        await conn.execute(
            sa.select(CUSTOMERS.c.email, CUSTOMERS.c.phone).where(CUSTOMERS.c.customer_id == customer_id)
        )
    ).first()
    if row is None:
        raise NotFound("customer-not-found", f"customer_id: no customer {customer_id!r}")
    return str(row.email), str(row.phone)


async def _add_entry(
    conn: AsyncConnection,
    ticket_id: str,
    kind: str,
    author: str,
    at: float,
    body: str,
    from_state: str,
    to_state: str,
) -> int:
    # The counter on the ticket row numbers the entries; its update also serializes writers.
    seq = (
        await conn.execute(
            sa.update(TICKETS)
            .where(TICKETS.c.ticket_id == ticket_id)
            .values(entry_count=TICKETS.c.entry_count + 1)
            .returning(TICKETS.c.entry_count)
        )
    ).scalar_one()
    await conn.execute(
        sa.insert(ENTRIES).values(
            ticket_id=ticket_id,
            seq=seq,
            kind=kind,
            author=author,
            at=at,
            body=body,
            from_state=from_state,
            to_state=to_state,
        )
    )
    return int(seq)


def _facts_row(f: tk.TicketFacts, now: float) -> dict[str, object]:
    return {
        "state": f.state.value,
        "unit": f.unit,
        "due_at": f.due_at,
        "escalation": f.escalation,
        "replied_at": f.replied_at,
        "closed_at": f.closed_at,
        "reopen_count": f.reopen_count,
        "updated_at": now,
    }
