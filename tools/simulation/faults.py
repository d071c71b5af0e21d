"""Fault attribution and the verdict of a run on a real cluster: pure functions of the callers'
views, the moments the runner took sites down and up, and the events it applied.

- lost_on_failed_site: a call whose stream broke, entering at a site that went down while the call
  was up (offered before the site was gone, broken after the kill began);
- refused_by_failed_site: a call that never reached its site (no call id) when its caller could
  not have avoided that: offered from the kill until central could know the site was dead (its
  etcd lease expired: `central_notice_s`), so that pre-routing could not yet send it elsewhere;
  or offered while the trunk's connection to the restarted site was still in its reconnect
  back-off: from the restart (the new process registers, and central routes to it, a little
  before the runner sees it serving) until RECONNECT_GRACE_S after it served again;
- every other lost or failed call is lost_elsewhere, and makes the run unclean (exit code 1). In
  particular a call that central pre-routed to a dead city after it could know the city was dead
  (`misrouted_to_dead_city` names them), or that met a dead city that never came back.

The site's own word for a call's outcome is questioned from the callers' side too
(`question_outcomes`): an `abandoned` whose caller never hung up, a `blocked` (no trunk channel)
while the callers held fewer calls on that site's trunks than it has channels, fewer answers
counted by the robot agents than the callers heard. And a run with no call answered is not clean.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence

from tools.simulation.runner import AppliedEvent, Outage
from tools.simulation.traffic import CallerView

# After a site is back, the trunk's gRPC connection may still be in its reconnect back-off (at most
# vcc.rpc's max_reconnect_backoff_ms, 1 s) and then connect: calls that could not reach the site in
# this window are refused by the failed site, not lost elsewhere.
RECONNECT_GRACE_S = 2.0
# From a site's etcd lease expiring to central's watch and pre-routing knowing it: the lessor
# checks expiries every 0.5 s, the watch takes milliseconds.
NOTICE_MARGIN_S = 1.0


def central_notice_s(lease_ttl_s: float) -> float:
    """How long after a site died central may still take it for alive: its lease TTL and a margin."""
    return lease_ttl_s + NOTICE_MARGIN_S


def classify_faults(
    views: Sequence[CallerView],
    outages: Sequence[Outage],
    run_end: float,
    *,
    central_notice_s: float,
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
            # Accepted or still seizing its trunk when the site went: either way it was on that site.
            if view.offered_at <= outage.gone and broke >= outage.began:
                on_failed.add(view.key)
                break
            if not view.call_id and _unavoidable(view.offered_at, outage, central_notice_s):
                refused.add(view.key)
                break
    return on_failed, refused


def _unavoidable(offered_at: float, outage: Outage, central_notice_s: float) -> bool:
    """Offered before central could know the site was dead (and before it was back), or while the
    trunk was reconnecting to it after its restart."""
    known_dead = outage.gone + central_notice_s
    before_notice = outage.began <= offered_at < (min(known_dead, outage.up) if outage.up else known_dead)
    back = outage.restarting if outage.restarting is not None else outage.up
    reconnecting = (
        outage.up is not None and back is not None and back <= offered_at <= outage.up + RECONNECT_GRACE_S
    )
    return before_notice or reconnecting


def misrouted_to_dead_city(
    views: Sequence[CallerView], outages: Sequence[Outage], *, central_notice_s: float
) -> list[str]:
    """Lost calls that central pre-routed to a city while it was dead, after it could know so."""
    found = []
    for view in views:
        if view.outcome != "lost" or view.call_id or view.home_site_id in ("", view.entry_site_id):
            continue
        for outage in outages:
            back = outage.restarting if outage.restarting is not None else outage.up
            dead_until = back if back is not None else float("inf")
            if (
                outage.site_id == view.entry_site_id
                and outage.gone + central_notice_s <= view.offered_at < dead_until
            ):
                found.append(view.key)
                break
    return found


def question_outcomes(
    views: Sequence[CallerView],
    *,
    trunk_channels: Mapping[str, int],
    robots_answered: Mapping[str, int],
) -> dict[str, object]:
    """The sites' word for outcomes, questioned from the callers' (and the robot agents') side.

    - abandoned_without_hang_up: the site said abandoned, the caller never hung up;
    - blocked_with_free_trunks: the site said "no trunk channel" while the callers held fewer
      calls on its trunks than it has channels (accepted there, not yet ended: by the site's own
      stamps on the messages to the callers, so one clock);
    - robots_answered_fewer: sites whose robots answered fewer calls than the callers heard answered
      there (a robot counts every answer, transfers included: never fewer), for the sites whose
      robots reported (`robots_answered`).
    """
    abandoned = [v.key for v in views if v.outcome == "abandoned" and not _heard(v, "hang_up")]
    blocked = [v.key for v in views if _blocked_with_free_trunks(v, views, trunk_channels)]
    answered_here = Counter(v.served_site_id for v in views if v.outcome == "answered")
    fewer = {
        site: {"robots": robots_answered[site], "callers": answered_here[site]}
        for site in sorted(robots_answered)
        if robots_answered[site] < answered_here[site]
    }
    return {
        "abandoned_without_hang_up": len(abandoned),
        "blocked_with_free_trunks": len(blocked),
        "robots_answered_fewer": fewer,
        "examples": {"abandoned_without_hang_up": abandoned[:5], "blocked_with_free_trunks": blocked[:5]},
    }


def _heard(view: CallerView, kind: str) -> bool:
    return any(k == kind for k, _, _ in view.progress)


def _stamp(view: CallerView, kind: str) -> float | None:
    for k, received, details in view.progress:
        if k == kind:
            return float(details["site_at"]) if details.get("site_at") else received
    return None


def _blocked_with_free_trunks(
    view: CallerView, views: Sequence[CallerView], trunk_channels: Mapping[str, int]
) -> bool:
    if view.outcome != "blocked" or view.reason != "no-trunk-channel":
        return False
    site, channels = view.entry_site_id, trunk_channels.get(view.entry_site_id)
    at = _stamp(view, "ended")
    if channels is None or at is None:
        return False
    held = 0
    for other in views:
        accepted = _stamp(other, "accepted") if other.entry_site_id == site else None
        if accepted is None or accepted > at:
            continue
        released = _stamp(other, "ended")
        if released is None:  # lost: its trunk was held until the stream broke (or the run's end)
            released = other.ended_at if other.ended_at is not None else float("inf")
        held += released > at
    return held < channels


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
    calls_answered: calls of the affected site answered in that same stretch (the service the
    gap is measured against: a gap with none answered runs to the end of the stretch).
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
                "calls_answered": sum(1 for a in answers if a <= end),
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
    """Why the run is not clean: calls lost elsewhere (warm-up included), no call answered, the
    reconciliation, the sites' outcomes questioned from the callers' side, failed events."""
    problems: list[str] = []
    lost = [v for v in views if v.outcome in ("lost", "failed") and v.key not in excused]
    if lost:
        errors = sorted({v.error or v.reason or v.outcome for v in lost})[:3]
        problems.append(f"{len(lost)} calls lost elsewhere (e.g. {'; '.join(errors)})")
    if not any(v.outcome == "answered" for v in views):
        problems.append(f"no call answered (of {len(views)} offered)")
    reconciliation = report.get("reconciliation")
    if not isinstance(reconciliation, Mapping):
        problems.append("central's call records could not be read")
    else:
        bad = {
            k: reconciliation.get(k) for k in ("missing", "duplicated", "mismatched") if reconciliation.get(k)
        }
        if bad:
            problems.append("reconciliation with central: " + ", ".join(f"{k} {v}" for k, v in bad.items()))
    claims = report.get("site_claims")
    if isinstance(claims, Mapping):
        for key in ("abandoned_without_hang_up", "blocked_with_free_trunks", "robots_answered_fewer"):
            if claims.get(key):
                problems.append(f"the sites' outcomes questioned by the callers: {key} {claims[key]}")
    problems += [f"event {a.spec.action} at {a.spec.at_s:g}s failed: {a.error}" for a in applied if a.error]
    return problems
