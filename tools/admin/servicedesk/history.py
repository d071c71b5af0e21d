"""`vcc history PHONE`: a customer's time line across cities."""

from __future__ import annotations

from typing import Annotated

import typer

from tools.admin.servicedesk.session import (
    DEADLINE_S,
    CentralOpt,
    ConfigOpt,
    JsonOpt,
    call_central,
    show,
    when,
)
from tools.console import print_table


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
    reply = call_central(
        central, config, lambda ch: pb_grpc.HistoryServiceStub(ch).GetHistory(request, timeout=DEADLINE_S)
    )

    def table() -> None:
        who = (
            f"{reply.customer.name} ({reply.customer.customer_id})"
            if reply.HasField("customer")
            else "no customer"
        )
        print_table(
            f"history: {who}",
            ["when", "kind", "id", "cities", "what"],
            [[when(i.at), i.kind, i.ref_id, ",".join(i.sites) or i.site_id, i.summary] for i in reply.items],
        )
        if reply.next_page_token:
            typer.echo(f"more: --page-token {reply.next_page_token}")

    show(reply, as_json, table)
