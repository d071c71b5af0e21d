"""`vcc records`: calls left open at a city that is down, and closing them once it is lost for good.

A city that dies holds its callers' calls; if it comes back it ends them itself. Only when it
will not (decommissioned) does an operator close them: `vcc records close-lost-site gz --yes`
closes every call still open there with outcome SITE_LOST (central refuses while the city's
lease lives, and audits who did it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

if TYPE_CHECKING:
    from vcc.config import ProvinceConfig
    from vcc.v1 import central_pb2, central_pb2_grpc

    Stub = central_pb2_grpc.CentralServiceAsyncStub

records_app = typer.Typer(
    help="Call records: calls open at a city that is down, closed when it is lost for good.",
    no_args_is_help=True,
)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="The province config (YAML).")]
# Trailing metadata of a follower's refusal that names the leader (central.grpc_api.LEADER_KEY).
LEADER_KEY = "vcc-leader"
DEADLINE_S = 10.0
T = TypeVar("T")


async def open_at_down_sites(config: ProvinceConfig, site_id: str = "") -> list[central_pb2.CallRecord]:
    """Every record central marks open at a city that is down (of `site_id` only, if given)."""
    from vcc.v1 import central_pb2

    found: list[central_pb2.CallRecord] = []
    token = ""

    def page_of(
        request: central_pb2.ListCallRecordsRequest,
    ) -> Callable[[Stub], Awaitable[central_pb2.ListCallRecordsResponse]]:
        return lambda stub: stub.ListCallRecords(request, timeout=DEADLINE_S)

    while True:
        request = central_pb2.ListCallRecordsRequest(
            entry_site_id=site_id, page_size=1000, page_token=token, with_events=True, open_only=True
        )
        page = await at_leader(config, page_of(request))
        found += [r for r in page.records if r.HasField("open_at_down_site")]
        token = page.next_page_token
        if not token:
            return found


async def site_up(config: ProvinceConfig, site_id: str) -> bool:
    from vcc.v1 import central_pb2

    request = central_pb2.GetProvinceStatusRequest()
    status = await at_leader(config, lambda stub: stub.GetProvinceStatus(request, timeout=DEADLINE_S))
    return any(s.site_id == site_id and s.up for s in status.sites)


async def close_lost_site(
    config: ProvinceConfig, site_id: str, reason: str
) -> central_pb2.CloseLostSiteCallsResponse:
    from vcc.v1 import central_pb2

    request = central_pb2.CloseLostSiteCallsRequest(site_id=site_id, reason=reason)
    return await at_leader(config, lambda stub: stub.CloseLostSiteCalls(request, timeout=DEADLINE_S))


async def at_leader(config: ProvinceConfig, rpc: Callable[[Stub], Awaitable[T]]) -> T:
    """One call to central, at the leader (a follower names it: asked again there)."""
    import grpc

    from vcc.rpc import channel
    from vcc.tls import central_server
    from vcc.v1 import central_pb2_grpc

    async def once(target: str) -> T:
        async with channel(target, expect=central_server()) as ch:
            return await rpc(central_pb2_grpc.CentralServiceStub(ch))

    try:
        return await once(config.central.listen)
    except grpc.aio.AioRpcError as exc:
        leader = dict(exc.trailing_metadata() or ()).get(LEADER_KEY)
        if exc.code() == grpc.StatusCode.UNAVAILABLE and isinstance(leader, str) and leader:
            return await once(leader)
        raise


def lines(records: list[central_pb2.CallRecord]) -> list[str]:
    from vcc import rpc

    out = []
    for r in records:
        down = r.open_at_down_site
        since = _clock(rpc.unix_s(down.down_since)) if down.HasField("down_since") else "?"
        last = max((rpc.unix_s(e.at) for e in r.events), default=0.0)
        heard = _clock(last) if last else "-"
        out.append(
            f"{r.call_id:<34} {r.entry_site_id:<7} {r.ani or '-':<14} down since {since}  last heard {heard}"
        )
    return out


def _clock(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _run(work: Awaitable[T]) -> T:
    """The command's one call to central; its refusal in words, never a traceback."""
    import grpc

    from vcc.errors import from_rpc_error

    try:
        return asyncio.run(_bounded(work))
    except grpc.aio.AioRpcError as exc:
        error = from_rpc_error(exc)
        typer.echo(f"error: central refused: {error.message} [{error.error_id}]", err=True)
        code = exc.code()
        raise typer.Exit(
            2 if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND) else 1
        ) from None
    except TimeoutError:
        typer.echo("error: central did not answer", err=True)
        raise typer.Exit(1) from None


async def _bounded(work: Awaitable[T]) -> T:
    async with asyncio.timeout(DEADLINE_S * 3):
        return await work


def _config(path: Path) -> ProvinceConfig:
    from tools.admin.config import load_admin_config

    return load_admin_config(path)


@records_app.command("open-at-down-sites")
def list_open(
    config: ConfigOpt,
    site: Annotated[str, typer.Option(help="Only calls of this city.")] = "",
) -> None:
    """Calls still open at a city that is down: nobody ends them until it comes back."""
    cfg = _config(config)
    records = _run(open_at_down_sites(cfg, site))
    for line in lines(records):
        typer.echo(line)
    typer.echo(f"{len(records)} calls open at a city that is down", err=True)


@records_app.command("close-lost-site")
def close(
    config: ConfigOpt,
    site: Annotated[str, typer.Argument(help="The city lost for good (its site id).")],
    reason: Annotated[str, typer.Option(help="Why, for the audit log (a ticket, a note).")] = "",
    yes: Annotated[bool, typer.Option("--yes", help="Close them (without it: only show them).")] = False,
) -> None:
    """Close every call still open at a city that is down for good: outcome SITE_LOST, audited.

    Refused while the city is up. Its own events that arrive later (if it ever comes back) are
    kept in the calls' journeys but do not end them again."""
    cfg = _config(config)
    if site not in {s.id for s in cfg.sites}:
        typer.echo(f"error: no site {site!r} in the province config", err=True)
        raise typer.Exit(2)
    if not yes:
        if _run(site_up(cfg, site)):
            typer.echo(f"site {site} is up: its calls are its own to end (central would refuse)", err=True)
            raise typer.Exit(1)
        records = _run(open_at_down_sites(cfg, site))
        for line in lines(records):
            typer.echo(line)
        typer.echo(f"{len(records)} calls would be closed; run again with --yes to close them", err=True)
        return
    reply = _run(close_lost_site(cfg, site, reason))
    for call_id in reply.call_ids:
        typer.echo(call_id)
    typer.echo(f"{len(reply.call_ids)} calls of {site} closed (outcome site-lost)", err=True)
