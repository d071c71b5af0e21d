"""Protobuf at the edge: vcc.v1.servicedesk messages to and from the service desk's dataclasses."""

from __future__ import annotations

from typing import Literal

from central.customers import Customer
from central.servicedesk import tickets as tk
from central.servicedesk.customers import mask_phone
from central.servicedesk.kb_store import Article
from central.servicedesk.notification_store import Channel, Notification
from central.servicedesk.ticket_records import Entry, ReportRow, Ticket
from central.servicedesk.timeline import Item
from vcc.errors import InvalidArgument
from vcc.rpc import timestamp
from vcc.v1 import common_pb2
from vcc.v1 import servicedesk_pb2 as pb

_STATE = {s: pb.TicketState.Value(f"TICKET_STATE_{s.name}") for s in tk.TicketState}
_STATE_BACK = {v: k for k, v in _STATE.items()}
_CATEGORY = {c: pb.TicketCategory.Value(f"TICKET_CATEGORY_{c.name}") for c in tk.Category}
_CATEGORY_BACK = {v: k for k, v in _CATEGORY.items()}


def customer_from_proto(msg: common_pb2.Customer) -> Customer:
    phones = tuple(msg.phones) or ((msg.phone,) if msg.phone else ())
    return Customer(
        customer_id=msg.customer_id,
        phone=phones[0] if phones else "",
        phones=phones,
        name=msg.name,
        level=msg.level or "normal",
        city=msg.city,
        notes=msg.notes,
        account=msg.account,
        address=msg.address,
        email=msg.email,
    )


def category_from_proto(value: int, *, required: bool) -> tk.Category | None:
    if value == pb.TICKET_CATEGORY_UNSPECIFIED and not required:
        return None
    if value not in _CATEGORY_BACK:
        raise InvalidArgument("bad-category", "category: complaint, suggestion, inquiry or work order")
    return _CATEGORY_BACK[value]  # type: ignore[index]


def state_from_proto(value: int) -> tk.TicketState:
    if value not in _STATE_BACK:
        raise InvalidArgument("bad-state", "states: known, specified ticket states")
    return _STATE_BACK[value]  # type: ignore[index]


# The reply's channel left to central: e-mail when the customer has an address, else SMS.
DEFAULT_CHANNEL: Literal["default"] = "default"


def channel_from_proto(value: int) -> Channel | Literal["default"] | None:
    """A channel; None for NONE; "default" for UNSPECIFIED (chosen from the customer's contacts)."""
    if value == pb.NOTIFICATION_CHANNEL_EMAIL:
        return Channel.EMAIL
    if value == pb.NOTIFICATION_CHANNEL_SMS:
        return Channel.SMS
    if value == pb.NOTIFICATION_CHANNEL_NONE:
        return None
    if value == pb.NOTIFICATION_CHANNEL_UNSPECIFIED:
        return DEFAULT_CHANNEL
    raise InvalidArgument("bad-channel", "channel: unspecified, email, sms or none")


def ticket_to_proto(t: Ticket) -> pb.Ticket:
    f = t.facts
    msg = pb.Ticket(
        ticket_id=t.ticket_id,
        category=_CATEGORY[t.category],
        state=_STATE[f.state],
        unit=f.unit,
        title=t.title,
        description=t.description,
        customer_id=t.customer_id,
        call_id=t.call_id,
        origin_site_id=t.origin_site_id,
        created_by=t.created_by,
        created_at=timestamp(t.created_at),
        updated_at=timestamp(t.updated_at),
        due_at=timestamp(f.due_at),
        escalation=f.escalation,
        reopen_count=f.reopen_count,
    )
    if f.replied_at is not None:
        msg.replied_at.CopyFrom(timestamp(f.replied_at))
    if f.closed_at is not None:
        msg.closed_at.CopyFrom(timestamp(f.closed_at))
    return msg


def entry_to_proto(e: Entry) -> pb.TicketEntry:
    return pb.TicketEntry(
        seq=e.seq,
        kind=e.kind,
        author=e.author,
        at=timestamp(e.at),
        body=e.body,
        from_state=_STATE[tk.TicketState(e.from_state)] if e.from_state else pb.TICKET_STATE_UNSPECIFIED,
        to_state=_STATE[tk.TicketState(e.to_state)] if e.to_state else pb.TICKET_STATE_UNSPECIFIED,
    )


def notification_to_proto(n: Notification) -> pb.Notification:
    if n.channel == Channel.SMS:
        channel, address = pb.NOTIFICATION_CHANNEL_SMS, mask_phone(n.address)
    else:
        user, _, domain = n.address.partition("@")
        channel, address = pb.NOTIFICATION_CHANNEL_EMAIL, f"{user[:1]}***@{domain}"
    msg = pb.Notification(
        notification_id=n.notification_id,
        ticket_id=n.ticket_id,
        customer_id=n.customer_id,
        channel=channel,
        address=address,
        subject=n.subject,
        state=n.state.value,
        attempts=n.attempts,
        created_at=timestamp(n.created_at),
        last_error=n.last_error,
    )
    if n.done_at is not None:
        msg.done_at.CopyFrom(timestamp(n.done_at))
    return msg


def report_row_to_proto(r: ReportRow) -> pb.TicketReportRow:
    return pb.TicketReportRow(
        unit=r.unit,
        category=_CATEGORY[r.category],
        open=r.open,
        overdue=r.overdue,
        closed_in_time=r.closed_in_time,
        closed_late=r.closed_late,
    )


def article_to_proto(a: Article) -> pb.Article:
    msg = pb.Article(
        article_id=a.article_id,
        title=a.title,
        body=a.body,
        category=a.category,
        service=a.service,
        tags=list(a.tags),
        state=a.state.value,
        question=a.question,
        proposed_by=a.proposed_by,
        reviewed_by=a.reviewed_by,
        created_at=timestamp(a.created_at),
        version=a.version,
    )
    if a.published_at is not None:
        msg.published_at.CopyFrom(timestamp(a.published_at))
    return msg


def item_to_proto(i: Item) -> pb.HistoryItem:
    return pb.HistoryItem(
        at=timestamp(i.at),
        kind=i.kind.value,
        ref_id=i.ref_id,
        site_id=i.site_id,
        sites=list(i.sites),
        summary=i.summary,
    )
