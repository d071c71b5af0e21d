"""`vcc ivr`: check, push and show the IVR flows and the service catalog that central keeps."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from tools.console import console
from vcc.ivr.catalog import CatalogError, ServiceCatalog, is_catalog, parse_catalog
from vcc.ivr.flow import END_KINDS, Flow, LookupNode, MenuNode
from vcc.ivr.validate import FlowError, load_flow, menu_depths

if TYPE_CHECKING:
    from vcc.v1 import ivr_pb2, ivr_pb2_grpc

    # The typed aio stub exists in the generated stubs only (mypy-protobuf).
    Stub = ivr_pb2_grpc.IvrServiceAsyncStub

ivr_app = typer.Typer(
    help="IVR flows and the service catalog (一号通) kept by central.", no_args_is_help=True
)

FilesArg = Annotated[list[Path], typer.Argument(help="Flow or catalog documents (YAML).")]
ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="The province config (YAML).")]
# Trailing metadata of a follower's refusal that names the leader (central.grpc_api.LEADER_KEY).
LEADER_KEY = "vcc-leader"
T = TypeVar("T")


@ivr_app.command()
def validate(files: FilesArg) -> None:
    """Check documents: every fault with its node and reason (exit 2), else one line each (exit 0)."""
    bad = False
    for path in files:
        try:
            typer.echo(f"{path}: {summary(read_document(path))}")
        except (FlowError, CatalogError, OSError) as exc:
            bad = True
            for line in _fault_lines(exc):
                typer.echo(f"{path}: {line}", err=True)
    if bad:
        raise typer.Exit(2)


@ivr_app.command()
def push(files: FilesArg, config: ConfigOpt) -> None:
    """Send flows (then the catalog) to central, which hands them to every site."""
    address = _central(config)
    documents = []
    for path in files:
        try:
            documents.append((path, read_document(path)))
        except (FlowError, CatalogError, OSError) as exc:
            for line in _fault_lines(exc):
                typer.echo(f"{path}: {line}", err=True)
            raise typer.Exit(2) from None
    # Flows first: the catalog may name them.
    documents.sort(key=lambda d: isinstance(d[1], ServiceCatalog))
    for path, parsed in documents:
        text = path.read_text(encoding="utf-8")
        if isinstance(parsed, ServiceCatalog):
            cat = _call(address, _push_catalog(text))
            state = "stored" if cat.created else "unchanged"
            typer.echo(f"{path}: service catalog revision {cat.revision} {state}")
        else:
            reply = _call(address, _push_flow(text))
            state = "stored" if reply.created else "already stored"
            info = reply.flow
            typer.echo(f"{path}: flow {info.flow_id} version {info.version} {state} ({info.digest[:12]})")


@ivr_app.command()
def show(
    config: ConfigOpt,
    service: Annotated[str, typer.Argument(help="One service id (default: the whole catalog).")] = "",
) -> None:
    """The catalog as central holds it: numbers, services, flows and their versions, cities."""
    from rich.table import Table

    from vcc.v1 import ivr_pb2

    address = _central(config)
    catalog = _call(
        address, lambda s: s.GetServiceCatalog(ivr_pb2.GetServiceCatalogRequest(service_id=service))
    )
    flows = _call(address, lambda s: s.ListFlows(ivr_pb2.ListFlowsRequest()))

    table = Table(
        title=f"service catalog, revision {catalog.revision}" if catalog.revision else "no catalog pushed yet"
    )
    for column in ("service", "name", "numbers", "flow", "cities", "skill groups", "hours"):
        table.add_column(column)
    for s in catalog.services:
        hours = (
            ", ".join(f"{'/'.join(h.days) or 'daily'} {getattr(h, 'from')}-{h.to}" for h in s.hours)
            or "always"
        )
        table.add_row(
            s.service_id,
            " / ".join(s.name.values()),
            " ".join(s.numbers),
            f"{s.flow_id} v{s.flow_version}" if s.flow_version else f"{s.flow_id} (not pushed)",
            " ".join(s.site_ids),
            " ".join(s.skill_groups),
            hours,
        )
    out = console()
    out.print(table)
    wanted = {s.flow_id for s in catalog.services} if service else None
    versions = Table(title="flows at central")
    for column in ("flow", "version", "nodes", "digest", "description"):
        versions.add_column(column)
    for f in flows.flows:
        if wanted is None or f.flow_id in wanted:
            versions.add_row(f.flow_id, str(f.version), str(f.nodes), f.digest[:12], f.description)
    out.print(versions)


@ivr_app.command(name="try")
def try_flow(
    file: Annotated[Path, typer.Argument(help="A flow document (YAML).")],
    *,
    digits: Annotated[str, typer.Option(help='The caller\'s keys, a group per prompt: "2 1 #".')] = "",
    var: Annotated[
        list[str] | None, typer.Option(help="A caller variable: customer.level=vip (repeatable).")
    ] = None,
    answer: Annotated[
        list[str] | None,
        typer.Option(help='A look-up\'s answer: parcel_state={"state": "delivered"} (else it times out).'),
    ] = None,
    at: Annotated[str, typer.Option(help="The call's time, ISO 8601 (default: now).")] = "",
    json_out: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
) -> None:
    """Walk a flow on this machine, no cluster: what the caller hears and what each key does."""
    import datetime as dt
    import json

    from site_node.callcontrol.ivr_flow.report import run_report
    from site_node.callcontrol.ivr_flow.run import FlowRun

    try:
        flow = load_flow(file.read_text(encoding="utf-8"))
    except (FlowError, OSError) as exc:
        for line in _fault_lines(exc):
            typer.echo(f"{file}: {line}", err=True)
        raise typer.Exit(2) from None
    context = dict(_pair(v, "--var") for v in var or [])
    answers = {name: _answer(raw) for name, raw in (_pair(a, "--answer") for a in answer or [])}
    try:
        now = dt.datetime.fromisoformat(at).timestamp() if at else dt.datetime.now(dt.UTC).timestamp()
    except ValueError:
        typer.echo(f"error: --at: not an ISO 8601 time: {at!r}", err=True)
        raise typer.Exit(2) from None
    run = FlowRun()
    run.start(flow, context, now)
    groups = digits.split()
    # Bounded: every round either ends the call or uses a key group or a silence.
    for _ in range(flow.max_steps * 4):
        if run.ended is not None:
            break
        node = run.flow.nodes[run.node_id]
        if isinstance(node, LookupNode) and run.waiting == "lookup":
            if node.name in answers:
                now += 0.2
                run.on_lookup(answers[node.name], now)
            else:
                now = run.deadline or now
                run.on_timeout(now)
        elif groups:
            now += 1.0
            run.on_digits(groups.pop(0), now)
        else:
            now = run.deadline or now
            run.on_timeout(now)
    report = run_report(run)
    if json_out:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    for step in report["steps"]:
        if "heard" in step:
            typer.echo(f"  heard  {step['heard']}: {step['text']}")
        elif "key" in step:
            typer.echo(f"  key {step['key']}  {step['node']}: {step['effect']}")
        elif "silence" in step:
            typer.echo(f"  ...    {step['node']}: {step['silence']}")
        elif "lookup" in step:
            typer.echo(f"  look-up {step['lookup']}: {step['outcome']}")
    ended = report["ended"] or {"kind": "still in the flow"}
    details = ", ".join(
        f"{k} {v}" for k, v in ended.items() if k not in ("kind", "announcements") and v != ""
    )
    typer.echo(f"ended: {ended['kind']}" + (f" ({details})" if details else ""))


def _pair(raw: str, option: str) -> tuple[str, str]:
    name, sep, value = raw.partition("=")
    if not sep or not name:
        typer.echo(f"error: {option}: want NAME=VALUE, got {raw!r}", err=True)
        raise typer.Exit(2)
    return name.strip(), value.strip()


def _answer(raw: str) -> dict[str, str]:
    import json

    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        typer.echo(f"error: --answer: want a JSON object of fields, got {raw!r}", err=True)
        raise typer.Exit(2)
    return {str(k): str(v) for k, v in data.items()}


# -- helpers ------------------------------------------------------------------------------------


def read_document(path: Path) -> Flow | ServiceCatalog:
    text = path.read_text(encoding="utf-8")
    return parse_catalog(text) if is_catalog(text) else load_flow(text)


def summary(document: Flow | ServiceCatalog) -> str:
    if isinstance(document, ServiceCatalog):
        numbers = sorted({n for s in document.services for n in s.numbers})
        return f"service catalog: {len(document.services)} services on numbers {', '.join(numbers)}"
    flow = document
    menus = [n for n, node in flow.nodes.items() if isinstance(node, MenuNode)]
    depths = menu_depths(flow)
    wide = max((len(node.options) for node in flow.nodes.values() if isinstance(node, MenuNode)), default=0)
    deep = max((depths[m] for m in menus), default=0)
    ends = sum(1 for node in flow.nodes.values() if node.kind in END_KINDS)
    return (
        f"flow {flow.id} version {flow.version}: {len(flow.nodes)} nodes, {len(menus)} menus "
        f"(at most {wide} wide, {deep} deep), {ends} ends, languages {'/'.join(flow.languages)}"
    )


def _push_flow(document: str) -> Callable[[Stub], Awaitable[ivr_pb2.PushFlowResponse]]:
    def rpc(stub: Stub) -> Awaitable[ivr_pb2.PushFlowResponse]:
        from vcc.v1 import ivr_pb2

        return stub.PushFlow(ivr_pb2.PushFlowRequest(document=document))

    return rpc


def _push_catalog(document: str) -> Callable[[Stub], Awaitable[ivr_pb2.PushServiceCatalogResponse]]:
    def rpc(stub: Stub) -> Awaitable[ivr_pb2.PushServiceCatalogResponse]:
        from vcc.v1 import ivr_pb2

        return stub.PushServiceCatalog(ivr_pb2.PushServiceCatalogRequest(document=document))

    return rpc


def _fault_lines(exc: Exception) -> list[str]:
    if isinstance(exc, FlowError):
        return [str(f) for f in exc.faults]
    if isinstance(exc, OSError):
        return [f"cannot read: {exc.strerror}"]
    return [str(exc)]


def _central(config: Path) -> str:
    from tools.admin.config import load_admin_config

    return load_admin_config(config).central.listen


def _call(address: str, rpc: Callable[[Stub], Awaitable[T]]) -> T:
    """One call to central's IvrService, at the leader (a follower names it: asked again there)."""
    # Here, not at the top: `vcc --help` and `vcc ivr validate` need no gRPC.
    import grpc

    from vcc.errors import from_rpc_error
    from vcc.rpc import DEFAULT_DEADLINE_S, channel
    from vcc.tls import central_server
    from vcc.v1 import ivr_pb2_grpc

    async def once(target: str) -> T:
        async with channel(target, expect=central_server()) as ch:
            return await asyncio.wait_for(rpc(ivr_pb2_grpc.IvrServiceStub(ch)), DEFAULT_DEADLINE_S * 2)

    async def run() -> T:
        try:
            return await once(address)
        except grpc.aio.AioRpcError as exc:
            leader = dict(exc.trailing_metadata() or ()).get(LEADER_KEY)
            if exc.code() == grpc.StatusCode.UNAVAILABLE and isinstance(leader, str) and leader:
                return await once(leader)
            raise

    try:
        return asyncio.run(run())
    except grpc.aio.AioRpcError as exc:
        error = from_rpc_error(exc)
        typer.echo(f"error: central refused: {error.message} [{error.error_id}]", err=True)
        raise typer.Exit(2 if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else 1) from None
    except TimeoutError:
        typer.echo(f"error: central at {address} did not answer", err=True)
        raise typer.Exit(1) from None
