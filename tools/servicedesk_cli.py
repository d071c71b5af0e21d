"""`vcc customers|tickets|kb|history ...`: the service desk at central from the command line.

Every command talks gRPC to central (`--central HOST:PORT`, or `--config F` for central.listen),
prints a table, or the reply as JSON with `--json`. A refused request prints its message and
error id and exits 1. Also registers `vcc bench servicedesk` (tools/bench_servicedesk.py).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    import grpc
    from google.protobuf.message import Message

T = TypeVar("T")

customers_app = typer.Typer(help="Shared customer records (F21, F30).", no_args_is_help=True)
tickets_app = typer.Typer(
    help="Tickets: complaints, suggestions, inquiries, work orders (F31).", no_args_is_help=True
)
kb_app = typer.Typer(help="The knowledge base (F32).", no_args_is_help=True)

CentralOpt = Annotated[str | None, typer.Option("--central", help="central's gRPC address host:port.")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="The province config (central.listen).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the reply as JSON.")]
ByOpt = Annotated[str, typer.Option("--by", help="Who does it (agent code or back-office user).")]
DEADLINE_S = 10.0
IMPORT_BATCH = 500


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add the service desk's commands to `vcc` (tools/cli.py calls this once)."""
    app.add_typer(customers_app, name="customers")
    app.add_typer(tickets_app, name="tickets")
    app.add_typer(kb_app, name="kb")
    app.command("history")(history)

    from tools.bench_servicedesk import bench_command

    bench_app.command("servicedesk")(bench_command)


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _address(central: str | None, config: Path | None) -> str:
    if central:
        return central
    if config is None:
        _fail("give --central HOST:PORT or --config F")
        raise AssertionError
    from vcc.config import ConfigError, load_province

    try:
        return load_province(config).central.listen
    except ConfigError as exc:
        _fail(str(exc))
        raise AssertionError from exc


def _call(central: str | None, config: Path | None, work: Callable[[grpc.aio.Channel], Awaitable[T]]) -> T:
    """One session with central: the channel, a deadline on each call, errors as one line."""
    import grpc

    from vcc import rpc
    from vcc.errors import from_rpc_error

    address = _address(central, config)

    async def run() -> T:
        async with rpc.channel(address) as channel:
            return await work(channel)

    try:
        return asyncio.run(run())
    except grpc.aio.AioRpcError as exc:
        error = from_rpc_error(exc)
        _fail(f"{exc.code().name}: {error.message} [{error.error_id}]", code=1)
        raise AssertionError from exc


def _print(message: Message, as_json: bool, table: Callable[[], None]) -> None:
    if as_json:
        from google.protobuf.json_format import MessageToDict

        typer.echo(
            json.dumps(MessageToDict(message, preserving_proto_field_name=True), ensure_ascii=False, indent=2)
        )
    else:
        table()


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    (Console() if sys.stdout.isatty() else Console(width=160)).print(table)


def _when(ts: Any) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    import datetime as dt

    return dt.datetime.fromtimestamp(ts.seconds, dt.UTC).strftime("%Y-%m-%d %H:%M")


# --- customers -------------------------------------------------------------------------------------


def _customer_rows(customers: Any) -> list[list[Any]]:
    return [
        [c.customer_id, c.name, " ".join(c.phones), c.account, c.email, c.address, c.level, c.version]
        for c in customers
    ]


CUSTOMER_COLUMNS = ["id", "name", "phones", "account", "e-mail", "address", "level", "version"]


@customers_app.command("get")
def customers_get(
    customer_id: str, central: CentralOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False
) -> None:
    """One customer."""
    from vcc.v1 import servicedesk_pb2 as pb
    from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

    reply = _call(
        central,
        config,
        lambda ch: pb_grpc.CustomerServiceStub(ch).GetCustomer(
            pb.GetCustomerRequest(customer_id=customer_id), timeout=DEADLINE_S
        ),
    )
    _print(reply, as_json, lambda: _table("customer", CUSTOMER_COLUMNS, _customer_rows([reply.customer])))


