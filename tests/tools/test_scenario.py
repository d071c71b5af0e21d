"""The scenario format of `vcc simulate`: strict validation naming the key, and the example scenarios."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tools.cli import app
from tools.simulation.scenario import ScenarioError, load_scenario, parse_scenario
from tools.simulation.simulate import SimulationError, model_engine

SCENARIOS = Path(__file__).parents[2] / "tools" / "scenarios"
runner = CliRunner()

GOOD: dict[str, Any] = {
    "seed": 42,
    "duration_s": 30,
    "warmup_s": 5,
    "handle_time": {"mean_s": 2.0, "distribution": "exponential"},
    "patience": {"mean_s": 10.0, "distribution": "exponential"},
    "service_level_threshold_s": 0.4,
    "ring_delay_s": 0.0,
    "wrap_up_s": 0.0,
    "routing": {"mode": "overflow", "after_s": 1.0},
    "transfers": {"probability": 0.0, "kind": "blind", "to": "remote"},
    "central": {"replicas": 1, "database": "postgresql"},
    "sites": [
        {"id": "gz", "trunk_channels": 120, "agents": {"general": 10}, "arrival_rate_per_s": 6.0},
        {"id": "sz", "trunk_channels": 120, "agents": {"general": 10}, "arrival_rate_per_s": 3.0},
    ],
    "events": [
        {"at_s": 10, "action": "kill_site", "site": "sz"},
        {"at_s": 20, "action": "restart_site", "site": "sz"},
        {"at_s": 12, "action": "stop_database"},
        {"at_s": 15, "action": "start_database"},
    ],
}


def edited(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    data.update(changes)
    return data


def with_site(index: int, **changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    data["sites"][index].update(changes)
    return data


def test_every_key_of_the_spec_example_is_accepted() -> None:
    scenario = parse_scenario(GOOD)
    assert scenario.traffic_s == 35
    assert scenario.agents_per_site() == {"gz": 10, "sz": 10}
    assert [e.action for e in scenario.events][:2] == ["kill_site", "restart_site"]


def test_a_partition_can_be_silent() -> None:
    events = [
        {"at_s": 1, "action": "partition_site", "site": "gz", "cut": "silent"},
        {"at_s": 2, "action": "heal_site", "site": "gz"},
        {"at_s": 3, "action": "partition_site", "site": "gz"},
    ]
    scenario = parse_scenario(edited(events=events))
    assert [e.cut for e in scenario.events] == ["silent", None, None]
    assert scenario.partitioned_sites() == ["gz"]


def test_optional_keys_have_defaults() -> None:
    minimal = {
        "duration_s": 10,
        "handle_time": {"mean_s": 1.0},
        "service_level_threshold_s": 1.0,
        "routing": {"mode": "pooled"},
        "sites": [{"id": "gz", "trunk_channels": 10, "agents": {"general": 2}, "arrival_rate_per_s": 1.0}],
    }
    scenario = parse_scenario(minimal)
    assert (scenario.seed, scenario.warmup_s, scenario.patience, scenario.events) == (0, 0.0, None, [])
    assert scenario.handle_time.distribution == "exponential"
    assert (scenario.central.replicas, scenario.central.database) == (1, "sqlite")


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.name)
def test_example_scenarios_are_valid(path: Path) -> None:
    load_scenario(path)


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("unknown key", edited(colour="red"), "colour: unknown key"),
    ("unknown site key", with_site(1, colour="red"), "sites.1.colour: unknown key"),
    ("negative rate", with_site(0, arrival_rate_per_s=-1.0), "sites.0.arrival_rate_per_s:"),
    ("site without agents", with_site(1, agents={}), "sites.1.agents:"),
    ("site with zero agents", with_site(1, agents={"general": 0}), "sites.1.agents:"),
    (
        "event naming an unknown site",
        edited(events=[{"at_s": 1, "action": "kill_site", "site": "xx"}]),
        "events.0.site: unknown site 'xx'",
    ),
    (
        "event past the end",
        edited(events=[{"at_s": 35, "action": "stop_database"}]),
        "events.0.at_s:",
    ),
    ("site event without site", edited(events=[{"at_s": 1, "action": "kill_site"}]), "events.0.site:"),
    (
        "leader kill with one replica",
        edited(events=[{"at_s": 1, "action": "kill_central_leader"}]),
        "events.0.action: kill_central_leader needs central.replicas 2 or more",
    ),
    (
        "cut mode on another action",
        edited(events=[{"at_s": 1, "action": "kill_site", "site": "gz", "cut": "silent"}]),
        "events.0.cut: only with action partition_site, not kill_site",
    ),
    (
        "unknown cut mode",
        edited(events=[{"at_s": 1, "action": "partition_site", "site": "gz", "cut": "gentle"}]),
        "events.0.cut:",
    ),
    (
        "heal without a partition",
        edited(events=[{"at_s": 1, "action": "heal_site", "site": "gz"}]),
        "events.0.action: heal_site of 'gz', which is not partitioned",
    ),
    (
        "database event on sqlite",
        edited(central={"database": "sqlite"}),
        "events.2.action: stop_database needs central.database postgresql",
    ),
    ("replicas", edited(central={"replicas": 4, "database": "postgresql"}), "central.replicas:"),
    ("transfer probability out of range", edited(transfers={"probability": 1.5}), "transfers.probability:"),
    (
        "remote transfers with one site",
        edited(transfers={"probability": 0.1, "to": "remote"}, sites=GOOD["sites"][:1], events=[]),
        "transfers.to:",
    ),
    (
        "bad distribution",
        edited(handle_time={"mean_s": 1, "distribution": "normal"}),
        "handle_time.distribution:",
    ),
    ("overflow without after_s", edited(routing={"mode": "overflow"}), "routing.after_s:"),
    ("after_s without overflow", edited(routing={"mode": "pooled", "after_s": 1}), "routing.after_s:"),
    ("bad mode", edited(routing={"mode": "random"}), "routing.mode:"),
    ("duplicate site", edited(sites=[GOOD["sites"][0], GOOD["sites"][0]]), "sites.1.id: 'gz' appears twice"),
    ("missing duration", {k: v for k, v in GOOD.items() if k != "duration_s"}, "duration_s: Field required"),
]


@pytest.mark.parametrize(("data", "expected"), [(d, e) for _, d, e in BAD], ids=[name for name, _, _ in BAD])
def test_bad_scenarios_name_the_key(data: dict[str, Any], expected: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(data, "s.yaml")
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [BAD[0], BAD[2], BAD[3], BAD[5]],
    ids=["unknown key", "negative rate", "site without agents", "event naming an unknown site"],
)
def test_cli_refuses_a_bad_scenario_with_exit_code_2(
    tmp_path: Path, name: str, data: dict[str, Any], expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = runner.invoke(app, ["simulate", str(path), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert not (tmp_path / "run").exists()  # refused before anything started


def test_cli_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(with_site(0, arrival_rate_per_s=-2)), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "tools", "simulate", str(path), "--report", str(tmp_path / "r.json")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and "sites.0.arrival_rate_per_s" in done.stderr


def test_cli_refuses_an_unknown_engine(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(GOOD), encoding="utf-8")
    result = runner.invoke(app, ["simulate", str(path), "--engine", "dream"])
    assert result.exit_code == 2
    assert "--engine" in result.output


def test_unreadable_scenario_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match="mapping"):
        load_scenario(tmp_path / "list.yaml")


def test_model_engine_is_found_or_refused_clearly() -> None:
    try:
        run = model_engine()
    except SimulationError as exc:
        assert "model engine" in str(exc)
    else:
        assert callable(run)
