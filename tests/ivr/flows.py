"""Flow documents for the tests: a small valid one to break, and the shipped examples."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import yaml

from vcc.ivr.flow import Flow
from vcc.ivr.validate import load_flow

FLOWS = Path(__file__).resolve().parents[2] / "deploy" / "flows"
CST = dt.timezone(dt.timedelta(hours=8))
# A Tuesday at 10:00 in China: inside every example's opening hours.
OFFICE_HOURS = dt.datetime(2026, 12, 1, 10, 0, tzinfo=CST).timestamp()
NIGHT = dt.datetime(2026, 12, 1, 23, 30, tzinfo=CST).timestamp()
NATIONAL_DAY = dt.datetime(2026, 10, 1, 10, 0, tzinfo=CST).timestamp()

_SMALL: dict[str, Any] = {
    "id": "small",
    "version": 1,
    "languages": ["zh", "en"],
    "start": "main",
    "on_fail": "agent",
    "key_prompt": "key",
    "prompts": {
        "key": {"zh": "，请按{key}。", "en": ", press {key}."},
        "main": {"zh": "请选择。", "en": "Please choose."},
        "a": {"zh": "查询", "en": "For tracking"},
        "b": {"zh": "投诉", "en": "For complaints"},
        "hold": {"zh": "请稍候。", "en": "Please hold."},
    },
    "nodes": {
        "main": {
            "kind": "menu",
            "prompt": "main",
            "options": [{"prompt": "a", "next": "a_queue"}, {"prompt": "b", "next": "b_queue"}],
        },
        "a_queue": {"kind": "queue", "skill_group": "parcel", "prompt": "hold"},
        "b_queue": {"kind": "queue", "skill_group": "complaints"},
        "agent": {"kind": "queue", "skill_group": "general"},
    },
}


def small() -> dict[str, Any]:
    """A fresh copy of a small valid flow document (as data), for a test to change."""
    return copy.deepcopy(_SMALL)


def as_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def example(name: str) -> Flow:
    return load_flow((FLOWS / f"{name}.yaml").read_text(encoding="utf-8"))
