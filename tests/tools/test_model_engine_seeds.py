"""The model engine is deterministic seed for seed: the same scenario and seed give the same
report field for field (what a refactoring of the call control is checked against), and another
seed gives another run. The shipped overflow scenario, three cities, in virtual time."""

from __future__ import annotations

from pathlib import Path

from tools.simulation.model_engine import run_model
from tools.simulation.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "tools" / "scenarios"


def virtual(report: dict[str, object]) -> dict[str, object]:
    """The report without the engine's own wall-clock cost (the one field time may change)."""
    engine = report["engine"]
    assert isinstance(engine, dict) and engine["calls"] > 0
    return {**report, "engine": {k: v for k, v in engine.items() if k != "wall_s"}}


def test_the_same_seed_gives_the_same_report_and_another_seed_another() -> None:
    scenario = load_scenario(SCENARIOS / "overflow-three-sites.yaml")
    first, again = virtual(run_model(scenario)), virtual(run_model(scenario))
    calls = first["all_calls"]
    assert isinstance(calls, dict) and calls["answered"] > 0
    assert first == again
    other = virtual(run_model(scenario.model_copy(update={"seed": scenario.seed + 1})))
    assert other["all_calls"] != first["all_calls"]
