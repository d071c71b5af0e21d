"""The `vcc` command line: run processes, local clusters, robots, traffic, the demo.

Heavy parts (site node, central, robots, traffic) are imported inside their command, so
`vcc --help` stays fast and a part that is missing does not break the others.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from tools.admin import servicedesk
from tools.admin.certs import certs_app
from tools.admin.etcd import etcd_app
from tools.admin.ivr import ivr_app
from tools.admin.records import records_app
from tools.admin.roster import roster_app
from tools.bench.cli import bench_app
from tools.console import console
from vcc.config import ConfigError, ProvinceConfig, load_province
from vcc.digits import is_digits

app = typer.Typer(
    name="vcc",
    help="vcc: a distributed multi-site virtual call center.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
cluster_app = typer.Typer(
    help="A local province: etcd, central and every site as separate processes.", no_args_is_help=True
)
app.add_typer(cluster_app, name="cluster")
app.add_typer(bench_app, name="bench")
app.add_typer(ivr_app, name="ivr")
app.add_typer(roster_app, name="roster")
app.add_typer(records_app, name="records")
# The service desk: vcc customers|tickets|kb|history.
servicedesk.register(app)
app.add_typer(certs_app, name="certs")
app.add_typer(etcd_app, name="etcd")
prompts_app = typer.Typer(help="The IVR's audio, made offline from text.", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="The province config (YAML).")]
RunDirOpt = Annotated[Path, typer.Option("--run-dir", help="The cluster's run folder.")]
DEFAULT_CLUSTER_DIR = Path("run/cluster")


def fail(message: str, code: int = 2) -> NoReturn:
    """A readable error on stderr and an exit code; never a traceback for an operator's mistake."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def load_config(path: Path) -> ProvinceConfig:
    try:
        return load_province(path)
    except ConfigError as exc:
        fail(str(exc))


def load_tool_config(path: Path) -> ProvinceConfig:
    """A config for a tool that dials the province: with TLS, as the tool (and its personas)."""
    cfg = load_config(path)
    if cfg.tls is not None:
        from tools.province.certs import adopt_tool_identity
        from vcc.tls import TlsError

        try:
            adopt_tool_identity(cfg)
        except TlsError as exc:
            fail(f"tls: {exc}")
    return cfg


def _missing_part(exc: ModuleNotFoundError, package: str, what: str) -> None:
    if exc.name is not None and (exc.name == package or exc.name.startswith(package + ".")):
        fail(f"{what} is not part of this installation yet ({exc})")


# --- processes -------------------------------------------------------------------------------------


LogFormatOpt = Annotated[
    str | None, typer.Option("--log-format", help="text or json (default: VCC_LOG_FORMAT, else text).")
]
MetricsListenOpt = Annotated[
    str | None,
    typer.Option("--metrics-listen", help="host:port of the Prometheus endpoint (overrides the config)."),
]


@app.command()
def site(
    config: ConfigOpt,
    site_id: Annotated[str, typer.Option("--site", "-s", help="The site id.")],
    metrics_listen: MetricsListenOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Run one city's site node (until SIGTERM or Ctrl-C)."""
    cfg = load_config(config)
    try:
        cfg.site(site_id)
    except ConfigError as exc:
        fail(str(exc))
    try:
        from site_node.main import run
    except ModuleNotFoundError as exc:
        _missing_part(exc, "site_node", "the site node")
        raise
    try:
        run(str(config), site_id, metrics_listen, log_format)
    except ConfigError as exc:
        fail(str(exc))


central_app = typer.Typer(
    help="Run one replica of the provincial central service (until SIGTERM or Ctrl-C); "
    "`vcc central migrate` brings its database to the newest schema.",
    invoke_without_command=True,
)
app.add_typer(central_app, name="central")


@central_app.callback()
def central(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="The province config (YAML).")] = None,
    seed_customers: Annotated[int, typer.Option(min=0, help="Create this many demo customers at start.")] = 0,
    listen: Annotated[
        str | None, typer.Option(help="host:port of this replica (default: central.listen, replica 1's).")
    ] = None,
    replica_id: Annotated[str, typer.Option(help="This replica's id; etcd elects one replica leader.")] = "1",
    metrics_listen: MetricsListenOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Run one replica of the provincial central service (until SIGTERM or Ctrl-C)."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        fail("--config: the province config is required")
    load_config(config)
    try:
        from central.main import run
    except ModuleNotFoundError as exc:
        _missing_part(exc, "central", "the central service")
        raise
    try:
        run(str(config), seed_customers, listen, replica_id, metrics_listen, log_format)
    except ConfigError as exc:
        fail(str(exc))


