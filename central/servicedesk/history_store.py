"""The interaction history: calls (every leg in every city), tickets and notifications of a
customer, read from the tables central already keeps, merged by .timeline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from central.customers import Customer
from central.db import models
from central.servicedesk import common
from central.servicedesk.customer_store import CustomerStore
from central.servicedesk.timeline import Cursor, Item, ItemKind, merge
from central.store import Store
from vcc.errors import InvalidArgument

CALLS = models.Base.metadata.tables["calls"]
LEGS = models.Base.metadata.tables["call_legs"]
TICKETS = models.Base.metadata.tables["tickets"]
NOTIFICATIONS = models.Base.metadata.tables["notifications"]
PHONES = models.Base.metadata.tables["customer_phones"]
# Items of one time stamp that a page may have to skip past (ties are broken in Python).
TIE_ROOM = 50


class HistoryStore:
    def __init__(self, store: Store, customers: CustomerStore) -> None:
        self._store = store
        self._customers = customers

    async def history(
        self, *, customer_id: str = "", phone: str = "", page_size: int = 50, page_token: str = ""
    ) -> tuple[Customer | None, list[Item], str]:
        if bool(customer_id) == bool(phone):
            raise InvalidArgument("bad-history-key", "give customer_id or phone, one of them")
        after: Cursor | None = None
        if page_token:
            at, kind, ref = common.decode_token("history", page_token, (float, str, str))
            after = (at, kind, ref)
        customer: Customer | None = None
        if customer_id:
            customer = await self._customers.get(customer_id)
        else:
            customer = await self._store.lookup_customer(phone)
        numbers = list(customer.numbers) if customer is not None else [phone]
        # Everything at or before the cursor's time (its key holds -at).
        until = -after[0] if after is not None else None
        limit = page_size + 1 + TIE_ROOM

        async def attempt(conn: AsyncConnection) -> list[list[Item]]:
            sources = [await _calls(conn, numbers, until, limit)]
            if customer is not None:
                sources.append(await _tickets(conn, customer.customer_id, until, limit))
                sources.append(await _notifications(conn, customer.customer_id, until, limit))
            return sources

        sources = await self._store.transaction(attempt)
        page, cursor = merge(sources, page_size, after)
        token = common.encode_token("history", list(cursor)) if cursor is not None else ""
        return customer, page, token


async def _calls(
    conn: AsyncConnection, numbers: Sequence[str], until: float | None, limit: int
) -> list[Item]:
    """Calls from the customer's numbers, and calls to them (callbacks, F20: the number called)."""
    rows: dict[str, Any] = {}
    for column in (CALLS.c.ani, CALLS.c.dnis):
        # One query per column, each on its own index (an OR of the two would scan).
        query = (
            sa.select(CALLS)
            .where(column.in_(list(numbers)))
            .order_by(CALLS.c.first_event_at.desc())
            .limit(limit)
        )
        if until is not None:
            query = query.where(CALLS.c.first_event_at <= until)
        for r in (await conn.execute(query)).all():
            rows.setdefault(r.call_id, r)
    sites: dict[str, list[str]] = {}
    if rows:
        legs = sa.select(LEGS.c.call_id, LEGS.c.site_id).where(LEGS.c.call_id.in_(list(rows)))
        for call_id, site_id in (await conn.execute(legs.order_by(LEGS.c.call_id, LEGS.c.first_at))).all():
            sites.setdefault(call_id, []).append(site_id)
    return [
        Item(
            at=float(r.first_event_at),
            kind=ItemKind.CALL if r.ani in numbers else ItemKind.CALLBACK,
            ref_id=r.call_id,
            site_id=r.entry_site_id,
            sites=tuple(sites.get(r.call_id, [r.entry_site_id])),
            summary=(
                f"{r.outcome.lower() or r.state.lower()} {r.skill_group}"
                + (f", agent {r.agent_code} in {r.served_site_id}" if r.agent_code else "")
                + (f", talked {r.talk_s:.0f} s" if r.talk_s else "")
            ),
        )
        for r in rows.values()
    ]


async def _tickets(conn: AsyncConnection, customer_id: str, until: float | None, limit: int) -> list[Item]:
    query = (
        sa.select(TICKETS)
        .where(TICKETS.c.customer_id == customer_id)
        .order_by(TICKETS.c.created_at.desc())
        .limit(limit)
    )
    if until is not None:
        query = query.where(TICKETS.c.created_at <= until)
    return [
        Item(
            at=float(r.created_at),
            kind=ItemKind.TICKET,
            ref_id=r.ticket_id,
            site_id=r.origin_site_id,
            sites=tuple(s for s in (r.origin_site_id, r.unit) if s),
            summary=f"{r.category} [{r.state}] {r.title}" + (f" (call {r.call_id})" if r.call_id else ""),
        )
        for r in (await conn.execute(query)).all()
    ]


async def _notifications(
    conn: AsyncConnection, customer_id: str, until: float | None, limit: int
) -> list[Item]:
    query = (
        sa.select(NOTIFICATIONS)
        .where(NOTIFICATIONS.c.customer_id == customer_id)
        .order_by(NOTIFICATIONS.c.created_at.desc())
        .limit(limit)
    )
    if until is not None:
        query = query.where(NOTIFICATIONS.c.created_at <= until)
    return [
        Item(
            at=float(r.created_at),
            kind=ItemKind.NOTIFICATION,
            ref_id=r.notification_id,
            summary=f"{r.channel} {r.state} after {r.attempts} attempt(s): {r.subject}",
        )
        for r in (await conn.execute(query)).all()
    ]
