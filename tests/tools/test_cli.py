"""The `vcc` command line: help, config checks with readable errors, password hashing."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from argon2 import PasswordHasher
from typer.testing import CliRunner

from tools.cli import app
from tools.province.cluster import status as cluster_status

EXAMPLE = Path(__file__).parents[2] / "deploy" / "province.example.yaml"
runner = CliRunner()


def vcc(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The real command in a child process: what an operator sees, tracebacks included."""
    return subprocess.run(
        [sys.executable, "-m", "tools", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def broken_config(tmp_path: Path, edit: str) -> Path:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    if edit == "unknown-key":
        data["sites"][1]["trunk_groups"][0]["colour"] = "red"
    elif edit == "bad-value":
        data["etcd"]["lease_ttl_s"] = 0
    elif edit == "bad-ref":
        data["sites"][2]["ivr"]["default_skill_group"] = "billing"
    path = tmp_path / f"{edit}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in (
        "site",
        "central",
        "check-config",
        "hash-password",
        "cluster",
        "agents",
        "traffic",
        "status",
        "demo",
    ):
        assert command in result.output
    assert runner.invoke(app, ["cluster", "--help"]).exit_code == 0


def test_check_config_accepts_the_example() -> None:
    result = runner.invoke(app, ["check-config", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: province gd")
    assert "3 sites (gz, sz, fs)" in result.output


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        ("unknown-key", "sites.1.trunk_groups.0.colour: unknown key"),
        ("bad-value", "etcd.lease_ttl_s"),
        ("bad-ref", "ivr.default_skill_group: unknown skill group 'billing'"),
    ],
)
def test_check_config_names_the_key_of_a_bad_config(tmp_path: Path, edit: str, key: str) -> None:
    result = runner.invoke(app, ["check-config", str(broken_config(tmp_path, edit))])
    assert result.exit_code == 2
    assert key in result.stderr
    assert result.stderr.startswith("error: ")


def test_a_bad_config_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    bad = broken_config(tmp_path, "unknown-key")
    commands = (
        ["check-config", str(bad)],
        ["status", "--config", str(bad)],
        ["site", "--config", str(bad), "--site", "gz"],
        ["central", "--config", str(bad)],
    )
    # Four real processes side by side (each is mostly its imports).
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        results = list(pool.map(lambda args: vcc(*args), commands))
    for args, done in zip(commands, results, strict=True):
        assert done.returncode == 2, (args, done.stderr)
        assert "colour: unknown key" in done.stderr
        assert "Traceback" not in done.stderr + done.stdout


def test_missing_and_unparsable_files(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check-config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "cannot read" in result.stderr
    garbage = tmp_path / "garbage.yaml"
    garbage.write_text("sites: [unclosed", encoding="utf-8")
    result = runner.invoke(app, ["check-config", str(garbage)])
    assert result.exit_code == 2
    assert "not valid YAML" in result.stderr


def test_unknown_site_is_named() -> None:
    result = runner.invoke(app, ["site", "--config", str(EXAMPLE), "--site", "xx"])
    assert result.exit_code == 2
    assert "'xx'" in result.stderr
    assert "gz, sz, fs" in result.stderr


def test_traffic_rejects_a_bad_rate() -> None:
    pytest.importorskip("tools.simulation.traffic")
    result = runner.invoke(app, ["traffic", "--config", str(EXAMPLE), "--rate", "gz:3"])
    assert result.exit_code == 2
    assert "--rate" in result.stderr


def test_hash_password_from_stdin() -> None:
    result = runner.invoke(app, ["hash-password"], input="246810\n")
    assert result.exit_code == 0, result.output
    digest = result.stdout.strip()
    assert digest.startswith("$argon2id$")
    assert PasswordHasher().verify(digest, "246810")


def test_hash_password_refuses_what_is_not_six_digits() -> None:
    result = runner.invoke(app, ["hash-password"], input="abc\n")
    assert result.exit_code == 2
    assert "six digits" in result.stderr


@pytest.mark.cluster
def test_demo_runs_a_province_and_writes_its_summary(tmp_path: Path) -> None:
    """`make demo DEMO_ARGS="--duration S --summary-json F"`: the whole path, briefly."""
    summary = tmp_path / "out.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools",
            "demo",
            "--duration",
            "6",
            "--summary-json",
            str(summary),
            "--run-dir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "vcc status --config" in done.stdout
    report = json.loads(summary.read_text(encoding="utf-8"))
    assert set(report["sites"]) == {"gz", "sz", "fs"}
    assert report["totals"]["offered"] > 0
    assert report["reconciliation"]["missing"] == 0
    # Nothing of the demo outlives it.
    assert not any(p.alive for p in cluster_status(tmp_path / "run"))


def test_demo_refuses_to_wipe_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me", encoding="utf-8")
    result = runner.invoke(app, ["demo", "--duration", "5", "--run-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "not made by `vcc demo`" in result.stderr
    assert (tmp_path / "precious.txt").exists()


def test_closing_a_lost_site_names_an_unknown_site_before_asking_central() -> None:
    result = runner.invoke(app, ["records", "close-lost-site", "xx", "--config", str(EXAMPLE), "--yes"])
    assert result.exit_code == 2
    assert "no site 'xx'" in result.stderr