@central_app.command("migrate")
def central_migrate(config: ConfigOpt, log_format: LogFormatOpt = None) -> None:
    """Bring central's database to the newest schema (once, before replicas start)."""
    load_config(config)
    from central.main import migrate

    revision = migrate(str(config), log_format)
    typer.echo(f"database schema at {revision}")


@app.command("trace")
def trace_call(
    call_id: Annotated[str, typer.Argument(help="The call's id.")],
    run_dir: RunDirOpt = DEFAULT_CLUSTER_DIR,
) -> None:
    """Print one call's spans as a time line across the processes (from the run folder's traces)."""
    from tools.admin.trace import call_spans, read_spans, timeline

    spans = call_spans(read_spans(run_dir), call_id)
    if not spans:
        fail(f"no span of call {call_id} under {run_dir} (is tracing on, and the call over?)", code=1)
    for line in timeline(spans):
        typer.echo(line)


@app.command("call")
def test_call(
    config: ConfigOpt,
    site: Annotated[str, typer.Option("--site", help="The site whose trunk takes the call.")],
    number: Annotated[str, typer.Option("--number", help="The number dialled (a service of the catalog).")],
    digits: Annotated[str, typer.Option(help='One key group per prompt that asks for keys: "2 1 #".')] = "",
    wait: Annotated[float, typer.Option("--wait", help="Seconds to stay once queued or connected.")] = 0.0,
    hang_up_after: Annotated[
        float | None, typer.Option("--hang-up-after", help="Hang up this many seconds after dialling.")
    ] = None,
    ani: Annotated[str, typer.Option("--ani", help="The caller's number.")] = "13800000000",
    sip: Annotated[
        bool,
        typer.Option(
            "--sip", help="Over SIP (SIPp) to the site's SIP trunk: what was heard, from the audio."
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
) -> None:
    """One scripted test call: the prompts heard, each key's effect, and how the call ended."""
    import json

    from tools.admin.call import scripted_call, text_lines

    cfg = load_tool_config(config)
    from vcc.config import ConfigError

    try:
        site_cfg = cfg.site(site)
    except ConfigError as exc:
        fail(f"--site: {exc}")
    address = site_cfg.listen
    if sip:
        from tools.admin.call_sip import run_sip_call
        from tools.admin.call_sip import text_lines as sip_lines

        if site_cfg.sip is None:
            fail(f"--sip: site {site!r} has no SIP trunk (its config has no sip:)")
        try:
            report = asyncio.run(
                run_sip_call(cfg, site_cfg, number, digits.split(), ani=ani, hang_up_after_s=hang_up_after)
            )
        except ValueError as exc:
            fail(str(exc))
        if json_out:
            typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        else:
            for line in sip_lines(report):
                typer.echo(line)
        return
    report = asyncio.run(
        scripted_call(
            address, number, digits.split(), wait_s=wait, ani=ani, central_address=cfg.central.listen,
            hang_up_after_s=hang_up_after,
        )
    )  # fmt: skip
    if json_out:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        for line in text_lines(report):
            typer.echo(line)


# --- config helpers --------------------------------------------------------------------------------


@app.command("hash-password")
def hash_password(
    operator: Annotated[
        bool, typer.Option("--operator", help="An operator's dashboard password (8 to 64 characters).")
    ] = False,
) -> None:
    """Read a password (prompt or stdin) and print its argon2id hash for the config: a six-digit
    agent password, or with --operator a dashboard operator's."""
    from tools.province.generate import hash_operator_password
    from tools.province.generate import hash_password as hash_

    what = "Operator password (8 to 64 characters)" if operator else "Agent password (six digits)"
    if sys.stdin.isatty():
        password = typer.prompt(what, hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().strip()
    try:
        typer.echo(hash_operator_password(password) if operator else hash_(password))
    except ValueError as exc:
        fail(str(exc))


@app.command("sip-ha1")
def sip_ha1(
    code: Annotated[str, typer.Option("--code", help="The agent code (the phone's SIP user).")],
    realm: Annotated[str, typer.Option("--realm", help="The site's sip.realm.")] = "vcc",
) -> None:
    """Read an agent's SIP phone password (prompt, or stdin) and print HA1 for `sip_ha1`."""
    from site_node.sip.registrar import ha1

    if sys.stdin.isatty():
        password = typer.prompt("Phone password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().strip()
    if not password:
        fail("an empty password")
    typer.echo(ha1(code, realm, password))


@app.command("kamailio-dispatcher")
def kamailio_dispatcher(
    config: ConfigOpt,
    entry: Annotated[
        list[str], typer.Option(help="SITE=PORT: the city's interconnect port on the entry (repeat).")
    ],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write here (default: stdout).")] = None,
) -> None:
    """The dispatcher list of the province's Kamailio entry (deploy/kamailio/kamailio.cfg)."""
    from tools.province.kamailio import dispatcher_list

    cfg = load_config(config)
    entries: dict[str, int] = {}
    for item in entry:
        site_id, sep, port = item.partition("=")
        if not sep or not is_digits(port) or not 0 < int(port) < 65536:
            fail(f"--entry: {item!r} is not SITE=PORT")
        entries[site_id] = int(port)
    try:
        text = dispatcher_list(cfg, entries)
    except ValueError as exc:
        fail(f"--entry: {exc}")
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)


@app.command("check-config")
def check_config(path: Annotated[Path, typer.Argument(help="The province config (YAML).")]) -> None:
    """Validate a province config and print a one-line summary."""
    cfg = load_config(path)
    agents = sum(len(s.agents) for s in cfg.sites)
    typer.echo(
        f"ok: province {cfg.province.id} ({cfg.province.name}), "
        f"service number {cfg.province.service_number}, "
        f"{len(cfg.sites)} sites ({', '.join(s.id for s in cfg.sites)}), {agents} agents, "
        f"central {cfg.central.listen}, etcd {', '.join(cfg.etcd.endpoints)}"
    )


@prompts_app.command("build")
def prompts_build(
    config: ConfigOpt,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for the files (default: each site's sip.prompts_dir)."),
    ] = None,
    flows: Annotated[
        list[Path] | None,
        typer.Option("--flows", help="IVR flow documents whose prompts to build (default: deploy/flows/)."),
    ] = None,
) -> None:
    """Build every SIP site's prompts and the IVR flows' (espeak-ng + sox, 8 kHz WAV); up-to-date
    files are kept."""
    from tools.province.prompts import PromptBuildError, build_prompts, load_flows

    cfg = load_config(config)
    try:
        built = build_prompts(cfg, out, flows=load_flows(flows) if flows else None)
    except PromptBuildError as exc:
        fail(str(exc), 1)
    for path in built:
        typer.echo(str(path))


# --- local cluster ---------------------------------------------------------------------------------


@cluster_app.command("up")
def cluster_up(
    config: ConfigOpt,
    run_dir: RunDirOpt = DEFAULT_CLUSTER_DIR,
    seed_customers: Annotated[int, typer.Option(min=0, help="Demo customers central creates.")] = 1000,
    fresh_ports: Annotated[bool, typer.Option(help="Move central and the sites to free ports.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds each process has to come up.")] = 60.0,
    *,
    central_replicas: Annotated[
        int, typer.Option(min=1, max=9, help="Central replicas (replica 1 on central.listen; one leads).")
    ] = 1,
    with_fault_proxies: Annotated[
        bool, typer.Option(help="Every site's links through fault proxies, for `vcc chaos partition`.")
    ] = False,
    database: Annotated[
        str,
        typer.Option(
            help="config: the province file's central database; postgresql: a PostgreSQL server the "
            "cluster starts (stopped by `vcc cluster down`; `vcc chaos stop-database` stops it meanwhile)."
        ),
    ] = "config",
) -> None:
    """Start etcd, central and every site in the background; `vcc cluster down` stops them."""
    from tools.province.cluster import Cluster, ClusterError, start_database, stop_database
    from tools.province.proxied import start_with_fault_proxies

    load_config(config)
    if database not in ("config", "postgresql"):
        fail(f"--database: config or postgresql, not {database!r}")

    async def up() -> Cluster:
        url = await start_database(run_dir) if database == "postgresql" else None
        try:
            if with_fault_proxies:
                proxied, _ = await start_with_fault_proxies(
                    config,
                    run_dir,
                    seed_customers=seed_customers,
                    fresh_ports=fresh_ports,
                    timeout_s=timeout,
                    central_replicas=central_replicas,
                    database_url=url,
                )
                return proxied
            return await Cluster.start(
                config,
                run_dir,
                seed_customers=seed_customers,
                fresh_ports=fresh_ports,
                timeout_s=timeout,
                central_replicas=central_replicas,
                database_url=url,
            )
        except BaseException:
            await asyncio.to_thread(stop_database, run_dir)
            raise

    try:
        cluster = asyncio.run(up())
    except ConfigError as exc:
        fail(str(exc))
    except ClusterError as exc:
        fail(str(exc), code=1)
    addrs = cluster.addresses
    typer.echo(f"cluster up in {cluster.run_dir}")
    typer.echo(f"  config   {cluster.config_path}")
    typer.echo(f"  etcd     {addrs.etcd}")
    typer.echo(f"  central  {addrs.central}")
    for site_id, address in addrs.sites.items():
        sip = cluster.config.site(site_id).sip
        typer.echo(f"  site {site_id:<4}{address}" + (f"   SIP {sip.listen}" if sip is not None else ""))
    typer.echo(f"  logs     {cluster.logs_dir}")
    typer.echo(f"status: vcc status --config {cluster.config_path}")
    typer.echo(f"stop:   vcc cluster down --run-dir {cluster.run_dir}")


@cluster_app.command("down")
def cluster_down(run_dir: RunDirOpt = DEFAULT_CLUSTER_DIR) -> None:
    """Stop the cluster of a run folder: SIGTERM, then SIGKILL for whoever does not stop in time."""
    from tools.province.cluster import ClusterError, down

    try:
        stopped = asyncio.run(down(run_dir))
    except ClusterError as exc:
        fail(str(exc), code=1)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else f"nothing runs in {run_dir}")


@cluster_app.command("status")
def cluster_status(run_dir: RunDirOpt = DEFAULT_CLUSTER_DIR) -> None:
    """Which processes of the run folder's cluster are running."""
    from rich.table import Table

    from tools.province.cluster import ClusterError, read_cluster_json, status

    try:
        procs = status(run_dir)
        where = read_cluster_json(run_dir)
    except ClusterError as exc:
        fail(str(exc), code=1)
    if not procs:
        typer.echo(f"no cluster in {run_dir}")
        raise typer.Exit(1)
    table = Table(title=f"cluster in {run_dir}")
    for col in ("process", "pid", "state", "address", "log"):
        table.add_column(col)
    for p in procs:
        table.add_row(
            p.name, str(p.pid), "[green]running[/]" if p.alive else "[red]stopped[/]", p.address, str(p.log)
        )
    console().print(table)
    # Where to reach each part, as cluster.json gives it to scripts (SPEC §6).
    for name, part in [("central", where.get("central", {})), *where.get("sites", {}).items()]:
        typer.echo(f"  {name:<8} " + "  ".join(f"{k} {v}" for k, v in part.items()))
    if not all(p.alive for p in procs):
        raise typer.Exit(1)


@app.command()
def status(
    config: ConfigOpt,
    deadline: Annotated[float, typer.Option(help="Seconds to wait for each answer.")] = 3.0,
) -> None:
    """Every site: up/down, agents, waiting calls, trunks, outbox (from central, else from the sites)."""
    from tools.province.status import print_status

    cfg = load_tool_config(config)
    all_up = asyncio.run(print_status(cfg, console(), deadline))
    if not all_up:
        raise typer.Exit(1)


@app.command()
def audit(
    config: ConfigOpt,
    since: Annotated[str | None, typer.Option(help="15m, 2h, 1d (ago) or an ISO time.")] = None,
    who: Annotated[str, typer.Option(help="Only actors containing this (agent:1001, site/gz...).")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many, newest first.")] = 100,
) -> None:
    """Central's audit log: logins, failed logins, lockouts, refused certificates, actions."""
    import time

    import grpc

    from tools.admin.audit import fetch, lines, parse_since

    cfg = load_tool_config(config)
    try:
        since_s = parse_since(since, time.time()) if since else None
    except ValueError as exc:
        fail(str(exc))
    try:
        entries = asyncio.run(fetch(cfg, since=since_s, who=who, limit=limit, deadline_s=5.0))
    except grpc.aio.AioRpcError as exc:
        fail(f"central: {exc.code().name}: {exc.details()}", code=1)
    for line in lines(entries, as_json):
        typer.echo(line)


recordings_app = typer.Typer(
    help="Call recordings: central's index, files from their sites.", no_args_is_help=True
)
app.add_typer(recordings_app, name="recordings")


@recordings_app.command("list")
def recordings_list(
    config: ConfigOpt,
    call: Annotated[str, typer.Option("--call", help="Only this call id.")] = "",
    agent: Annotated[str, typer.Option(help="Only calls this agent talked in.")] = "",
    caller: Annotated[str, typer.Option(help="Only calls from this number.")] = "",
    since: Annotated[
        str | None, typer.Option(help="Started at or after: 15m, 2h, 1d (ago) or an ISO time.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Started before: 15m, 2h, 1d (ago) or an ISO time.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many, newest first.")] = 100,
) -> None:
    """Recorded calls, newest first, by call, agent, caller number and time."""
    import time

    import grpc

    from tools.admin.audit import parse_since
    from tools.admin.recordings import Filters, lines, search

    cfg = load_tool_config(config)
    now = time.time()
    try:
        since_s = parse_since(since, now) if since else None
        until_s = parse_since(until, now) if until else None
    except ValueError as exc:
        fail(str(exc).replace("--since", "--since/--until"))
    filters = Filters(call, agent, caller, since_s, until_s, limit)
    try:
        found = asyncio.run(search(cfg, filters, deadline_s=5.0))
    except grpc.aio.AioRpcError as exc:
        fail(f"central: {exc.code().name}: {exc.details()}", code=1)
    for line in lines(found, as_json):
        typer.echo(line)


@recordings_app.command("fetch")
def recordings_fetch(
    config: ConfigOpt,
    call_id: Annotated[str, typer.Argument(help="The call whose recording to fetch.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="A file, or a folder for <call id>.wav.")] = Path(
        "."
    ),
) -> None:
    """A call's recording (WAV), from the site that keeps it; its checksum checked against the index."""
    import grpc

    from tools.admin.recordings import FetchError, fetch

    cfg = load_tool_config(config)
    target = out / f"{call_id}.wav" if out.is_dir() else out
    try:
        entry = asyncio.run(fetch(cfg, call_id, target, deadline_s=5.0))
    except FetchError as exc:
        fail(str(exc), code=1)
    except grpc.aio.AioRpcError as exc:
        fail(f"{exc.code().name}: {exc.details()}", code=1)
    typer.echo(f"{target}  {entry.duration_s:.1f}s  sha256 {entry.sha256}")


@app.command()
def stats(
    *,
    central_addr: Annotated[
        str | None,
        typer.Option("--central", help="The dashboard's address (host:port, served over HTTPS, or a URL)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="The province config (its dashboard address).")
    ] = None,
    csv: Annotated[bool, typer.Option("--csv", help="Print the interval report as CSV instead.")] = False,
    date: Annotated[str | None, typer.Option(help="--csv: first day, YYYY-MM-DD (default today).")] = None,
    days: Annotated[int, typer.Option(min=1, max=31, help="--csv: number of days.")] = 1,
    daily: Annotated[bool, typer.Option(help="--csv: one row per day instead of per 15 minutes.")] = False,
    level: Annotated[
        list[str] | None,
        typer.Option(help="--csv: province, entry_site, served_site, skill_group, agent (repeatable)."),
    ] = None,
    user: Annotated[
        str, typer.Option("--user", envvar="VCC_OPERATOR", help="An operator of the config's `operators`.")
    ] = "",
) -> None:
    """Central's real-time figures per city as a table, or the interval report with --csv.

    The dashboard needs an operator's login: --user (or VCC_OPERATOR), the password from
    VCC_OPERATOR_PASSWORD or asked for."""
    from tools.province import stats as stats_cli

    province = load_tool_config(config) if config is not None else None
    if central_addr:
        address = central_addr
    elif province is not None:
        found = stats_cli.dashboard_address(province)
        if found is None:
            fail(f"{config} names no dashboard address (central.dashboard_listen); use --central")
        address = found
    else:
        fail("give --central ADDR (the dashboard's host:port) or --config F")
    base = stats_cli.base_url(address, province)
    if not user:
        fail("give --user NAME (an operator of the province config), or set VCC_OPERATOR")
    password = os.environ.get("VCC_OPERATOR_PASSWORD") or typer.prompt("Operator password", hide_input=True)
    try:
        cookie = stats_cli.login(base, user, password)
        if csv:
            typer.echo(
                stats_cli.intervals_csv(
                    base,
                    date=date,
                    length_s=86400 if daily else 900,
                    days=days,
                    levels=level or (),
                    cookie=cookie,
                ),
                nl=False,
            )
        else:
            stats_cli.print_live(stats_cli.live(base, cookie=cookie), console())
    except stats_cli.StatsUnavailable as exc:
        fail(str(exc), code=1)


# --- load ------------------------------------------------------------------------------------------


@app.command()
def agents(
    config: ConfigOpt,
    *,
    site_id: Annotated[str, typer.Option("--site", "-s", help="Log in every agent of this site.")],
    password: Annotated[str, typer.Option(help="The agents' six-digit password.")] = "123456",
    answer_delay: Annotated[
        float, typer.Option(min=0, help="Seconds before answering an offered call.")
    ] = 0.0,
    handle_time: Annotated[float, typer.Option(min=0, help="Mean talk time in seconds (exponential).")] = 2.0,
    duration: Annotated[
        float | None, typer.Option(min=0, help="Stop after this many seconds (default: Ctrl-C).")
    ] = None,
    seed: int = 0,
    sip: Annotated[
        bool, typer.Option("--sip", help="Answer on real SIP phones (baresip, registered).")
    ] = False,
    phone_password: Annotated[
        str, typer.Option(help="--sip: the phones' password (the config holds its sip_ha1).")
    ] = "4321",
) -> None:
    """Robot agents for one site: log in, go ready, answer, talk, hang up."""
    cfg = load_tool_config(config)
    try:
        site_cfg = cfg.site(site_id)
    except ConfigError as exc:
        fail(str(exc))
    from tools.simulation.robots import RobotPolicy, run_robots

    policy = RobotPolicy(answer_delay_s=answer_delay, handle_time_mean_s=handle_time, seed=seed)
    # Group leaders and administrators are people, never robots.
    roster = [(a.code, password) for a in site_cfg.agents if a.role == "agent"]
    if not roster:
        fail(f"site {site_id} has no agents in {config}")

    if sip and site_cfg.sip is None:
        fail(f"--sip: site {site_id} has no SIP trunk in {config}")

    async def main() -> object:
        stop = asyncio.Event()
        _stop_on_signals(stop, duration)
        if sip:
            import tempfile

            from tools.simulation.sip_callers import run_sip_robots

            work = Path(tempfile.mkdtemp(prefix=f"vcc-phones-{site_id}-"))
            return await run_sip_robots(
                site_cfg, roster, policy, stop, work=work, phone_password=phone_password
            )
        return await run_robots(site_cfg.listen, roster, policy, stop, site_id=site_cfg.id)

    typer.echo(f"{len(roster)} robot agents on {site_id} ({site_cfg.listen}); Ctrl-C to stop", err=True)
    stats = asyncio.run(main())
    typer.echo(str(stats))


@app.command()
def traffic(
    config: ConfigOpt,
    *,
    rate: Annotated[list[str], typer.Option(help="SITE=CALLS_PER_SECOND, repeated for each site.")],
    duration: Annotated[float, typer.Option(min=0, help="Seconds of arrivals.")] = 60.0,
    patience: Annotated[float | None, typer.Option(min=0, help="Mean caller patience in seconds.")] = None,
    seed: int = 0,
    journal: Annotated[Path | None, typer.Option(help="Write one JSON line per call here.")] = None,
    sip: Annotated[
        bool, typer.Option("--sip", help="Real SIP callers (SIPp) with audio and digits.")
    ] = False,
    digits: Annotated[str, typer.Option(help="--sip: the menu digits each caller presses.")] = "1",
    hold: Annotated[float, typer.Option(min=0, help="--sip: seconds each caller stays on the line.")] = 20.0,
) -> None:
    """Callers: Poisson arrivals at each site's trunk, through the IVR, until they are served or give up.

    With --sip: SIPp callers at a steady rate into each site's SIP trunk; each presses `--digits`
    (RFC 2833), streams a 440 Hz tone and hangs up after `--hold` seconds."""
    cfg = load_tool_config(config)
    if sip:
        _sip_traffic(cfg, rate, duration, digits, hold)
        return
    from tools.simulation.traffic import SiteLoad, TrafficPlan, run_traffic

    loads = []
    for item in rate:
        site_id, sep, value = item.partition("=")
        try:
            per_s = float(value)
            site_cfg = cfg.site(site_id)
        except ValueError:
            fail(f"--rate: {item!r} is not SITE=CALLS_PER_SECOND")
        except ConfigError as exc:
            fail(f"--rate: {exc}")
        if not sep or per_s < 0:
            fail(f"--rate: {item!r} is not SITE=CALLS_PER_SECOND")
        loads.append(SiteLoad(site_id, site_cfg.listen, per_s))
    if not loads:
        fail("--rate: give at least one SITE=CALLS_PER_SECOND")
    plan = TrafficPlan(loads, duration, seed=seed, dnis=cfg.province.service_number, patience_mean_s=patience)
    views = asyncio.run(run_traffic(plan, journal=journal))
    outcomes: dict[str, int] = {}
    for view in views:
        key = str(getattr(view, "outcome", "?"))
        outcomes[key] = outcomes.get(key, 0) + 1
    typer.echo(f"{len(views)} calls: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))


def _sip_traffic(cfg: ProvinceConfig, rate: list[str], duration: float, digits: str, hold: float) -> None:
    import tempfile

    from tools.simulation.sip_callers import run_sip_traffic

    if not digits or not set(digits) <= set("0123456789"):
        fail(f"--digits: {digits!r} is not menu digits")
    plans = []
    for item in rate:
        site_id, sep, value = item.partition("=")
        try:
            per_s = float(value)
            site_cfg = cfg.site(site_id)
        except (ValueError, ConfigError):
            fail(f"--rate: {item!r} is not SITE=CALLS_PER_SECOND of a site in the config")
        if not sep or per_s <= 0:
            fail(f"--rate: {item!r} is not SITE=CALLS_PER_SECOND")
        if site_cfg.sip is None:
            fail(f"--sip: site {site_id} has no SIP trunk")
        plans.append((site_cfg, per_s))
    if not plans:
        fail("--rate: give at least one SITE=CALLS_PER_SECOND")
    work = Path(tempfile.mkdtemp(prefix="vcc-sip-traffic-"))

    async def main() -> list[object]:
        return list(
            await asyncio.gather(*(
                run_sip_traffic(site_cfg, rate=per_s, duration_s=duration, hold_s=hold, digits=digits,
                                work=work / site_cfg.id, service=cfg.province.service_number)
                for site_cfg, per_s in plans
            ))
        )  # fmt: skip

    results = asyncio.run(main())
    for (site_cfg, _), result in zip(plans, results, strict=True):
        ok = getattr(result, "ok", False)
        answered = len(getattr(result, "vcc_call_ids", []))
        typer.echo(f"{site_cfg.id}: {answered} calls answered by the site, SIPp {'ok' if ok else 'failed'} "
                   f"(logs in {work / site_cfg.id})")  # fmt: skip
    if not all(getattr(r, "ok", False) for r in results):
        raise typer.Exit(1)


def _stop_on_signals(stop: asyncio.Event, duration_s: float | None) -> None:
    """SIGINT/SIGTERM (and the optional duration) set `stop`, for a graceful end."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if duration_s is not None:
        loop.call_later(duration_s, stop.set)


# --- demo ------------------------------------------------------------------------------------------


@app.command()
def demo(
    duration: Annotated[
        float | None, typer.Option(min=1, help="Stop after S seconds (default: Ctrl-C).")
    ] = None,
    summary_json: Annotated[Path | None, typer.Option(help="Write the summary report here (JSON).")] = None,
    run_dir: Annotated[Path, typer.Option(help="The demo's run folder (wiped at start).")] = Path("run/demo"),
    sites: Annotated[
        int, typer.Option(min=3, max=10, help="Number of cities (the first, gz, is overloaded).")
    ] = 3,
    seed: int = 42,
) -> None:
    """A local province of 3+ cities with robot agents and callers; gz is overloaded. Prints a summary."""
    from tools.simulation.demo import DemoOptions, run_demo

    code = run_demo(
        DemoOptions(duration_s=duration, summary_json=summary_json, run_dir=run_dir, sites=sites, seed=seed)
    )
    if code:
        raise typer.Exit(code)


@app.command()
def simulate(
    scenario: Annotated[Path, typer.Argument(help="The scenario (YAML, see the README).")],
    report: Annotated[Path | None, typer.Option(help="Write the report here (JSON).")] = None,
    engine: Annotated[
        str, typer.Option(help="real: a local cluster of processes; model: virtual time, no processes.")
    ] = "real",
    run_dir: Annotated[Path, typer.Option(help="The run folder (wiped at start).")] = Path("run/simulate"),
) -> None:
    """Run a scenario (traffic, robot agents, fault events); print a table, write the JSON report."""
    from tools.simulation.scenario import ScenarioError, load_scenario
    from tools.simulation.simulate import run_simulation

    if engine not in ("real", "model"):
        fail(f"--engine: {engine!r} is not one of real, model")
    try:
        parsed = load_scenario(scenario)
    except ScenarioError as exc:
        fail(str(exc))
    code = run_simulation(parsed, report, run_dir, engine=engine)
    if code:
        raise typer.Exit(code)


@app.command()
def screenshots(
    out: Annotated[Path, typer.Option("--out", help="Folder for the pictures.")] = Path("docs/screenshots"),
) -> None:
    """Pictures of the agent desktop and the group leader's console, English and Chinese, from a
    real one-city province in headless Chromium."""
    from tools.admin.screenshots import take

    for path in asyncio.run(take(out)):
        typer.echo(str(path))


@app.command("chaos")
def chaos_command(
    action: Annotated[
        str,
        typer.Argument(
            help="partition | heal | kill-site | restart-site | stop-database | start-database | soak"
        ),
    ],
    run_dir: Annotated[
        Path | None,
        typer.Option(help="The cluster's run folder (soak: its own run folder, wiped at start, run/soak)."),
    ] = None,
    site: Annotated[str | None, typer.Option("--site", "-s", help="The site to act on.")] = None,
    *,
    silent: Annotated[
        bool,
        typer.Option(
            help="partition: stop forwarding on open connections without resetting them (a pulled cable)."
        ),
    ] = False,
    cycles: Annotated[int, typer.Option(help="soak: how many fault cycles.")] = 20,
    database: Annotated[str, typer.Option(help="soak: central's database, postgresql or sqlite.")] = (
        "postgresql"
    ),
    report: Annotated[Path | None, typer.Option(help="soak: write the report here (JSON).")] = None,
) -> None:
    """Break a running `vcc cluster` by hand, as simulate scenarios do (see docs/RELIABILITY.md);
    `soak` runs its own busy cluster through --cycles faults in rotation, checked after each."""
    if action == "soak":
        from tools.chaos.soak import DEFAULT_RUN_DIR, run_soak

        if database not in ("postgresql", "sqlite"):
            fail(f"--database: {database!r} is not one of postgresql, sqlite")
        if cycles < 1:
            fail("--cycles: at least 1")
        code = run_soak(
            cycles,
            "postgresql" if database == "postgresql" else "sqlite",
            report,
            run_dir if run_dir is not None else DEFAULT_RUN_DIR,
        )
        if code:
            raise typer.Exit(code)
        return
    from tools.chaos.actions import ChaosError, chaos

    try:
        typer.echo(
            asyncio.run(
                chaos(action, run_dir if run_dir is not None else DEFAULT_CLUSTER_DIR, site, silent=silent)
            )
        )
    except ChaosError as exc:
        fail(str(exc), code=1)


def main() -> None:
    app()
