"""`vcc roster`: a site's administrator manages its agents from the terminal (list, add, disable,
enable, reset a password, change skills), through the site's desktop API (site_node.web.admin),
logged in as the administrator: the same check of the role, the same audit, the same effect
(at once on the running site, kept across its restart) as from the console."""

from __future__ import annotations

import contextlib
import os
import ssl
import uuid
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from vcc.config import ConfigError, ProvinceConfig, load_province
from vcc.digits import is_digits
from vcc.https import client_verify, web_url

roster_app = typer.Typer(
    help="A site's agents, as its administrator changes them (add, disable, password, skills).",
    no_args_is_help=True,
)
ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="The province config (YAML).")]
SiteOpt = Annotated[str, typer.Option("--site", help="The site whose agents to manage.")]
AdminOpt = Annotated[
    str,
    typer.Option(
        "--admin",
        envvar="VCC_ADMIN",
        help="Your agent code (role administrator); password from VCC_ADMIN_PASSWORD or asked.",
    ),
]
CodeArg = Annotated[str, typer.Argument(help="The agent code (4 to 8 digits).")]
SkillsOpt = Annotated[
    list[str], typer.Option("--skill", help="GROUP=LEVEL (level 1-10); repeat for several groups.")
]
TIMEOUT_S = 20.0


class RosterError(Exception):
    pass


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def desk_url(config: ProvinceConfig, site_id: str) -> str:
    site = next((s for s in config.sites if s.id == site_id), None)
    if site is None:
        raise RosterError(f"--site: no site {site_id!r} in the config")
    if not site.desktop_listen:
        raise RosterError(f"site {site_id} serves no desktop API (sites.{site_id}.desktop_listen)")
    return web_url(config, site.desktop_listen, "")


def parse_skills(values: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        group, sep, level = v.partition("=")
        if not sep or not is_digits(level):
            raise RosterError(f"--skill {v!r}: GROUP=LEVEL, a level from 1 to 10")
        out[group] = int(level)
    if not out:
        raise RosterError("--skill GROUP=LEVEL: at least one")
    return out


def _check(reply: httpx.Response) -> dict[str, Any]:
    try:
        body: dict[str, Any] = reply.json()
    except ValueError:
        raise RosterError(f"HTTP {reply.status_code}: {reply.text[:200]}") from None
    if reply.status_code != 200:
        err = body.get("error", {})
        raise RosterError(f"{err.get('message', reply.text[:200])} [{err.get('id', reply.status_code)}]")
    return body


def session(base: str, admin: str, password: str, verify: ssl.SSLContext | bool = True) -> httpx.Client:
    """A client logged in as the administrator (logged out by `close`); `verify`: the province CA."""
    http = httpx.Client(base_url=base, timeout=TIMEOUT_S, verify=verify)
    try:
        _check(
            http.post(
                "/api/login", json={"agent_code": admin, "password": password, "idempotency_key": _key()}
            )
        )
    except httpx.HTTPError as exc:
        http.close()
        raise RosterError(f"{base}: {exc}") from None
    except RosterError:
        http.close()
        raise
    return http


def close(http: httpx.Client) -> None:
    with contextlib.suppress(httpx.HTTPError):
        http.post("/api/logout", json={"idempotency_key": _key()})
    http.close()


def _key() -> str:
    return uuid.uuid4().hex


def act(
    base: str,
    admin: str,
    password: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    verify: ssl.SSLContext | bool = True,
) -> dict[str, Any]:
    http = session(base, admin, password, verify)
    try:
        if method == "GET":
            return _check(http.get(path))
        return _check(http.post(path, json={**(body or {}), "idempotency_key": _key()}))
    except httpx.HTTPError as exc:
        raise RosterError(f"{base}: {exc}") from None
    finally:
        close(http)


def _run(
    config_path: Path, site_id: str, admin: str, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    try:
        config = load_province(config_path)
        base = desk_url(config, site_id)
    except (ConfigError, RosterError) as exc:
        fail(str(exc))
    if not admin:
        fail("give --admin CODE (an administrator of the site), or set VCC_ADMIN")
    password = os.environ.get("VCC_ADMIN_PASSWORD") or typer.prompt("Administrator password", hide_input=True)
    try:
        return act(base, admin, password, method, path, body, client_verify(config))
    except RosterError as exc:
        fail(str(exc), code=1)
    raise AssertionError("unreachable")


def _new_password(what: str) -> str:
    return os.environ.get("VCC_NEW_PASSWORD") or typer.prompt(what, hide_input=True, confirmation_prompt=True)


def _line(a: dict[str, Any]) -> str:
    skills = ",".join(f"{g}={lvl}" for g, lvl in a["skills"].items())
    flags = " disabled" if a["disabled"] else ""
    flags += " (added)" if a["added"] else ""
    return f"{a['code']}  {a['role']:<13} {a['state'] or '-':<10} {skills:<24} {a['name']}{flags}"


@roster_app.command("list")
def list_agents(config: ConfigOpt, site: SiteOpt, admin: AdminOpt = "") -> None:
    """The site's agents: code, role, state, skills, name (disabled, added by an administrator)."""
    for a in _run(config, site, admin, "GET", "/api/admin/agents")["agents"]:
        typer.echo(_line(a))


@roster_app.command()
def add(
    config: ConfigOpt,
    site: SiteOpt,
    code: CodeArg,
    skill: SkillsOpt,
    name: Annotated[str, typer.Option("--name", help="The agent's name.")] = "",
    admin: AdminOpt = "",
) -> None:
    """Add an agent (role agent) with its skills; its password from VCC_NEW_PASSWORD or asked."""
    try:
        skills = parse_skills(skill)
    except RosterError as exc:
        fail(str(exc))
    password = _new_password("The new agent's password (six digits)")
    body = {"agent_code": code, "name": name, "skills": skills, "password": password}
    typer.echo(_line(_run(config, site, admin, "POST", "/api/admin/agents", body)["agent"]))


@roster_app.command()
def skills(config: ConfigOpt, site: SiteOpt, code: CodeArg, skill: SkillsOpt, admin: AdminOpt = "") -> None:
    """Replace an agent's skills and levels (in force at once, on a ready agent too)."""
    try:
        parsed = parse_skills(skill)
    except RosterError as exc:
        fail(str(exc))
    reply = _run(config, site, admin, "POST", f"/api/admin/agents/{code}/skills", {"skills": parsed})
    typer.echo(_line(reply["agent"]))


@roster_app.command()
def password(config: ConfigOpt, site: SiteOpt, code: CodeArg, admin: AdminOpt = "") -> None:
    """Reset an agent's password (from VCC_NEW_PASSWORD or asked)."""
    new = _new_password(f"Agent {code}'s new password (six digits)")
    reply = _run(config, site, admin, "POST", f"/api/admin/agents/{code}/password", {"password": new})
    typer.echo(_line(reply["agent"]))


@roster_app.command()
def disable(config: ConfigOpt, site: SiteOpt, code: CodeArg, admin: AdminOpt = "") -> None:
    """Disable an agent: logged out (once its call is over) and refused at every login."""
    typer.echo(_line(_run(config, site, admin, "POST", f"/api/admin/agents/{code}/disable")["agent"]))


@roster_app.command()
def enable(config: ConfigOpt, site: SiteOpt, code: CodeArg, admin: AdminOpt = "") -> None:
    """Enable a disabled agent again."""
    typer.echo(_line(_run(config, site, admin, "POST", f"/api/admin/agents/{code}/enable")["agent"]))
