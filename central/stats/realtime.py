"""Real-time statistics: the sites' live state plus rolling figures from recent call records (pure).

Live figures (calls waiting, longest wait, agents by state, occupancy, trunk and tie occupancy)
come from each site's latest SiteSummary with the age of that summary. A stale site's figures
are shown flagged as stale with their age; a down site has no live figures at all, never the
last ones frozen. A site whose live stream has stopped is shown stale at best (see
display_status): the router may still trust its last state for a moment, the operator is told
that these numbers no longer move.

Rolling figures (SL, ASA, abandon rate, overflow) come from the call records
at central, over the current 15-minute interval and today.

Occupancy = agents busy with a call (ringing, talking, held, wrap-up) / (busy + ready).
Trunk (tie) occupancy = busy channels / channels over the site's trunk (tie) resources.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from central.stats.intervals import (
    DAY_S,
    INTERVAL_S,
    CallFacts,
    Figures,
    StatsPolicy,
    call_figures,
    interval_start,
    quality_index,
    unique_calls,
)
from vcc.v1 import site_admin_pb2

SiteStatus = Literal["up", "stale", "down"]
BUSY_STATES = ("RINGING", "TALKING", "HELD", "WRAP_UP")
LIVE_SOURCE = "site live state"
RECORDS_SOURCE = "call records at central"


class SiteViewLike(Protocol):
    """One site as central's live state sees it (central.live_state.SiteState)."""

    @property
    def site_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def health(self) -> str: ...
    @property
    def age_s(self) -> float | None: ...
    @property
    def summary(self) -> site_admin_pb2.SiteSummary | None: ...
    @property
    def source(self) -> str: ...
    @property
    def streaming(self) -> bool: ...
    @property
    def down_since(self) -> float | None: ...


class LiveSource(Protocol):
    def sites(self, now: float) -> Sequence[SiteViewLike]: ...


@dataclass(frozen=True)
class SiteView:
    """A plain SiteViewLike (tests, adapters); central.live_state.SiteState is the real one."""

    site_id: str
    name: str
    health: str
    age_s: float | None
    summary: site_admin_pb2.SiteSummary | None
    # Where the summary came from: "stream" (the site's live stream) or "etcd" (its lease value).
    source: str = "stream"
    # The site's live stream to central is connected.
    streaming: bool = True
    # While down: since when (central.membership_view.SiteLiveness.down_since).
    down_since: float | None = None


def display_status(v: SiteViewLike) -> SiteStatus:
    """What the dashboard shows: the live state's health, but "stale" for a site that is up only
    because its last state is still young while its stream has stopped (a killed city's stream
    breaks at once; its lease and state age take a few seconds more to say it is down)."""
    health = str(v.health)
    if health == "down" or health not in ("up", "stale"):
        return "down"
    if health == "up" and not v.streaming:
        return "stale"
    return "stale" if health == "stale" else "up"


def live_figures(summary: site_admin_pb2.SiteSummary) -> dict[str, Any]:
    """The live figures of one site's summary."""
    agents = {state: int(n) for state, n in sorted(summary.agents_by_state.items())}
    busy = sum(agents.get(s, 0) for s in BUSY_STATES)
    ready = agents.get("READY", 0)
    groups = [
        {
            "skill_group": g.skill_group,
            "calls_waiting": g.calls_waiting,
            "longest_wait_s": round(g.oldest_wait_s, 1),
            "agents_ready": g.agents_ready,
            "agents_logged_in": g.agents_logged_in,
            "expected_wait_s": round(g.expected_wait_s, 1),
        }
        for g in summary.skill_groups
    ]
    return {
        "calls_waiting": summary.calls_waiting,
        "calls_in_progress": summary.calls_in_progress,
        "longest_wait_s": round(max((g.oldest_wait_s for g in summary.skill_groups), default=0.0), 1),
        "agents_by_state": agents,
        "agents_logged_in": sum(n for s, n in agents.items() if s != "LOGGED_OUT"),
        "agents_ready": ready,
        "agents_busy": busy,
        "occupancy": _ratio(busy, busy + ready),
        "trunk_occupancy": _occupancy(summary.resources, "trunk"),
        "tie_occupancy": _occupancy(summary.resources, "tie"),
        "trunks_refused": sum(r.refused for r in summary.resources if r.kind == "trunk"),
        "outbox_pending": summary.outbox_pending,
        "skill_groups": groups,
    }


