"""The dashboard's live changes (central.web.live_delta): apply(old, diff(old, new)) == new for any
JSON values (Hypothesis), on real snapshots of a changing province, through JSON, and bad changes
refused."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from central.records import Outcome
from central.stats.intervals import CallFacts, StatsPolicy
from central.stats.realtime import SiteView, snapshot
from central.web.live_delta import BadDelta, apply, diff
from tests.web.conftest import summary

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(-2, 2, allow_nan=False)
    | st.text("ab", max_size=2)
)
IDS = st.sampled_from(["gz", "sz", "fs", "dg"])


def keyed(children: st.SearchStrategy[Any], field: str) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Lists of objects with unique ids (as cities and skill groups are)."""
    item = st.fixed_dictionaries({field: IDS}, optional={"v": children, "w": children})
    return st.lists(item, max_size=4, unique_by=lambda x: x[field])


JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["a", "b", "live", "=", "~", "-", "[", "__proto__"]), children, max_size=3
        )
        | keyed(children, "site_id")
        | keyed(children, "skill_group")
    ),
    max_leaves=12,
)


@st.composite
def changed(draw: st.DrawFn, value: Any) -> Any:
    """`value` changed here and there (so that old and new share most of their shape)."""
    roll = draw(st.integers(0, 9))
    if roll == 0:
        return draw(JSON)
    if isinstance(value, dict) and roll < 8:
        out = {k: draw(changed(v)) if draw(st.booleans()) else v for k, v in value.items()}
        if draw(st.booleans()) and out:
            out.pop(draw(st.sampled_from(sorted(out))))
        if draw(st.booleans()):
            out[draw(st.sampled_from(["a", "b", "c", "="]))] = draw(JSON)
        if draw(st.booleans()):
            out = dict(reversed(out.items()))
        return out
    if isinstance(value, list) and roll < 8:
        items = [draw(changed(v)) if draw(st.booleans()) else v for v in value]
        if draw(st.booleans()):
            items.reverse()
        if items and draw(st.booleans()):
            items.pop(draw(st.integers(0, len(items) - 1)))
        return items
    return value


@st.composite
def pairs(draw: st.DrawFn) -> tuple[Any, Any]:
    old = draw(JSON)
    return old, draw(changed(old))


def wire(change: Any) -> Any:
    """Through JSON, as the page receives it."""
    return json.loads(json.dumps(change))


def same_json(a: Any, b: Any) -> bool:
    """The same JSON text: the same values, types and order of keys (the page lists them so)."""
    return json.dumps(a) == json.dumps(b)


@settings(max_examples=400, deadline=None)
@given(pairs())
def test_apply_of_diff_gives_the_new_value(pair: tuple[Any, Any]) -> None:
    old, new = pair
    kept = copy.deepcopy(old)
    change = diff(old, new)
    assert same_json(apply(old, change), new)
    assert same_json(apply(wire(old), wire(change)), new)
    assert same_json(old, kept)  # the old value is left as it was
    assert (change is None) == same_json(old, new)


@settings(max_examples=200, deadline=None)
@given(JSON, JSON)
def test_apply_of_diff_between_unrelated_values(old: Any, new: Any) -> None:
    assert same_json(apply(wire(old), wire(diff(old, new))), new)


def test_types_that_json_tells_apart_are_changes() -> None:
    cases: list[tuple[Any, Any]] = [(1, 1.0), (1, True), (0, False), (None, 0), ([], {}), ("1", 1)]
    for old, new in cases:
        assert diff(old, new) == {"=": new}


def province(ready: dict[str, int], waiting: dict[str, int], down: set[str], calls: int) -> dict[str, Any]:
    views = [
        SiteView(
            site_id,
            site_id.upper(),
            "down" if site_id in down else "up",
            1.0,
            None if site_id in down else summary(site_id, waiting=waiting[site_id], ready=ready[site_id]),
        )
        for site_id in ("gz", "sz", "fs")
    ]
    now = 1_800_000_000.0
    facts = [
        CallFacts(
            call_id=f"c{i}",
            entry_site_id="gz",
            served_site_id="gz",
            skill_group="general",
            agent_code="0101",
            outcome=Outcome.ANSWERED,
            answered=True,
            arrived_at=now - 60 - i,
            wait_s=5.0 + i,
            talk_s=40.0,
            ended=True,
            transferred=False,
        )
        for i in range(calls)
    ]
    return snapshot(views, facts, StatsPolicy(), now, 0.5)


