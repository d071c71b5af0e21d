"""Where vcc parses a number, only ASCII 0-9 are digits (vcc.digits).

`str.isdigit()`, `int()` and `\\d` also take full-width digits (U+FF10 to U+FF19, what a Chinese
input method types), superscripts and other scripts' digits. Each entry point below refused
nothing of the kind before; now each says what it wants, and changes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.requests import Request
from typer.testing import CliRunner

from central.main import check_replica
from tests.central.province import province, province_data
from tests.helpers import full_width
from tools.admin.audit import parse_since
from tools.admin.roster import RosterError, parse_skills
from tools.cli import app
from tools.province.cluster import Cluster, ClusterError
from tools.province.generate import hash_password
from vcc.config import ConfigError, parse_province
from vcc.digits import is_digits
from vcc.errors import InvalidArgument
from vcc.ivr.keys import flow_key, parse_key
from vcc.sdnotify import Notifier


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("0123456789", True),
        ("", False),
        (full_width("12"), False),
        ("1\u00b2", False),  # a superscript two: isdigit() True, int() refuses it
        ("\u0661\u0662", False),  # Arabic-Indic digits: isdigit() and int() take them
        ("12\n", False),
        ("-1", False),
        (" 1", False),
    ],
)
def test_only_ascii_digits_are_digits(text: str, digits: bool) -> None:
    assert is_digits(text) is digits


# Configuration and the processes' command lines -------------------------------------------------


def test_the_service_number_and_listen_addresses_in_a_config_are_ascii_digits() -> None:
    data = province_data()
    data["province"]["service_number"] = full_width("10000")
    with pytest.raises(ConfigError, match="service_number"):
        parse_province(data)
    data = province_data(central_listen="127.0.0.1:" + full_width("7000"))
    with pytest.raises(ConfigError, match="listen"):
        parse_province(data)
    assert parse_province(province_data()).province.service_number == "10000"


def test_centrals_listen_option_wants_an_ascii_port() -> None:
    config = province()
    check_replica(config, "127.0.0.1:7001", "2")
    with pytest.raises(ConfigError, match="--listen: host:port"):
        check_replica(config, "127.0.0.1:" + full_width("7001"), "2")


def test_a_watchdog_period_in_full_width_digits_is_no_watchdog() -> None:
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": full_width("200000")}
    assert Notifier.from_env(env).watchdog_s is None
    assert Notifier.from_env({**env, "WATCHDOG_USEC": "200000"}).watchdog_s == pytest.approx(0.2)


def test_an_ivr_flow_key_with_a_full_width_version_is_not_a_flow() -> None:
    key = flow_key("/vcc", "gd", "postal", 3)
    assert parse_key("/vcc", "gd", key) == ("postal", 3)
    assert parse_key("/vcc", "gd", key[:-1] + full_width("3")) is None


# The site's web API ------------------------------------------------------------------------------


async def test_a_desk_requests_content_length_that_is_not_ascii_digits_is_not_read_as_a_number() -> None:
    """A superscript in Content-Length passed isdigit() and then broke int(): a 500, not a 400."""
    from site_node.web.requests import body_of

    body = json.dumps({"a": 1}).encode()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(b"content-type", b"application/json"), (b"content-length", "\u00b9".encode("latin-1"))],
    }
    assert await body_of(Request(scope, receive)) == {"a": 1}
    scope["headers"] = [(b"content-type", b"application/json"), (b"content-length", b"99999999")]
    with pytest.raises(InvalidArgument, match="at most"):
        await body_of(Request(scope, receive))


# The command line --------------------------------------------------------------------------------


def test_the_cli_refuses_full_width_digits_with_a_readable_message(tmp_path: Path) -> None:
    config = tmp_path / "province.yaml"
    config.write_text(yaml.safe_dump(province_data()), encoding="utf-8")
    runner = CliRunner()
    args = ["kamailio-dispatcher", "--config", str(config), "--entry"]
    refused = runner.invoke(app, [*args, "gz=" + full_width("5060")])
    assert refused.exit_code == 2 and "is not SITE=PORT" in refused.output
    # The same entry in ASCII digits gets past the port (to this config's missing trunk).
    assert "no SIP trunk for site(s) gz" in runner.invoke(app, [*args, "gz=5060"]).output

    with pytest.raises(RosterError, match="GROUP=LEVEL"):
        parse_skills(["general=" + full_width("5")])
    assert parse_skills(["general=5"]) == {"general": 5}

    with pytest.raises(ValueError, match="--since: 15m, 2h, 1d or an ISO time"):
        parse_since(full_width("15") + "m", 1_000_000.0)
    assert parse_since("15m", 1_000_000.0) == 1_000_000.0 - 900

    with pytest.raises(ValueError, match="six digits"):
        hash_password(full_width("123456"))


async def test_a_local_clusters_replica_number_is_ascii_digits() -> None:
    cluster: Any = Cluster.__new__(Cluster)  # only what the check reads
    cluster.centrals, cluster.central_replicas = {}, 2
    with pytest.raises(ClusterError, match="no central replica"):
        await cluster.start_central_replica(full_width("1"))
