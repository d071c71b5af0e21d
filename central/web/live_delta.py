"""The dashboard's live updates as changes (pure): `diff(old, new)` and `apply(snapshot, delta)`.

A snapshot (central.stats.realtime.snapshot) is JSON: objects, lists, numbers, strings, null. A
change turns one value into another; it is one of
- `{"=": value}`: the new value whole (a number, a string, null, or anything new in kind);
- `{"~": {key: change, ...}, "-": [key, ...], "keys": [key, ...]}`: an object changed key by key
  ("-": keys gone; "keys": the new order of its keys, only when applying would not give it);
- `{"[": {"key": id_field, "at": {id: change, ...}, "order": [id, ...]}}`: a list of objects that
  each carry a unique string id (a city's `site_id`, a skill group's `skill_group`) changed item
  by item; `order` (the ids of the new list, in order) only when an item came, went or moved.
Anything else (a list without ids, such as the alerts) is replaced whole. `diff` of two equal
values is None (nothing changed), and `apply(old, diff(old, new)) == new` for any JSON values, the
order of objects' keys included.

JSON-ready both ways: the page (static/dashboard.js `applyChange`) applies the same changes.
Why not a standard patch: a JSON merge patch (RFC 7396) cannot set a value to null (a city going
down sets its `live` to null) and replaces lists whole; a JSON patch (RFC 6902) addresses list
items by position, so a city added shifts every path, and the page would need a patch library.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

# The fields that name a list's items, looked for in this order (a list keyed by the first one
# every item carries, uniquely, as a string).
ID_FIELDS = ("site_id", "skill_group")
Change = dict[str, Any]


class BadDelta(ValueError):
    """A change that does not fit the value it is applied to (a client out of step: resync)."""


def diff(old: Any, new: Any) -> Change | None:
    """The change from `old` to `new`; None when they are the same."""
    if _same(old, new):
        return None
    if isinstance(old, dict) and isinstance(new, dict):
        return _diff_object(old, new)
    if isinstance(old, list) and isinstance(new, list):
        key = _id_field(old, new)
        if key is not None:
            return _diff_keyed(old, new, key)
    return {"=": new}


def apply(value: Any, change: Change | None) -> Any:
    """`value` with `change` applied (a new value; `value` itself is left as it was)."""
    if change is None:
        return value
    if not isinstance(change, dict) or len(change) == 0:
        raise BadDelta(f"not a change: {change!r}"[:200])
    if "=" in change:
        return change["="]
    if "~" in change or "-" in change or "keys" in change:
        return _apply_object(value, change)
    if "[" in change:
        return _apply_keyed(value, change["["])
    raise BadDelta(f"not a change: {sorted(change)!r}"[:200])


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON (1 and 1.0 and True differ: the page would show them differently)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _diff_object(old: Mapping[str, Any], new: Mapping[str, Any]) -> Change:
    changed: dict[str, Any] = {}
    for k, v in new.items():
        if k not in old:
            changed[k] = {"=": v}
            continue
        sub = diff(old[k], v)
        if sub is not None:
            changed[k] = sub
    out: Change = {}
    if changed:
        out["~"] = changed
    gone = [k for k in old if k not in new]
    if gone:
        out["-"] = gone
    # The keys' order too (the page lists a city's skill groups in it): when applying the change
    # would not give it (new keys go last).
    if [k for k in old if k in new] + [k for k in new if k not in old] != list(new):
        out["keys"] = list(new)
    return out


def _apply_object(value: Any, change: Change) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadDelta("an object's change applied to something else")
    out = dict(value)
    for k in change.get("-", []):
        if k not in out:
            raise BadDelta(f"key {k!r} removed but not there")
        del out[k]
    for k, sub in change.get("~", {}).items():
        out[k] = apply(out[k], sub) if k in out else _new_value(sub, k)
    keys = change.get("keys")
    if keys is None:
        return out
    if not isinstance(keys, list) or sorted(keys) != sorted(out):
        raise BadDelta("an object's keys in an order that does not list them all")
    return {k: out[k] for k in keys}


def _id_field(old: Sequence[Any], new: Sequence[Any]) -> str | None:
    """The id field both lists' items carry uniquely (None: the list is replaced whole)."""
    items = [*old, *new]
    if not items or not all(isinstance(x, dict) for x in items):
        return None
    for key in ID_FIELDS:
        if all(isinstance(x.get(key), str) for x in items) and all(
            len({x[key] for x in side}) == len(side) for side in (old, new)
        ):
            return key
    return None


def _diff_keyed(old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]], key: str) -> Change | None:
    before = {x[key]: x for x in old}
    at: dict[str, Any] = {}
    for item in new:
        i = item[key]
        sub = diff(before[i], item) if i in before else {"=": item}
        if sub is not None:
            at[i] = sub
    body: dict[str, Any] = {"key": key, "at": at}
    order = [x[key] for x in new]
    if order != [x[key] for x in old]:
        body["order"] = order
    return {"[": body}


def _apply_keyed(value: Any, body: Mapping[str, Any]) -> list[Any]:
    if not isinstance(value, list) or not isinstance(body, Mapping):
        raise BadDelta("a list's change applied to something else")
    key = body.get("key")
    try:
        items = {x[key]: x for x in value}
    except (TypeError, KeyError):
        raise BadDelta(f"list items without their id {key!r}") from None
    order = body.get("order", [x[key] for x in value])
    for i, sub in body.get("at", {}).items():
        items[i] = apply(items[i], sub) if i in items else _new_value(sub, i)
    try:
        return [items[i] for i in order]
    except KeyError as exc:
        raise BadDelta(f"item {exc.args[0]!r} listed but not there") from None


def _new_value(sub: Any, where: str) -> Any:
    """What a change to something not there yet must be: a value whole."""
    if not isinstance(sub, dict) or "=" not in sub:
        raise BadDelta(f"{where!r} changed but not there")
    return sub["="]


class StreamReader:
    """A reader's copy of the live snapshot, kept from `/api/stream`'s lines (tools, tests): feed
    each line; a message complete gives the snapshot as it now is. A change whose base is not
    the snapshot held raises BadDelta: the reader reconnects (and starts from a whole one)."""

    def __init__(self) -> None:
        self.seq: int | None = None
        self.snapshot: dict[str, Any] | None = None
        self.wholes = 0
        self.deltas = 0
        self._event = "message"
        self._data: list[str] = []
        self._id = ""

    def line(self, line: str) -> dict[str, Any] | None:
        if line == "":
            return self._dispatch()
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        elif field == "id":
            self._id = value
        return None

    def _dispatch(self) -> dict[str, Any] | None:
        event, data, seq = self._event, "\n".join(self._data), self._id
        self._event, self._data = "message", []
        if event == "live":
            self.snapshot, self.seq = json.loads(data), int(seq)
            self.wholes += 1
            return self.snapshot
        if event == "delta":
            message = json.loads(data)
            if self.snapshot is None or message["base"] != self.seq:
                raise BadDelta(f"a change from {message['base']} while holding {self.seq}: out of step")
            self.snapshot, self.seq = apply(self.snapshot, message["change"]), message["seq"]
            self.deltas += 1
            return self.snapshot
        return None
