"""`vcc status`: the province at a glance, from central, or from each site when central is away."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from rich.console import Console
from rich.table import Table

from vcc.config import ProvinceConfig
from vcc.rpc import DEFAULT_DEADLINE_S, channel
from vcc.tls import central_server, site_server
from vcc.v1 import central_pb2, central_pb2_grpc, site_admin_pb2, site_admin_pb2_grpc

# Agent states in the order an operator reads them, with short column labels.
STATE_ORDER = ("READY", "RINGING", "TALKING", "HELD", "WRAP_UP", "NOT_READY")


@dataclass(frozen=True)
class SiteView:
    site_id: str
    name: str
    up: bool
    summary: site_admin_pb2.SiteSummary | None
    # Why the site counts as down, when it does ("unreachable: ..."), for the operator.
    note: str = ""


@dataclass(frozen=True)
class ProvinceView:
    province_id: str
    sites: list[SiteView]
    # "central" when central answered; "sites" when we asked each site ourselves.
    source: str
    call_records: int | None = None
    central_error: str = ""


async def site_summary(
    address: str, deadline_s: float = DEFAULT_DEADLINE_S, site_id: str | None = None
) -> site_admin_pb2.SiteSummary:
    """`site_id`: the site that must answer there (its certificate checked), else the host's name."""
    async with channel(address, expect=site_server(site_id) if site_id else None) as ch:
        reply = await site_admin_pb2_grpc.SiteAdminServiceStub(ch).GetSiteStatus(
            site_admin_pb2.GetSiteStatusRequest(), timeout=deadline_s
        )
        return reply.summary


async def site_summaries(
    addresses: Mapping[str, str], deadline_s: float = DEFAULT_DEADLINE_S
) -> dict[str, site_admin_pb2.SiteSummary | str]:
    """Each site's summary, or the reason it could not be had, asked of all sites at once."""

    async def one(site_id: str, address: str) -> site_admin_pb2.SiteSummary | str:
        try:
            return await site_summary(address, deadline_s, site_id)
        except grpc.aio.AioRpcError as exc:
            return f"unreachable: {exc.code().name} {exc.details() or ''}".strip()

    results = await asyncio.gather(*(one(s, a) for s, a in addresses.items()))
    return dict(zip(addresses, results, strict=True))


async def province_status(config: ProvinceConfig, deadline_s: float = DEFAULT_DEADLINE_S) -> ProvinceView:
    """Ask central's GetProvinceStatus; if central does not answer, ask every site's SiteAdminService."""
    try:
        async with channel(config.central.listen, expect=central_server()) as ch:
            reply = await central_pb2_grpc.CentralServiceStub(ch).GetProvinceStatus(
                central_pb2.GetProvinceStatusRequest(), timeout=deadline_s
            )
        sites = [
            SiteView(s.site_id, s.name, s.up, s.summary if s.HasField("summary") else None)
            for s in reply.sites
        ]
        return ProvinceView(reply.province_id or config.province.id, sites, "central", reply.call_records)
    except grpc.aio.AioRpcError as exc:
        central_error = f"{exc.code().name} {exc.details() or ''}".strip()
    summaries = await site_summaries({s.id: s.listen for s in config.sites}, deadline_s)
    views = []
    for site in config.sites:
        got = summaries[site.id]
        if isinstance(got, str):
            views.append(SiteView(site.id, site.name, False, None, got))
        else:
            views.append(SiteView(site.id, site.name, True, got))
    return ProvinceView(config.province.id, views, "sites", None, central_error)


def agents_text(summary: site_admin_pb2.SiteSummary) -> str:
    states = dict(summary.agents_by_state)
    parts = [f"{states.pop(s)} {s.lower().replace('_', '-')}" for s in STATE_ORDER if states.get(s)]
    parts += [f"{n} {s.lower().replace('_', '-')}" for s, n in sorted(states.items()) if n]
    return ", ".join(parts) or "none logged in"


def trunk_usage(summary: site_admin_pb2.SiteSummary, kind: str = "trunk") -> tuple[int, int]:
    busy = sum(r.busy for r in summary.resources if r.kind == kind)
    total = sum(r.total for r in summary.resources if r.kind == kind)
    return busy, total


def status_table(view: ProvinceView) -> Table:
    title = f"province {view.province_id}"
    if view.source == "central":
        caption = "from central" + (
            f"; {view.call_records} call records" if view.call_records is not None else ""
        )
    else:
        caption = f"central unreachable ({view.central_error}); asked each site directly"
    table = Table(title=title, caption=caption)
    for col in (
        "site",
        "name",
        "state",
        "agents",
        "waiting",
        "trunk busy/total",
        "offered",
        "answered",
        "abandoned",
        "blocked",
        "outbox",
    ):
        table.add_column(
            col,
            justify="right"
            if col in {"waiting", "offered", "answered", "abandoned", "blocked", "outbox"}
            else "left",
        )
    for site in view.sites:
        state = "[green]up[/]" if site.up else f"[red]down[/] {site.note}".rstrip()
        s = site.summary
        if s is None:
            table.add_row(site.site_id, site.name, state, *["-"] * 8)
            continue
        busy, total = trunk_usage(s)
        table.add_row(
            site.site_id,
            site.name,
            state,
            agents_text(s),
            str(s.calls_waiting),
            f"{busy}/{total}",
            str(s.calls_offered),
            str(s.calls_answered),
            str(s.calls_abandoned),
            str(s.calls_blocked),
            str(s.outbox_pending),
        )
    return table


def one_line(
    summaries: Mapping[str, site_admin_pb2.SiteSummary | str], order: Sequence[str] | None = None
) -> str:
    """A compact live line for the demo: per site, agents talking/ready, waiting, trunk use, counters."""
    parts = []
    for site_id in order or list(summaries):
        s = summaries.get(site_id)
        if s is None or isinstance(s, str):
            parts.append(f"{site_id}: DOWN")
            continue
        states = s.agents_by_state
        busy, total = trunk_usage(s)
        parts.append(
            f"{site_id}: talk {states.get('TALKING', 0)} ready {states.get('READY', 0)} "
            f"wait {s.calls_waiting} "
            f"trunk {busy}/{total} ans {s.calls_answered} abd {s.calls_abandoned} blk {s.calls_blocked}"
        )
    return " | ".join(parts)


async def print_status(
    config: ProvinceConfig, console: Console, deadline_s: float = DEFAULT_DEADLINE_S
) -> bool:
    """Print the table; True when every site is up."""
    view = await province_status(config, deadline_s)
    if view.source != "central":
        console.print(
            f"[yellow]central at {config.central.listen} is unreachable ({view.central_error}); "
            "asking each site directly[/]"
        )
    console.print(status_table(view))
    return all(s.up for s in view.sites)
