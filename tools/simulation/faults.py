"""Fault attribution and the verdict of a run on a real cluster: pure functions of the callers'
views, the moments the runner took sites down and up, and the events it applied.

- lost_on_failed_site: a call whose stream broke, entering at a site that went down while the call
  was up (offered before the site was gone, broken after the kill began);
- refused_by_failed_site: a call that never reached its site (no call id) because the site was
  down, or because the trunk's connection to it was still reconnecting shortly after it came back;
- every other lost or failed call is lost_elsewhere, and makes the run unclean (exit code 1).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

from tools.simulation.runner import AppliedEvent, Outage
from tools.simulation.traffic import CallerView

# After a site is back, the trunk's gRPC connection may still be in its reconnect back-off: calls
# that could not reach the site in this window are refused by the failed site, not lost elsewhere.
RECONNECT_GRACE_S = 10.0


def classify_faults(
    views: Sequence[CallerView], outages: Sequence[Outage], run_end: float
) -> tuple[set[str], set[str]]:
    """(lost_on_failed_site, refused_by_failed_site): CallerView keys (see the module docstring)."""
    on_failed: set[str] = set()
    refused: set[str] = set()
    for view in views:
        if view.outcome != "lost":
            continue
        broke = view.ended_at if view.ended_at is not None else run_end
        for outage in outages:
            if outage.site_id != view.entry_site_id:
                continue
            back = (outage.up if outage.up is not None else run_end) + RECONNECT_GRACE_S
            # Accepted or still seizing its trunk when the site went: either way it was on that site.
            if view.offered_at <= outage.gone and broke >= outage.began:
                on_failed.add(view.key)
                break
            if not view.call_id and outage.began <= view.offered_at <= back:
                refused.add(view.key)
                break
    return on_failed, refused


def event_rows(
    views: Sequence[CallerView],
    applied: Sequence[AppliedEvent],
    *,
    traffic_start: float,
    traffic_end: float,
    on_failed: set[str],
    refused: set[str],
) -> list[dict[str, object]]:
    """SPEC's events[]: at_s, action, target, service_gap_s, calls_lost (plus a few diagnostics).

    service_gap_s: the longest stretch, from the event to the next one (or the end of traffic), in
    which no call of the affected site (its city's callers, wherever pre-routing delivered them;
    every call for a province-wide event) was answered.
    calls_lost: calls whose stream broke from this event until the next one (or the end).
    """
    rows: list[dict[str, object]] = []
    ordered = sorted(applied, key=lambda a: a.at)
    for i, event in enumerate(ordered):
        target = event.spec.site
        until = ordered[i + 1].at if i + 1 < len(ordered) else math.inf
        answers = sorted(
            v.answered_at
            for v in views
            if v.answered_at is not None
            and v.answered_at >= event.at
            and (target is None or (v.home_site_id or v.entry_site_id) == target)
        )
        # Up to the next event: what happens after it is that event's gap.
        end = min(until, traffic_end)
        marks = [event.at, *(a for a in answers if a <= end), end]
        gap = max((b - a for a, b in itertools.pairwise(marks)), default=0.0)
        broken = [
            v
            for v in views
            if v.outcome == "lost" and v.ended_at is not None and event.at <= v.ended_at < until
        ]
        rows.append(
            {
                "at_s": event.spec.at_s,
                "applied_at_s": round(event.at - traffic_start, 3),
                "action": event.spec.action,
                "target": target or ("database" if "database" in event.spec.action else "province"),
                "service_gap_s": round(max(0.0, gap), 3),
                "calls_lost": sum(1 for v in broken if v.key not in refused),
                "calls_lost_on_failed_site": sum(1 for v in broken if v.key in on_failed),
                "calls_refused": sum(1 for v in broken if v.key in refused),
                "error": event.error,
                **({"takeover_s": event.takeover_s} if event.takeover_s is not None else {}),
            }
        )
    return rows


def verdict(
    report: Mapping[str, object],
    views: Sequence[CallerView],
    excused: set[str],
    applied: Sequence[AppliedEvent] = (),
) -> list[str]:
    """Why the run is not clean: calls lost elsewhere (warm-up included), reconciliation, events."""
    problems: list[str] = []
    lost = [v for v in views if v.outcome in ("lost", "failed") and v.key not in excused]
    if lost:
        errors = sorted({v.error or v.reason or v.outcome for v in lost})[:3]
        problems.append(f"{len(lost)} calls lost elsewhere (e.g. {'; '.join(errors)})")
    reconciliation = report.get("reconciliation")
    if not isinstance(reconciliation, Mapping):
        problems.append("central's call records could not be read")
    else:
        bad = {
            k: reconciliation.get(k) for k in ("missing", "duplicated", "mismatched") if reconciliation.get(k)
        }
        if bad:
            problems.append("reconciliation with central: " + ", ".join(f"{k} {v}" for k, v in bad.items()))
    problems += [f"event {a.spec.action} at {a.spec.at_s:g}s failed: {a.error}" for a in applied if a.error]
    return problems
