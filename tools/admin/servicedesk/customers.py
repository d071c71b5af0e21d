"""`vcc customers`: get, search, create, edit, set-pin, import a CSV with a report of the rejected rows."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tools.admin.servicedesk.session import (
    DEADLINE_S,
    CentralOpt,
    ConfigOpt,
    JsonOpt,
    call_central,
    fail,
    show,
)
from tools.console import print_table

if TYPE_CHECKING:
    import grpc

customers_app = typer.Typer(help="Shared customer records (F21, F30).", no_args_is_help=True)
IMPORT_BATCH = 500


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

    reply = call_central(
        central,
        config,
        lambda ch: pb_grpc.CustomerServiceStub(ch).GetCustomer(
            pb.GetCustomerRequest(customer_id=customer_id), timeout=DEADLINE_S
        ),
    )
    show(reply, as_json, lambda: print_table("customer", CUSTOMER_COLUMNS, _customer_rows([reply.customer])))


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
    reply = call_central(
        central,
        config,
        lambda ch: pb_grpc.CustomerServiceStub(ch).SearchCustomers(request, timeout=DEADLINE_S),
    )
    show(reply, as_json, lambda: print_table("customers", CUSTOMER_COLUMNS, _customer_rows(reply.customers)))
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
    reply = call_central(
        central,
        config,
        lambda ch: pb_grpc.CustomerServiceStub(ch).CreateCustomer(request, timeout=DEADLINE_S),
    )
    show(reply, as_json, lambda: print_table("created", CUSTOMER_COLUMNS, _customer_rows([reply.customer])))


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

    reply = call_central(central, config, work)
    show(reply, as_json, lambda: print_table("edited", CUSTOMER_COLUMNS, _customer_rows([reply.customer])))


@customers_app.command("set-pin")
def customers_set_pin(
    customer_id: str,
    pin_stdin: Annotated[bool, typer.Option(help="Read the PIN from the first line of stdin.")] = False,
    central: CentralOpt = None,
    config: ConfigOpt = None,
) -> None:
    """A customer's new PIN for the IVR's check (asked twice, not shown; never an argument, so that
    it stays out of the shell's history); ends a lockout."""
    import sys

    from vcc.v1 import servicedesk_pb2 as pb
    from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

    if pin_stdin:
        pin = sys.stdin.readline().strip()
    else:
        pin = typer.prompt("PIN", hide_input=True, confirmation_prompt=True)
    call_central(
        central,
        config,
        lambda ch: pb_grpc.CustomerServiceStub(ch).SetCustomerPin(
            pb.SetCustomerPinRequest(customer_id=customer_id, pin=pin), timeout=DEADLINE_S
        ),
    )
    typer.echo(f"PIN set for {customer_id}")


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
        fail(f"{path}: {exc}")
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

    total = call_central(central, config, work) if rows else pb.ImportCustomersResponse()
    total.rejected.extend(pb.RejectedRow(line=r.line, error_id=r.error_id, reason=r.reason) for r in rejected)
    total.rejected.sort(key=lambda r: r.line)

    def table() -> None:
        typer.echo(
            f"{path}: {total.created} created, {total.updated} updated, {len(total.rejected)} rejected"
        )
        if total.rejected:
            print_table(
                "rejected rows",
                ["line", "error", "reason"],
                [[r.line, r.error_id, r.reason] for r in total.rejected],
            )

    show(total, as_json, table)
    if total.rejected:
        raise typer.Exit(1)
