"""A run's trace as plain data: what the caller heard, what each key did, how the call left the
flow (for `vcc ivr try` now, and `vcc call --json` once the call control runs flows)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from site_node.callcontrol.ivr_flow.actions import (
    End,
    Ended,
    FaxOnDemand,
    Heard,
    LookedUp,
    OfferCallback,
    Pressed,
    ReturnToAgent,
    Silence,
    ToQueue,
    ToVoicemail,
)
from site_node.callcontrol.ivr_flow.run import FlowRun


def end_report(action: End) -> dict[str, Any]:
    kind = {
        ToQueue: "queue",
        ToVoicemail: "voicemail",
        OfferCallback: "callback",
        FaxOnDemand: "fax",
        ReturnToAgent: "return",
    }.get(type(action), "hangup")
    return {"kind": kind, **asdict(action)}


def run_report(run: FlowRun) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    for entry in run.trace:
        if isinstance(entry, Heard):
            steps.append({"at": entry.at, "heard": entry.prompt_id, "text": entry.text, "node": entry.node})
        elif isinstance(entry, Pressed):
            steps.append({"at": entry.at, "key": entry.key, "effect": entry.effect, "node": entry.node})
        elif isinstance(entry, Silence):
            steps.append({"at": entry.at, "silence": entry.effect, "node": entry.node})
        elif isinstance(entry, LookedUp):
            steps.append({"at": entry.at, "lookup": entry.name, "outcome": entry.outcome, "node": entry.node})
        elif isinstance(entry, Ended):
            steps.append({"at": entry.at, "ended": end_report(entry.action), "node": entry.node})
    return {
        "flow": run.flow.id,
        "version": run.flow.version,
        "language": run.language,
        "steps": steps,
        "ended": None if run.ended is None else end_report(run.ended),
    }