@customers_app.command("search")
def customers_search(
    *,
    phone: Annotated[str, typer.Option(help="A number or its beginning.")] = "",
    name: Annotated[str, typer.Option(help="Part of the name.")] = "",
    account: Annotated[str, typer.Option(help="The account, exactly.")] = "",
    address: Annotated[str, typer.Option(help="Part of the address.")] = "",
    page_size: Annotated[int, typer.Option(min=1, max=500)] = 50,
    page_token: str = "",
    central: CentralOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Customers by number, name, account, address."""
    from vcc.v1 import servicedesk_pb2 as pb
    from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

    request = pb.SearchCustomersRequest(
        phone=phone, name=name, account=account, address=address, page_size=page_size, page_token=page_token
    )
    reply = _call(
        central,
        config,
        lambda ch: pb_grpc.CustomerServiceStub(ch).SearchCustomers(request, timeout=DEADLINE_S),
    )
    _print(reply, as_json, lambda: _table("customers", CUSTOMER_COLUMNS, _customer_rows(reply.customers)))
    if reply.next_page_token and not as_json:
        typer.echo(f"more: --page-token {reply.next_page_token}")


@customers_app.command("create")
def customers_create(
    *,
    name: Annotated[str, typer.Option()],
    phone: Annotated[list[str], typer.Option(help="A number (repeat for several; the first is primary).")],
    customer_id: Annotated[str, typer.Option("--id")] = "",
    email: str = "",
    account: str = "",
    address: str = "",
    level: str = "normal",
    city: str = "",
    notes: str = "",
    idempotency_key: str = "",
    central: CentralOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A new customer."""
    from vcc.v1 import common_pb2
    from vcc.v1 import servicedesk_pb2 as pb
    from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

    msg = common_pb2.Customer(
        customer_id=customer_id, name=name, phones=phone, email=email, account=account,
        address=address, level=level, city=city, notes=notes,
    )  # fmt: skip
    request = pb.CreateCustomerRequest(customer=msg, idempotency_key=idempotency_key)
    reply = _call(
        central,
        config,
        lambda ch: pb_grpc.CustomerServiceStub(ch).CreateCustomer(request, timeout=DEADLINE_S),
    )
    _print(reply, as_json, lambda: _table("created", CUSTOMER_COLUMNS, _customer_rows([reply.customer])))


@customers_app.command("edit")
def customers_edit(
    *,
    customer_id: str,
    version: Annotated[int, typer.Option(min=1, help="The version you read (vcc customers get).")],
    name: str | None = None,
    phone: Annotated[list[str] | None, typer.Option(help="Replaces all numbers (repeat).")] = None,
    email: str | None = None,
    account: str | None = None,
    address: str | None = None,
    level: str | None = None,
    city: str | None = None,
    notes: str | None = None,
    central: CentralOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change fields of a customer; refused (stale-version) if it changed since `version`."""
    from vcc.v1 import servicedesk_pb2 as pb
    from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

    async def work(ch: grpc.aio.Channel) -> pb.UpdateCustomerResponse:
        stub = pb_grpc.CustomerServiceStub(ch)
        current = (
            await stub.GetCustomer(pb.GetCustomerRequest(customer_id=customer_id), timeout=DEADLINE_S)
        ).customer
        changes = {"name": name, "email": email, "account": account, "address": address, "level": level}
        changes |= {"city": city, "notes": notes}
        for field, value in changes.items():
            if value is not None:
                setattr(current, field, value)
        if phone:
            del current.phones[:]
            current.phones.extend(phone)
            current.phone = phone[0]
        request = pb.UpdateCustomerRequest(customer=current, expected_version=version)
        return await stub.UpdateCustomer(request, timeout=DEADLINE_S)

    reply = _call(central, config, work)
    _print(reply, as_json, lambda: _table("edited", CUSTOMER_COLUMNS, _customer_rows([reply.customer])))


@customers_app.command("import")
def customers_import(
    path: Annotated[
        Path, typer.Argument(help="CSV: customer_id,name,phones,account,address,email,level,city,notes")
    ],
    central: CentralOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create or update customers from a CSV file; prints the rejected rows with their reasons."""
    from central.convert import customer_to_proto
    from central.servicedesk.customers import parse_csv
    from vcc.v1 import servicedesk_pb2 as pb
    from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"{path}: {exc}")
    rows, rejected = parse_csv(text)

    async def work(ch: grpc.aio.Channel) -> pb.ImportCustomersResponse:
        stub = pb_grpc.CustomerServiceStub(ch)
        total = pb.ImportCustomersResponse()
        for i in range(0, len(rows), IMPORT_BATCH):
            batch = [
                pb.ImportRow(line=line, customer=customer_to_proto(c))
                for line, c in rows[i : i + IMPORT_BATCH]
            ]
            reply = await stub.ImportCustomers(pb.ImportCustomersRequest(rows=batch), timeout=60.0)
            total.created += reply.created
            total.updated += reply.updated
            total.rejected.extend(reply.rejected)
        return total

    total = _call(central, config, work) if rows else pb.ImportCustomersResponse()
    total.rejected.extend(pb.RejectedRow(line=r.line, error_id=r.error_id, reason=r.reason) for r in rejected)
    total.rejected.sort(key=lambda r: r.line)

    def table() -> None:
        typer.echo(
            f"{path}: {total.created} created, {total.updated} updated, {len(total.rejected)} rejected"
        )
        if total.rejected:
            _table(
                "rejected rows",
                ["line", "error", "reason"],
                [[r.line, r.error_id, r.reason] for r in total.rejected],
            )

    _print(total, as_json, table)
    if total.rejected:
        raise typer.Exit(1)


# --- tickets ---------------------------------------------------------------------------------------

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
            _when(t.due_at),
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
        _fail(f"{value!r}: one of {', '.join(names)}")
        raise AssertionError from None


def _ticket_call(central: str | None, config: Path | None, as_json: bool, method: str, request: Any) -> None:
    from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

    reply = _call(
        central,
        config,
        lambda ch: getattr(pb_grpc.TicketServiceStub(ch), method)(request, timeout=DEADLINE_S),
    )
    _print(reply, as_json, lambda: _table(method, TICKET_COLUMNS, _ticket_rows([reply.ticket])))


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

    reply = _call(
        central,
        config,
        lambda ch: pb_grpc.TicketServiceStub(ch).GetTicket(
            pb.GetTicketRequest(ticket_id=ticket_id), timeout=DEADLINE_S
        ),
    )

    def table() -> None:
        _table("ticket", TICKET_COLUMNS, _ticket_rows([reply.ticket]))
        _table(
            "entries",
            ["#", "when", "kind", "by", "text"],
            [[e.seq, _when(e.at), e.kind, e.author, e.body] for e in reply.entries],
        )
        if reply.notifications:
            _table(
                "notifications",
                ["id", "to", "state", "attempts", "error"],
                [
                    [n.notification_id, n.address, n.state, n.attempts, n.last_error]
                    for n in reply.notifications
                ],
            )

    _print(reply, as_json, table)


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
    reply = _call(
        central, config, lambda ch: pb_grpc.TicketServiceStub(ch).AddTicketNote(request, timeout=DEADLINE_S)
    )
    _print(reply, as_json, lambda: typer.echo(f"note {reply.entry.seq} added to {ticket_id}"))


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
    reply = _call(
        central, config, lambda ch: pb_grpc.TicketServiceStub(ch).SearchTickets(request, timeout=DEADLINE_S)
    )
    _print(reply, as_json, lambda: _table("tickets", TICKET_COLUMNS, _ticket_rows(reply.tickets)))
    if reply.next_page_token and not as_json:
        typer.echo(f"more: --page-token {reply.next_page_token}")


@tickets_app.command("report")
def tickets_report(central: CentralOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Open, overdue, closed in time and closed late, by unit and category."""
    from vcc.v1 import servicedesk_pb2 as pb
    from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

    reply = _call(
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
    _print(
        reply,
        as_json,
        lambda: _table(
            "tickets by unit", ["unit", "category", "open", "overdue", "closed in time", "closed late"], rows
        ),
    )


# --- knowledge -------------------------------------------------------------------------------------

ARTICLE_COLUMNS = ["id", "state", "title", "category", "service", "tags", "by", "reviewer"]


def _article_row(a: Any) -> list[Any]:
    return [
        a.article_id,
        a.state,
        a.title,
        a.category,
        a.service,
        ",".join(a.tags),
        a.proposed_by,
        a.reviewed_by,
    ]


@kb_app.command("propose")
def kb_propose(
    *,
    title: Annotated[str, typer.Option()],
    body: Annotated[str, typer.Option()],
    by: ByOpt,
    category: str = "",
    service: str = "",
    tag: Annotated[list[str] | None, typer.Option(help="Repeat for several.")] = None,
    question: Annotated[str, typer.Option(help="The caller's question it answers.")] = "",
    idempotency_key: str = "",
    central: CentralOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Propose an article (a reviewer publishes it)."""
    from vcc.v1 import servicedesk_pb2 as pb
    from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

    request = pb.ProposeArticleRequest(
        title=title, body=body, author=by, category=category, service=service, tags=tag or [],
        question=question, idempotency_key=idempotency_key,
    )  # fmt: skip
    reply = _call(
        central,
        config,
        lambda ch: pb_grpc.KnowledgeServiceStub(ch).ProposeArticle(request, timeout=DEADLINE_S),
    )
    _print(reply, as_json, lambda: _table("proposed", ARTICLE_COLUMNS, [_article_row(reply.article)]))


def _review(
    article_id: str, by: str, *, publish: bool, central: str | None, config: Path | None, as_json: bool
) -> None:
    from vcc.v1 import servicedesk_pb2 as pb
    from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

    async def work(ch: grpc.aio.Channel) -> Any:
        stub = pb_grpc.KnowledgeServiceStub(ch)
        if publish:
            return await stub.PublishArticle(
                pb.PublishArticleRequest(article_id=article_id, reviewer=by), timeout=DEADLINE_S
            )
        return await stub.RejectArticle(
            pb.RejectArticleRequest(article_id=article_id, reviewer=by), timeout=DEADLINE_S
        )

    reply = _call(central, config, work)
    _print(reply, as_json, lambda: _table("reviewed", ARTICLE_COLUMNS, [_article_row(reply.article)]))


@kb_app.command("publish")
def kb_publish(
    article_id: str, by: ByOpt, central: CentralOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False
) -> None:
    """Publish a proposed article: it is indexed and found from now on."""
    _review(article_id, by, publish=True, central=central, config=config, as_json=as_json)


@kb_app.command("reject")
def kb_reject(
    article_id: str, by: ByOpt, central: CentralOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False
) -> None:
    """Reject a proposed article."""
    _review(article_id, by, publish=False, central=central, config=config, as_json=as_json)


@kb_app.command("search")
def kb_search(
    *,
    query: str,
    service: str = "",
    category: str = "",
    limit: Annotated[int, typer.Option(min=1, max=100)] = 10,
    central: CentralOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Published articles for a question, best first (Chinese or English)."""
    from vcc.v1 import servicedesk_pb2 as pb
    from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

    request = pb.SearchArticlesRequest(query=query, service=service, category=category, limit=limit)
    reply = _call(
        central,
        config,
        lambda ch: pb_grpc.KnowledgeServiceStub(ch).SearchArticles(request, timeout=DEADLINE_S),
    )
    rows = [[f"{h.score:.2f}", *_article_row(h.article)] for h in reply.hits]
    _print(reply, as_json, lambda: _table(f"articles for {query!r}", ["score", *ARTICLE_COLUMNS], rows))


@kb_app.command("list")
def kb_list(
    *,
    state: Annotated[str, typer.Option(help="proposed (the review queue), published, rejected.")] = "",
    service: str = "",
    category: str = "",
    page_size: Annotated[int, typer.Option(min=1, max=500)] = 50,
    page_token: str = "",
    central: CentralOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Articles by state, category, service."""
    from vcc.v1 import servicedesk_pb2 as pb
    from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

    request = pb.ListArticlesRequest(
        state=state, service=service, category=category, page_size=page_size, page_token=page_token
    )
    reply = _call(
        central, config, lambda ch: pb_grpc.KnowledgeServiceStub(ch).ListArticles(request, timeout=DEADLINE_S)
    )
    _print(
        reply, as_json, lambda: _table("articles", ARTICLE_COLUMNS, [_article_row(a) for a in reply.articles])
    )


# --- history ---------------------------------------------------------------------------------------


def history(
    *,
    phone: Annotated[str, typer.Argument(help="A caller number (or use --customer).")] = "",
    customer: Annotated[str, typer.Option(help="The customer id.")] = "",
    page_size: Annotated[int, typer.Option(min=1, max=500)] = 50,
    page_token: str = "",
    central: CentralOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A customer's time line across cities: calls, tickets, notifications (newest first)."""
    from vcc.v1 import servicedesk_pb2 as pb
    from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

    request = pb.GetHistoryRequest(
        phone=phone, customer_id=customer, page_size=page_size, page_token=page_token
    )
    reply = _call(
        central, config, lambda ch: pb_grpc.HistoryServiceStub(ch).GetHistory(request, timeout=DEADLINE_S)
    )

    def table() -> None:
        who = (
            f"{reply.customer.name} ({reply.customer.customer_id})"
            if reply.HasField("customer")
            else "no customer"
        )
        _table(
            f"history: {who}",
            ["when", "kind", "id", "cities", "what"],
            [[_when(i.at), i.kind, i.ref_id, ",".join(i.sites) or i.site_id, i.summary] for i in reply.items],
        )
        if reply.next_page_token:
            typer.echo(f"more: --page-token {reply.next_page_token}")

    _print(reply, as_json, table)
