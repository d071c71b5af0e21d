"""The province config of an administration command, with the tool's identity adopted when the
province runs TLS (every link is mutual TLS: a tool dials as `tool-cli`)."""

from __future__ import annotations

from pathlib import Path

import typer

from tools.province.certs import adopt_tool_identity
from vcc.config import ConfigError, ProvinceConfig, load_province
from vcc.tls import TlsError


def load_admin_config(path: Path) -> ProvinceConfig:
    """The config, or a readable error and exit code 2."""
    try:
        config = load_province(path)
        adopt_tool_identity(config)
    except (ConfigError, TlsError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    return config