def snapshot(
    views: Sequence[SiteViewLike],
    calls: Iterable[CallFacts],
    policy: StatsPolicy,
    now: float,
    records_age_s: float | None = None,
) -> dict[str, Any]:
    """The province's real-time picture, JSON-ready.

    `calls` are the records of (at least) today; `records_age_s` is how old the read of them is.
    """
    interval = interval_start(now, INTERVAL_S, policy.utc_offset_s)
    day = interval_start(now, DAY_S, policy.utc_offset_s)
    calls = [c for c in unique_calls(calls) if c.arrived_at >= day]
    # Calls not ended, by the city that holds their caller: at a down city nobody ends them.
    open_calls = Counter(c.entry_site_id for c in calls if not c.ended)
    # Figures by (period, dimension, key).
    by: dict[tuple[str, str, str], Figures] = {}

    def bump(period: str, dim: str, key: str, f: Figures) -> None:
        by.setdefault((period, dim, key), Figures()).add(f)

    for c in calls:
        f = call_figures(c, policy)
        served = c.served_site_id or c.entry_site_id
        overflow = bool(c.served_site_id) and c.served_site_id != c.entry_site_id
        periods = ("today", "interval") if c.arrived_at >= interval else ("today",)
        for period in periods:
            bump(period, "province", "", f)
            bump(period, "entry", c.entry_site_id, f)
            if overflow:
                by.setdefault((period, "entry", c.entry_site_id), Figures()).overflow_out += 1
                by.setdefault((period, "served", served), Figures()).overflow_in += 1
            bump(period, "skill", f"{served}/{c.skill_group or '-'}", f)

    def figures(dim: str, key: str) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for period in ("interval", "today"):
            f = by.get((period, dim, key), Figures())
            if dim == "entry":
                # A site's overflow in is counted on calls that entered elsewhere.
                f.overflow_in = by.get((period, "served", key), Figures()).overflow_in
            result[period] = {**f.as_dict(), "quality_index": quality_index(f, policy)}
        return result

    sites: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    live_total: dict[str, Any] = {"calls_waiting": 0, "longest_wait_s": 0.0, "agents_by_state": {}}
    busy = ready = 0
    trunk_busy = trunk_total = tie_busy = tie_total = 0
    for v in views:
        status = display_status(v)
        live = None
        if status != "down" and v.summary is not None:
            live = live_figures(v.summary)
            if status == "up":
                live_total["calls_waiting"] += live["calls_waiting"]
                live_total["longest_wait_s"] = max(live_total["longest_wait_s"], live["longest_wait_s"])
                for state, n in live["agents_by_state"].items():
                    live_total["agents_by_state"][state] = live_total["agents_by_state"].get(state, 0) + n
                busy += live["agents_busy"]
                ready += live["agents_ready"]
                for r in v.summary.resources:
                    if r.kind == "trunk":
                        trunk_busy, trunk_total = trunk_busy + r.busy, trunk_total + r.total
                    elif r.kind == "tie":
                        tie_busy, tie_total = tie_busy + r.busy, tie_total + r.total
        site_figures = figures("entry", v.site_id)
        skill_ids = [g["skill_group"] for g in (live or {}).get("skill_groups", [])]
        skill_ids += sorted(
            k.split("/", 1)[1]
            for (p, d, k) in by
            if p == "today" and d == "skill" and k.startswith(v.site_id + "/")
        )
        skills = {sid: figures("skill", f"{v.site_id}/{sid}") for sid in dict.fromkeys(skill_ids) if sid}
        sites.append(
            {
                "site_id": v.site_id,
                "name": v.name,
                "status": status,
                "age_s": None if v.age_s is None else round(v.age_s, 1),
                "source": f"{LIVE_SOURCE} ({v.source})" if v.source else LIVE_SOURCE,
                "live": live,
                "records": site_figures,
                "skill_records": skills,
            }
        )
        alerts += _alerts(
            site_id=v.site_id, name=v.name, status=status, age_s=v.age_s, figures=site_figures, policy=policy
        )
        stranded = open_at_down_site(v, status, open_calls[v.site_id])
        sites[-1]["open_at_down_site"] = stranded
        if stranded is not None:
            alerts.append(
                {
                    "kind": "open_at_down_site",
                    "site_id": v.site_id,
                    "name": v.name,
                    "value": stranded["calls"],
                    "since": stranded["down_since"],
                }
            )

    province_figures = figures("province", "")
    up = sum(1 for s in sites if s["status"] == "up")
    live_total.update(
        {
            "occupancy": _ratio(busy, busy + ready),
            "trunk_occupancy": _ratio(trunk_busy, trunk_total),
            "tie_occupancy": _ratio(tie_busy, tie_total),
            "sites_up": up,
            "sites_total": len(sites),
        }
    )
    interval_sl = province_figures["interval"]["service_level"]
    if interval_sl is not None and interval_sl < policy.sl_target:
        alerts.append({"kind": "sl_below_target", "site_id": "", "name": "", "value": interval_sl})
    return {
        "now": now,
        "interval_start": interval,
        "day_start": day,
        "policy": {
            "sl_threshold_s": policy.sl_threshold_s,
            "sl_target": policy.sl_target,
            "short_abandon_s": policy.short_abandon_s,
            "asa_target_s": policy.asa_target_s,
            "abandon_ceiling": policy.abandon_ceiling,
            "utc_offset_s": policy.utc_offset_s,
        },
        "records_source": RECORDS_SOURCE,
        "records_age_s": None if records_age_s is None else round(records_age_s, 1),
        "province": {"live": live_total, "records": province_figures, "source": LIVE_SOURCE},
        "sites": sites,
        "alerts": alerts,
    }


def open_at_down_site(v: SiteViewLike, status: SiteStatus, open_calls: int) -> dict[str, Any] | None:
    """Today's calls left open at a city that is down: shown as such, never given an outcome."""
    if status != "down" or not open_calls:
        return None
    return {"calls": open_calls, "down_since": v.down_since}


def _alerts(
    *,
    site_id: str,
    name: str,
    status: str,
    age_s: float | None,
    figures: Mapping[str, Any],
    policy: StatsPolicy,
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if status == "down":
        found.append({"kind": "site_down", "site_id": site_id, "name": name, "value": age_s})
    elif status == "stale":
        found.append({"kind": "site_stale", "site_id": site_id, "name": name, "value": age_s})
    sl = figures["interval"]["service_level"]
    if sl is not None and sl < policy.sl_target:
        found.append({"kind": "sl_below_target", "site_id": site_id, "name": name, "value": sl})
    return found


def _occupancy(resources: Iterable[site_admin_pb2.ResourceUsage], kind: str) -> float | None:
    busy = total = 0
    for r in resources:
        if r.kind == kind:
            busy += r.busy
            total += r.total
    return _ratio(busy, total)


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole > 0 else None
