"""`vcc etcd roles`: etcd's users and roles for a province (each key writable only by its owner).

`vcc cluster up` does this for the etcd it starts; an operator with their own etcd cluster runs
this once (and again after adding a site or a central replica: what exists is kept).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

etcd_app = typer.Typer(
    help="etcd's own authorization for a province (see docs/SECURITY.md).", no_args_is_help=True
)


@etcd_app.command("roles")
def roles(
    config: Annotated[Path, typer.Option("--config", "-c", help="The province config (YAML).")],
    certs: Annotated[
        Path | None,
        typer.Option(help="The folder of etcd-root.crt/.key (default: beside the config's tls.ca_file)."),
    ] = None,
    central_replicas: Annotated[int, typer.Option(min=1, max=9)] = 1,
) -> None:
    """A user per identity of the province (sites, central replicas, the tool), then etcd's auth on."""
    from tools.province.certs import ETCD_ROOT_STEM
    from tools.province.etcd_roles import EtcdRolesError, enable_roles
    from vcc.config import ConfigError, load_province
    from vcc.tls import TlsFiles

    try:
        cfg = load_province(config)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if cfg.tls is None:
        typer.echo(
            "error: the province config has no `tls` (etcd's roles need its client certificates)", err=True
        )
        raise typer.Exit(2)
    ca = Path(cfg.tls.ca_file)
    folder = certs or ca.parent
    root = TlsFiles(ca, folder / f"{ETCD_ROOT_STEM}.crt", folder / f"{ETCD_ROOT_STEM}.key")
    endpoint = cfg.etcd.endpoints[0]
    try:
        enable_roles(
            endpoint,
            root,
            prefix=cfg.etcd.prefix,
            province_id=cfg.province.id,
            site_ids=[s.id for s in cfg.sites],
            central_replicas=central_replicas,
        )
    except EtcdRolesError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"etcd {endpoint}: auth on; users site-<id> ({len(cfg.sites)}),"
        f" central-1..{central_replicas}, tool-cli"
    )
