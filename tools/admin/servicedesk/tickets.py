"""`vcc tickets`: create, show, dispatch, start, reply, close, reopen, note, list, report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tools.admin.servicedesk.session import (
    DEADLINE_S,
    ByOpt,
    CentralOpt,
    ConfigOpt,
    JsonOpt,
    call_central,
    fail,
    show,
    when,
)
from tools.console import print_table

if TYPE_CHECKING:
    pass

tickets_app = typer.Typer(
    help="Tickets: complaints, suggestions, inquiries, work orders (F31).", no_args_is_help=True
)


TICKET_COLUMNS = ["id", "category", "state", "unit", "title", "customer", "call", "due", "esc"]


def _ticket_rows(tickets: Any) -> list[list[Any]]:
    from vcc.v1 import servicedesk_pb2 as pb

    return [
        [
            t.ticket_id,
            pb.TicketCategory.Name(t.category).removeprefix("TICKET_CATEGORY_").lower(),
            pb.TicketState.Name(t.state).removeprefix("TICKET_STATE_").lower(),
            t.unit or "-",
            t.title,
            t.customer_id or "-",
            t.call_id or "-",
            when(t.due_at),
            t.escalation,
        ]
        for t in tickets
    ]


def _category(value: int) -> str:
    from vcc.v1 import servicedesk_pb2 as pb

    return pb.TicketCategory.Name(value).removeprefix("TICKET_CATEGORY_").lower()  # type: ignore[arg-type]


def _enum(enum: Any, prefix: str, value: str) -> Any:
    try:
        return enum.Value(prefix + value.upper().replace("-", "_"))
    except ValueError:
        names = [n.removeprefix(prefix).lower() for n in enum.keys() if not n.endswith("UNSPECIFIED")]  # noqa: SIM118 (an enum wrapper, not a dict)
        fail(f"{value!r}: one of {', '.join(names)}")
        raise AssertionError from None


def _ticket_call(central: str | None, config: Path | None, as_json: bool, method: str, request: Any) -> None:
    from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

    reply = call_central(
        central,
        config,
        lambda ch: getattr(pb_grpc.TicketServiceStub(ch), method)(request, timeout=DEADLINE_S),
    )
    show(reply, as_json, lambda: print_table(method, TICKET_COLUMNS, _ticket_rows([reply.ticket])))


@tickets_app.command("create")
def tickets_create(
    *,
    category: Annotated[str, typer.Option(help="complaint, suggestion, inquiry, work_order")],
    title: Annotated[str, typer.Option()],
    by: ByOpt,
    description: str = "",
    customer: Annotated[str, typer.Option(help="The customer id.")] = "",
    call: Annotated[str, typer.Option(help="The call it was raised from.")] = "",
    site: Annotated[str, typer.Option(help="The agent's city (site id).")] = "",
    unit: Annotated[str, typer.Option(help="Dispatch at once: city:<site> or dept:<name>.")] = "",
    idempotency_key: str = "",
    central: CentralOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A new ticket, from a call or from the back office."""
    from vcc.v1 import servicedesk_pb2 as pb

    request = pb.CreateTicketRequest(
        category=_enum(pb.TicketCategory, "TICKET_CATEGORY_", category), title=title, description=description,
        customer_id=customer, call_id=call, origin_site_id=site, created_by=by, unit=unit,
        idempotency_key=idempotency_key,
    )  # fmt: skip
    _ticket_call(central, config, as_json, "CreateTicket", request)


@tickets_app.command("show")
def tickets_show(
    ticket_id: str, central: CentralOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False
) -> None:
    """A ticket with its notes, replies, transitions and notifications."""
    from vcc.v1 import servicedesk_pb2 as pb
    from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

    reply = call_central(
        central,
        config,
        lambda ch: pb_grpc.TicketServiceStub(ch).GetTicket(
            pb.GetTicketRequest(ticket_id=ticket_id), timeout=DEADLINE_S
        ),
    )

    def table() -> None:
        print_table("ticket", TICKET_COLUMNS, _ticket_rows([reply.ticket]))
        print_table(
            "entries",
            ["#", "when", "kind", "by", "text"],
            [[e.seq, when(e.at), e.kind, e.author, e.body] for e in reply.entries],
        )
        if reply.notifications:
            print_table(
                "notifications",
                ["id", "to", "state", "attempts", "error"],
                [
                    [n.notification_id, n.address, n.state, n.attempts, n.last_error]
                    for n in reply.notifications
                ],
            )

    show(reply, as_json, table)


