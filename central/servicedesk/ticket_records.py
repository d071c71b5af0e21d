"""Tickets as central keeps them: the records, and reading them from their rows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from central.db import models
from central.servicedesk import tickets as tk
from vcc.errors import NotFound

TICKETS = models.Base.metadata.tables["tickets"]
ENTRIES = models.Base.metadata.tables["ticket_entries"]


@dataclass(frozen=True)
class Ticket:
    ticket_id: str
    category: tk.Category
    facts: tk.TicketFacts
    title: str
    description: str
    customer_id: str
    call_id: str
    origin_site_id: str
    created_by: str
    created_at: float
    updated_at: float

    @property
    def state(self) -> tk.TicketState:
        return self.facts.state


@dataclass(frozen=True)
class Entry:
    ticket_id: str
    seq: int
    kind: str
    author: str
    at: float
    body: str
    from_state: str = ""
    to_state: str = ""


@dataclass(frozen=True)
class NewTicket:
    category: tk.Category
    title: str
    description: str = ""
    customer_id: str = ""
    call_id: str = ""
    origin_site_id: str = ""
    created_by: str = ""
    unit: str = ""


@dataclass(frozen=True)
class ReportRow:
    unit: str
    category: tk.Category
    open: int
    overdue: int
    closed_in_time: int
    closed_late: int


async def load_one(conn: AsyncConnection, ticket_id: str) -> Ticket:
    row = (await conn.execute(sa.select(TICKETS).where(TICKETS.c.ticket_id == ticket_id))).first()
    if row is None:
        raise NotFound("ticket-not-found", f"no ticket {ticket_id!r}")
    return ticket_from_row(row._mapping)


def ticket_from_row(row: Mapping[Any, Any]) -> Ticket:
    return Ticket(
        ticket_id=str(row["ticket_id"]),
        category=tk.Category(str(row["category"])),
        facts=tk.TicketFacts(
            state=tk.TicketState(str(row["state"])),
            unit=str(row["unit"]),
            due_at=float(row["due_at"]),
            escalation=int(row["escalation"]),
            replied_at=row["replied_at"],
            closed_at=row["closed_at"],
            reopen_count=int(row["reopen_count"]),
        ),
        title=str(row["title"]),
        description=str(row["description"]),
        customer_id=str(row["customer_id"]),
        call_id=str(row["call_id"]),
        origin_site_id=str(row["origin_site_id"]),
        created_by=str(row["created_by"]),
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
    )


def entry_from_row(row: Mapping[Any, Any]) -> Entry:
    return Entry(
        ticket_id=str(row["ticket_id"]),
        seq=int(row["seq"]),
        kind=str(row["kind"]),
        author=str(row["author"]),
        at=float(row["at"]),
        body=str(row["body"]),
        from_state=str(row["from_state"]),
        to_state=str(row["to_state"]),
    )
