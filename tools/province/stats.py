"""`vcc stats`: central's real-time figures as a table, or the interval report as CSV.

Reads the dashboard's JSON API (central.web.server): `/api/live` and `/api/intervals.csv`, after
logging in as one of the province's operators (`/api/login`: the session cookie). The dashboard is
HTTPS (vcc.https): its certificate is checked against the province CA (the config's `tls.ca_file`,
or `VCC_TLS_CA`), never accepted unchecked.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from vcc.config import ProvinceConfig
from vcc.https import client_context
from vcc.tls import CA_ENV

DEFAULT_TIMEOUT_S = 5.0


class StatsUnavailable(Exception):
    """The dashboard did not answer (or answered an error)."""


def base_url(address: str, config: ProvinceConfig | None = None) -> str:
    """`host:port` or a URL -> the dashboard's base URL (https unless the config has no tls)."""
    address = address.strip().rstrip("/")
    scheme = "http" if config is not None and config.tls is None else "https"
    return address if "://" in address else f"{scheme}://{address}"


def verify_context(config: ProvinceConfig | None = None) -> ssl.SSLContext | None:
    """What the dashboard's certificate is checked with: the province CA of the config, or of
    `VCC_TLS_CA` (None: the system's roots, for a dashboard behind the operator's own TLS)."""
    ca = config.tls.ca_file if config is not None and config.tls is not None else os.environ.get(CA_ENV)
    return client_context(ca) if ca else None


def dashboard_address(config: ProvinceConfig) -> str | None:
    """The dashboard's address from the config, when the config has one (`central.dashboard_listen`)."""
    value = getattr(config.central, "dashboard_listen", None)
    return str(value) if value else None


def login(base: str, user: str, password: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """Log in as an operator: the session (the `Cookie` header value for the other calls)."""
    body = json.dumps({"user": user, "password": password}).encode()
    request = urllib.request.Request(
        f"{base}/api/login", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=verify_context()) as reply:
            for header in reply.headers.get_all("Set-Cookie") or []:
                pair = header.split(";", 1)[0]
                if pair.startswith("vcc_ops="):
                    return str(pair)
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", "")
        except ValueError:
            detail = ""
        raise StatsUnavailable(f"login at {base}: HTTP {exc.code} {detail}".rstrip()) from None
    except (urllib.error.URLError, OSError) as exc:
        raise StatsUnavailable(f"{base}: {getattr(exc, 'reason', exc)}") from None
    raise StatsUnavailable(f"login at {base}: no session in the answer")


def fetch(url: str, timeout_s: float = DEFAULT_TIMEOUT_S, cookie: str = "") -> bytes:
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=verify_context()) as reply:
            body: bytes = reply.read()
            return body
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise StatsUnavailable(f"{url}: HTTP {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise StatsUnavailable(f"{url}: {getattr(exc, 'reason', exc)}") from None


def live(base: str, timeout_s: float = DEFAULT_TIMEOUT_S, cookie: str = "") -> dict[str, Any]:
    data: dict[str, Any] = json.loads(fetch(f"{base}/api/live", timeout_s, cookie))
    return data


def intervals_csv(
    base: str,
    *,
    date: str | None = None,
    length_s: int = 900,
    days: int = 1,
    levels: Sequence[str] = (),
    timeout_s: float = DEFAULT_TIMEOUT_S,
    cookie: str = "",
) -> str:
    query: list[tuple[str, str]] = [("length", str(length_s)), ("days", str(days))]
    if date:
        query.append(("date", date))
    query += [("level", level) for level in levels]
    return fetch(f"{base}/api/intervals.csv?{urllib.parse.urlencode(query)}", timeout_s, cookie).decode()


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def live_table(snap: Mapping[str, Any]) -> Table:
    """One row per city and one for the province: live figures with their age, and today's records.

    wait/long s: calls waiting and the longest wait now; occ: agent occupancy; trunk/tie: channel
    occupancy; SL int/SL day: service level this interval/today; aband: abandon rate today;
    offer/answ: calls offered/answered today; ovf: overflow today; SQI: service quality index.
    """
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        title=f"{snap['province'].get('name') or 'province'}: live state and today's call records "
        f"(records read {_num(snap.get('records_age_s'), 1)} s ago)",
    )
    for col in (
        "city",
        "status",
        "age s",
        "wait",
        "long s",
        "ready",
        "busy",
        "occ",
        "trunk",
        "tie",
        "SL int",
        "SL day",
        "ASA s",
        "aband",
        "offer",
        "answ",
        "ovf in",
        "ovf out",
        "SQI",
    ):
        table.add_column(col, justify="left" if col in ("city", "status") else "right", no_wrap=True)

    def add(name: str, status: str, age: str, live: Mapping[str, Any] | None, rec: Mapping[str, Any]) -> None:
        today, interval = rec["today"], rec["interval"]
        lv = live or {}
        table.add_row(
            name,
            status,
            age,
            _num(lv.get("calls_waiting")),
            _num(lv.get("longest_wait_s"), 1),
            _num(lv.get("agents_ready")),
            _num(lv.get("agents_busy")),
            _pct(lv.get("occupancy")),
            _pct(lv.get("trunk_occupancy")),
            _pct(lv.get("tie_occupancy")),
            _pct(interval["service_level"]),
            _pct(today["service_level"]),
            _num(today["asa_s"], 1),
            _pct(today["abandon_rate"]),
            str(today["offered"]),
            str(today["answered"]),
            str(today["overflow_in"]),
            str(today["overflow_out"]),
            _num(today["quality_index"], 1),
        )

    status_style = {"up": "[green]up[/]", "stale": "[yellow]stale[/]", "down": "[red]down[/]"}
    for s in snap["sites"]:
        live = s["live"] if s["status"] != "down" else None
        add(
            s["name"] or s["site_id"],
            status_style.get(s["status"], s["status"]),
            _num(s["age_s"], 1),
            live,
            s["records"],
        )
    prov = snap["province"]
    agents = prov["live"].get("agents_by_state", {})
    prov_live = {
        **prov["live"],
        "agents_ready": agents.get("READY", 0),
        "agents_busy": sum(agents.get(k, 0) for k in ("RINGING", "TALKING", "HELD", "WRAP_UP")),
    }
    up = f"{prov['live']['sites_up']}/{prov['live']['sites_total']} up"
    add("[b]province[/]", up, "", prov_live, prov["records"])
    return table


def alert_lines(snap: Mapping[str, Any]) -> list[str]:
    lines = []
    for a in snap.get("alerts", []):
        who = a.get("name") or a.get("site_id") or "province"
        if a["kind"] == "site_down":
            lines.append(f"ALERT {who} unreachable (last data {_num(a.get('value'), 1)} s ago)")
        elif a["kind"] == "site_stale":
            lines.append(f"WARN  {who} data is stale ({_num(a.get('value'), 1)} s old)")
        elif a["kind"] == "sl_below_target":
            lines.append(f"ALERT {who} service level {_pct(a.get('value'))} below target this interval")
    return lines


def print_live(snap: Mapping[str, Any], console: Console) -> None:
    console.print(live_table(snap))
    for line in alert_lines(snap):
        console.print(line, markup=False)