@tickets_app.command("dispatch")
def tickets_dispatch(
    *,
    ticket_id: str,
    unit: str,
    by: ByOpt,
    note: str = "",
    central: CentralOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a ticket to a unit: city:<site> or dept:<name>."""
    from vcc.v1 import servicedesk_pb2 as pb

    _ticket_call(
        central,
        config,
        as_json,
        "DispatchTicket",
        pb.DispatchTicketRequest(ticket_id=ticket_id, unit=unit, actor=by, note=note),
    )


@tickets_app.command("start")
def tickets_start(
    ticket_id: str, by: ByOpt, central: CentralOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False
) -> None:
    """The unit takes the ticket up (in progress)."""
    from vcc.v1 import servicedesk_pb2 as pb

    _ticket_call(
        central, config, as_json, "StartTicket", pb.StartTicketRequest(ticket_id=ticket_id, actor=by)
    )


@tickets_app.command("reply")
def tickets_reply(
    *,
    ticket_id: str,
    by: ByOpt,
    body: Annotated[str, typer.Option(help="The answer to the customer.")],
    channel: Annotated[str, typer.Option(help="email, sms, none (default: e-mail if known, else SMS).")] = "",
    central: CentralOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer the customer: queued for e-mail or SMS."""
    from vcc.v1 import servicedesk_pb2 as pb

    value = _enum(pb.NotificationChannel, "NOTIFICATION_CHANNEL_", channel) if channel else 0
    request = pb.ReplyTicketRequest(ticket_id=ticket_id, author=by, body=body, channel=value)  # type: ignore[arg-type]
    _ticket_call(central, config, as_json, "ReplyTicket", request)


@tickets_app.command("close")
def tickets_close(
    ticket_id: str, by: ByOpt, central: CentralOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False
) -> None:
    """Close a replied ticket."""
    from vcc.v1 import servicedesk_pb2 as pb

    _ticket_call(
        central, config, as_json, "CloseTicket", pb.CloseTicketRequest(ticket_id=ticket_id, actor=by)
    )


@tickets_app.command("reopen")
def tickets_reopen(
    *,
    ticket_id: str,
    by: ByOpt,
    reason: Annotated[str, typer.Option()],
    central: CentralOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reopen a replied or closed ticket (a new due time)."""
    from vcc.v1 import servicedesk_pb2 as pb

    _ticket_call(
        central,
        config,
        as_json,
        "ReopenTicket",
        pb.ReopenTicketRequest(ticket_id=ticket_id, actor=by, reason=reason),
    )


@tickets_app.command("note")
def tickets_note(
    *,
    ticket_id: str,
    by: ByOpt,
    body: Annotated[str, typer.Option()],
    central: CentralOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a note to a ticket."""
    from vcc.v1 import servicedesk_pb2 as pb
    from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

    request = pb.AddTicketNoteRequest(ticket_id=ticket_id, author=by, body=body)
    reply = call_central(
        central, config, lambda ch: pb_grpc.TicketServiceStub(ch).AddTicketNote(request, timeout=DEADLINE_S)
    )
    show(reply, as_json, lambda: typer.echo(f"note {reply.entry.seq} added to {ticket_id}"))


@tickets_app.command("list")
def tickets_list(
    *,
    unit: str = "",
    state: Annotated[list[str] | None, typer.Option(help="Repeat for several.")] = None,
    category: str = "",
    customer: str = "",
    call: str = "",
    overdue: Annotated[bool, typer.Option(help="Open and past due now.")] = False,
    page_size: Annotated[int, typer.Option(min=1, max=500)] = 50,
    page_token: str = "",
    central: CentralOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Tickets by unit, state, category, customer, call; the most urgent first."""
    from vcc.v1 import servicedesk_pb2 as pb
    from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

    request = pb.SearchTicketsRequest(
        unit=unit,
        states=[_enum(pb.TicketState, "TICKET_STATE_", s) for s in state or []],
        category=_enum(pb.TicketCategory, "TICKET_CATEGORY_", category) if category else 0,  # type: ignore[arg-type]
        customer_id=customer, call_id=call, overdue_only=overdue, page_size=page_size, page_token=page_token,
    )  # fmt: skip
    reply = call_central(
        central, config, lambda ch: pb_grpc.TicketServiceStub(ch).SearchTickets(request, timeout=DEADLINE_S)
    )
    show(reply, as_json, lambda: print_table("tickets", TICKET_COLUMNS, _ticket_rows(reply.tickets)))
    if reply.next_page_token and not as_json:
        typer.echo(f"more: --page-token {reply.next_page_token}")


@tickets_app.command("report")
def tickets_report(central: CentralOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Open, overdue, closed in time and closed late, by unit and category."""
    from vcc.v1 import servicedesk_pb2 as pb
    from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

    reply = call_central(
        central,
        config,
        lambda ch: pb_grpc.TicketServiceStub(ch).GetTicketReport(
            pb.GetTicketReportRequest(), timeout=DEADLINE_S
        ),
    )
    rows = [
        [r.unit or "-", _category(r.category), r.open, r.overdue, r.closed_in_time, r.closed_late]
        for r in reply.rows
    ]
    show(
        reply,
        as_json,
        lambda: print_table(
            "tickets by unit", ["unit", "category", "open", "overdue", "closed in time", "closed late"], rows
        ),
    )
