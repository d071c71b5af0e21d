"""The model engine runs IVR flows: callers hear each prompt for its length, press their keys
once it is said, and the report counts the time spent in the flow; a plan without a flow runs
as before (the flow's machinery is not touched)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.ivr.flows import as_yaml, small
from tools.simulation.model_engine import ModelError, ModelPlan, ModelSite, run_model, run_plan, run_views
from tools.simulation.scenario import load_scenario
from tools.simulation.simulate import run_simulation
from vcc.ivr.validate import load_flow

CHARS_PER_S = 4.0


def plan(**overrides: object) -> ModelPlan:
    base: dict[str, object] = {
        "sites": [ModelSite("gz", 20, {"general": 2, "parcel": 2, "complaints": 3}, 0.5)],
        "duration_s": 200.0,
        "seed": 3,
        "handle_mean_s": 3.0,
    }
    base.update(overrides)
    return ModelPlan(**base)  # type: ignore[arg-type]


def test_ivr_time_is_what_the_prompts_take_and_keys_choose_the_queue() -> None:
    flow = load_flow(as_yaml(small()))
    report, _ = run_plan(plan(flow=flow, flow_keys=["2"]))
    # Heard before the queue: the menu ("请选择。"), its two options with their keys, then the
    # key "2" goes to complaints (no prompt there).
    said = ["请选择。", "查询，请按1。", "投诉，请按2。"]
    ivr = report["ivr"]
    assert isinstance(ivr, dict)
    assert ivr["mean_s"] == round(sum(map(len, said)) / CHARS_PER_S, 3)
    assert ivr["ended_in_ivr"] == 0 and ivr["calls"] == report["all_calls"]["answered"]  # type: ignore[index]
    views, _ = run_views(plan(flow=flow, flow_keys=["2"]))
    assert {v.skill_group for v in views if v.queued_at is not None} == {"complaints"}


def test_a_silent_caller_goes_round_the_retries_to_the_flows_fallback() -> None:
    flow = load_flow(as_yaml(small()))
    views, _ = run_views(plan(flow=flow, flow_keys=[], duration_s=60.0))
    queued = [v for v in views if v.queued_at is not None]
    assert queued and {v.skill_group for v in queued} == {"general"}  # on_fail: agent -> general
    # Three times the menu (said, then each silence of 5 s after it), then the fallback.
    menu_s = sum(map(len, ["请选择。", "查询，请按1。", "投诉，请按2。"])) / CHARS_PER_S
    assert {round((v.queued_at or 0.0) - v.offered_at, 6) for v in queued} == {round(3 * (menu_s + 5.0), 6)}


def test_a_plan_without_a_flow_has_no_ivr_figures() -> None:
    report, _ = run_plan(plan())
    assert "ivr" not in report


def test_a_scenario_names_a_flow_beside_it_for_the_model_engine(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "small.yaml").write_text(as_yaml(small()), encoding="utf-8")
    scenario = {
        "seed": 1, "duration_s": 60, "handle_time": {"mean_s": 2.0}, "service_level_threshold_s": 10,
        "routing": {"mode": "isolated"},
        "ivr": {"flow": "flows/small.yaml", "keys": ["1"]},
        "sites": [{"id": "gz", "trunk_channels": 20, "agents": {"general": 2, "parcel": 2},
                   "arrival_rate_per_s": 0.3}],
    }  # fmt: skip
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(scenario), encoding="utf-8")
    report = run_model(load_scenario(path))
    assert report["ivr"]["mean_s"] > 0  # type: ignore[index]
    bad = small()
    bad["nodes"]["main"]["options"][0]["next"] = "nowhere"
    (tmp_path / "flows" / "small.yaml").write_text(as_yaml(bad), encoding="utf-8")
    with pytest.raises(ModelError, match="nowhere"):
        run_model(load_scenario(path))
    assert run_simulation(load_scenario(path), None, engine="real") == 1  # the cluster runs no scenario flow
