"""Reading tickets: one, its entries, lists by unit, state, category, customer, call and due
time (keyset-paged), and the report by unit and category. Writes are in .ticket_store."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from central.servicedesk import common
from central.servicedesk import tickets as tk
from central.servicedesk.ticket_records import (
    ENTRIES,
    TICKETS,
    Entry,
    ReportRow,
    Ticket,
    entry_from_row,
    load_one,
    ticket_from_row,
)
from central.store import Store


class TicketQueries:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def now(self) -> float:
        """The time of a request (overdue lists, reports): the clock, injected in tests."""
        return self._clock()

    async def get(self, ticket_id: str) -> Ticket:
        async def attempt(conn: AsyncConnection) -> Ticket:
            return await load_one(conn, ticket_id)

        return await self._store.transaction(attempt)

    async def entries(self, ticket_id: str) -> list[Entry]:
        async def attempt(conn: AsyncConnection) -> list[Entry]:
            query = sa.select(ENTRIES).where(ENTRIES.c.ticket_id == ticket_id).order_by(ENTRIES.c.seq)
            return [entry_from_row(r._mapping) for r in (await conn.execute(query)).all()]

        return await self._store.transaction(attempt)

    async def search(
        self,
        *,
        unit: str = "",
        states: Sequence[tk.TicketState] = (),
        category: tk.Category | None = None,
        customer_id: str = "",
        call_id: str = "",
        due_before: float | None = None,
        overdue_at: float | None = None,
        page_size: int = common.DEFAULT_PAGE_SIZE,
        page_token: str = "",
    ) -> tuple[list[Ticket], str]:
        """Tickets in due order (the most urgent first), keyset-paged on (due_at, ticket_id)."""
        cursor = common.decode_token("tickets", page_token, (float, str)) if page_token else None
        wanted = list(states)
        if overdue_at is not None:
            wanted = [s for s in (wanted or tk.OPEN_STATES) if s in tk.OPEN_STATES]
            if not wanted:
                return [], ""

        async def attempt(conn: AsyncConnection) -> tuple[list[Ticket], str]:
            query = sa.select(TICKETS).order_by(TICKETS.c.due_at, TICKETS.c.ticket_id).limit(page_size + 1)
            if unit:
                query = query.where(TICKETS.c.unit == unit)
            if wanted:
                query = query.where(TICKETS.c.state.in_(sorted(s.value for s in wanted)))
            if category is not None:
                query = query.where(TICKETS.c.category == category.value)
            if customer_id:
                query = query.where(TICKETS.c.customer_id == customer_id)
            if call_id:
                query = query.where(TICKETS.c.call_id == call_id)
            bounds = [x for x in (due_before, overdue_at) if x is not None]
            if bounds:
                query = query.where(TICKETS.c.due_at < min(bounds))
            if cursor is not None:
                query = query.where(
                    sa.or_(
                        TICKETS.c.due_at > cursor[0],
                        sa.and_(TICKETS.c.due_at == cursor[0], TICKETS.c.ticket_id > cursor[1]),
                    )
                )
            rows = (await conn.execute(query)).all()
            page = [ticket_from_row(r._mapping) for r in rows[:page_size]]
            token = ""
            if len(rows) > page_size:
                token = common.encode_token("tickets", [page[-1].facts.due_at, page[-1].ticket_id])
            return page, token

        return await self._store.transaction(attempt)

    async def report(self, now: float) -> list[ReportRow]:
        """Per unit and category: open, open past due, closed by the due time, closed after it."""
        open_states = [s.value for s in tk.OPEN_STATES]
        is_open = TICKETS.c.state.in_(open_states)
        closed = TICKETS.c.state == tk.TicketState.CLOSED.value

        def count(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
            return sa.func.sum(sa.case((condition, 1), else_=0))

        query = (
            sa.select(
                TICKETS.c.unit,
                TICKETS.c.category,
                count(is_open),
                count(sa.and_(is_open, TICKETS.c.due_at < now)),
                count(sa.and_(closed, TICKETS.c.closed_at <= TICKETS.c.due_at)),
                count(sa.and_(closed, TICKETS.c.closed_at > TICKETS.c.due_at)),
            )
            .group_by(TICKETS.c.unit, TICKETS.c.category)
            .order_by(TICKETS.c.unit, TICKETS.c.category)
        )

        async def attempt(conn: AsyncConnection) -> list[ReportRow]:
            return [
                ReportRow(unit, tk.Category(category), int(o or 0), int(od or 0), int(ci or 0), int(cl or 0))
                for unit, category, o, od, ci, cl in (await conn.execute(query)).all()
            ]

        return await self._store.transaction(attempt)
