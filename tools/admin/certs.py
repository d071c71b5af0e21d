"""`vcc certs ...`: make a province CA, issue and renew node certificates, show one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vcc import tls

certs_app = typer.Typer(
    help="Mutual TLS: a province CA and every node's certificate (see docs/SECURITY.md).",
    no_args_is_help=True,
)
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="The certificates' folder (holds ca.crt, ca.key).")]
HostOpt = Annotated[
    list[str], typer.Option("--host", help="A host name or IP the node serves on (repeatable).")
]
DaysOpt = Annotated[int, typer.Option(min=1, max=3650, help="Validity of each certificate, in days.")]


@certs_app.command("province")
def province(
    config: Annotated[Path, typer.Option("--config", "-c", help="The province config (YAML).")],
    out: OutOpt = Path("certs"),
    central_replicas: Annotated[int, typer.Option(min=1, max=9)] = 1,
    host: HostOpt | None = None,
    days: DaysOpt = 365,
) -> None:
    """The CA (unless OUT has one) and a certificate for every site, central replica, tool persona
    and the etcd server of the province. Run again to renew them all (the CA is kept)."""
    from tools.province.certs import province_certs
    from vcc.config import ConfigError, load_province

    try:
        cfg = load_province(config)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    issued = province_certs(cfg, out, central_replicas=central_replicas, hosts=host or [], days=days)
    for item in issued:
        typer.echo(f"{item.kind}/{item.name}\t{item.cert}")
    typer.echo(f"CA {out / 'ca.crt'}: put `tls: {{ca_file: {out / 'ca.crt'}}}` in the province config")


@certs_app.command("ca")
def ca(province_id: Annotated[str, typer.Option("--province")], out: OutOpt = Path("certs")) -> None:
    """A new CA in OUT (refused if one is there: every certificate would have to be reissued)."""
    from tools.province.certs import CA_STEM, make_ca

    if (out / f"{CA_STEM}.crt").exists():
        typer.echo(f"error: {out / 'ca.crt'} exists", err=True)
        raise typer.Exit(2)
    typer.echo(str(make_ca(out, province_id)))


@certs_app.command("issue")
def issue(
    kind: Annotated[str, typer.Argument(help=f"One of {', '.join(tls.KINDS)}.")],
    name: Annotated[str, typer.Argument(help="The site id, replica id, or persona name.")],
    out: OutOpt = Path("certs"),
    host: HostOpt | None = None,
    days: DaysOpt = 365,
) -> None:
    """Issue (or renew) one certificate, `KIND-NAME.crt/.key` in OUT, signed by the CA there."""
    from tools.province.certs import issue as issue_

    try:
        item = issue_(out, kind, name, host or [], days)
    except (tls.TlsError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{item.cert}\n{item.key}")


@certs_app.command("show")
def show(cert: Annotated[Path, typer.Argument(help="A certificate (PEM).")]) -> None:
    """The identity, hosts and validity of a certificate."""
    from cryptography import x509

    from vcc.authz import _identity_of_pem

    pem = cert.read_bytes()
    parsed = x509.load_pem_x509_certificate(pem)
    typer.echo(f"identity  {_identity_of_pem(pem) or '(none: not a vcc node certificate)'}")
    typer.echo(f"subject   {parsed.subject.rfc4514_string()}")
    typer.echo(f"issuer    {parsed.issuer.rfc4514_string()}")
    typer.echo(f"valid     {parsed.not_valid_before_utc:%Y-%m-%d} to {parsed.not_valid_after_utc:%Y-%m-%d}")