def test_a_changing_province_travels_as_small_changes() -> None:
    ready = {"gz": 3, "sz": 3, "fs": 3}
    waiting = {"gz": 1, "sz": 1, "fs": 1}
    old = province(ready, waiting, set(), 0)
    # An agent logs in at gz: only gz's live figures change, not the others' nor the records.
    ready["gz"] = 4
    new = province(ready, waiting, set(), 0)
    change = diff(old, new)
    assert change is not None
    sites = change["~"]["sites"]["["]
    assert sites["key"] == "site_id" and set(sites["at"]) == {"gz"} and "order" not in sites
    assert "records" not in sites["at"]["gz"]["~"]
    assert same_json(apply(old, wire(change)), new)
    assert len(json.dumps(change)) < len(json.dumps(new)) / 4
    # A call waits at sz, calls are answered at gz, fs goes down: each step applies exactly.
    steps = [new]
    waiting["sz"] = 5
    steps.append(province(ready, waiting, set(), 0))
    steps.append(province(ready, waiting, set(), 3))
    steps.append(province(ready, waiting, {"fs"}, 3))
    model = old
    for a, b in zip([old, *steps], steps, strict=False):
        model = apply(model, wire(diff(a, b)))
        assert same_json(model, b)
    fs = next(s for s in model["sites"] if s["site_id"] == "fs")
    assert fs["live"] is None and fs["status"] == "down"


def test_the_order_of_keys_travels_when_it_changes() -> None:
    old = {"general": 1, "vip": 2}
    assert diff(old, {"vip": 2, "general": 1}) == {"keys": ["vip", "general"]}
    assert diff(old, {"general": 1, "vip": 2, "zz": 3}) == {"~": {"zz": {"=": 3}}}
    change = diff(old, {"aa": 0, "general": 1, "vip": 2})
    assert change is not None and change["keys"] == ["aa", "general", "vip"]
    assert list(apply(old, change)) == ["aa", "general", "vip"]


def test_skill_groups_change_one_by_one() -> None:
    old: dict[str, Any] = {
        "skill_groups": [
            {"skill_group": "general", "calls_waiting": 1},
            {"skill_group": "vip", "calls_waiting": 0},
        ]
    }
    new = {
        "skill_groups": [
            {"skill_group": "general", "calls_waiting": 2},
            {"skill_group": "vip", "calls_waiting": 0},
        ]
    }
    assert diff(old, new) == {
        "~": {
            "skill_groups": {
                "[": {"key": "skill_group", "at": {"general": {"~": {"calls_waiting": {"=": 2}}}}}
            }
        }
    }


# Changes that do not fit their value (the page refuses the same ones: tests/web/test_browser_live.py).
BAD_CHANGES: list[tuple[Any, Any]] = [
    ({"a": 1}, {"~": {"b": {"~": {"x": {"=": 1}}}}}),  # a change inside a key that is not there
    ({"a": 1}, {"-": ["b"]}),  # removing a key that is not there
    (3, {"~": {"a": {"=": 1}}}),  # an object's change applied to a number
    ([{"site_id": "gz"}], {"[": {"key": "site_id", "at": {}, "order": ["sz"]}}),  # an item not there
    ([{"site_id": "gz"}], {"[": {"key": "site_id", "at": {"sz": {"~": {"a": {"=": 1}}}}}}),
    ([1, 2], {"[": {"key": "site_id", "at": {}}}),  # a keyed change applied to a plain list
    ({"a": 1}, {}),  # not a change
    ({"a": 1}, {"?": 1}),
    ({"a": 1}, ["="]),
    ({"a": 1, "b": 2}, {"keys": ["b"]}),  # an order that leaves a key out
    ({"a": 1}, {"keys": ["a", "b"]}),  # or names one that is not there
]


@pytest.mark.parametrize(("value", "change"), BAD_CHANGES)
def test_a_change_that_does_not_fit_is_refused(value: Any, change: Any) -> None:
    kept = copy.deepcopy(value)
    with pytest.raises(BadDelta):
        apply(value, change)
    assert value == kept
