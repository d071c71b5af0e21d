"""What every `vcc customers|tickets|kb|history` command shares: the address of central, one
gRPC session with a deadline per call, errors as one line, tables or JSON."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    import grpc
    from google.protobuf.message import Message

T = TypeVar("T")

CentralOpt = Annotated[str | None, typer.Option("--central", help="central's gRPC address host:port.")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="The province config (central.listen).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the reply as JSON.")]
ByOpt = Annotated[str, typer.Option("--by", help="Who does it (agent code or back-office user).")]
DEADLINE_S = 10.0


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def central_address(central: str | None, config: Path | None) -> str:
    if central:
        return central
    if config is None:
        fail("give --central HOST:PORT or --config F")
        raise AssertionError
    from tools.admin.config import load_admin_config

    return load_admin_config(config).central.listen


def call_central(
    central: str | None, config: Path | None, work: Callable[[grpc.aio.Channel], Awaitable[T]]
) -> T:
    """One session with central: the channel, a deadline on each call, errors as one line."""
    import grpc

    from vcc import rpc
    from vcc.errors import from_rpc_error
    from vcc.tls import central_server

    address = central_address(central, config)

    async def run() -> T:
        async with rpc.channel(address, expect=central_server()) as channel:
            return await work(channel)

    try:
        return asyncio.run(run())
    except grpc.aio.AioRpcError as exc:
        error = from_rpc_error(exc)
        fail(f"{exc.code().name}: {error.message} [{error.error_id}]", code=1)
        raise AssertionError from exc


def show(message: Message, as_json: bool, table: Callable[[], None]) -> None:
    if as_json:
        from google.protobuf.json_format import MessageToDict

        typer.echo(
            json.dumps(MessageToDict(message, preserving_proto_field_name=True), ensure_ascii=False, indent=2)
        )
    else:
        table()


def when(ts: Any) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    import datetime as dt

    return dt.datetime.fromtimestamp(ts.seconds, dt.UTC).strftime("%Y-%m-%d %H:%M")
