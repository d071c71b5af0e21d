"""The simulation report (SPEC §6 "The report (JSON)"), measured from the callers' side.

Definitions (every figure comes from CallerViews, never from central, except reconciliation):

- Measured calls are those offered from traffic_start + warmup_s on (the generator stops offering
  by itself; no upper bound, so traffic driven in slices with gaps between them loses no call).
  offered, answered, abandoned, blocked, lost_*, p_wait, asa_s, service_level, overflow and
  routing latency count only those. duration_s is the time their arrivals span (it gives the
  arrival rate for Erlang C). `all_calls` repeats the counts over every call of the run, warm-up
  included, so that no lost call hides in the warm-up.
- A call is counted at its entry site. overflow_out: answered calls served at another site;
  overflow_in: answered calls served here that entered elsewhere.
- lost_elsewhere: outcome "lost" (stream broke without `ended`, or the site could not be reached
  at all) or "failed", except the calls the caller of build_report attributes to a fault:
  lost_on_failed_site (the call's trunk was on a site when it was killed) and refused_by_failed_site
  (offered to a site while it was down: no trunk to seize; not counted as reaching the agents).
- p_wait: among answered + abandoned calls, the share that "waited": the call was queued and was
  not ringing an agent at the moment it was queued, i.e. it saw `queued` and either never rang or
  its first `ringing` came more than 1 ms after `queued`. The gap is taken from the site's own
  timestamps on the two messages ("site_at"), which do not suffer from transport jitter, and from
  the caller's receipt times when those are missing. A call abandoned before it was queued did
  not wait for an agent.
- asa_s: mean time from queued (from dialling when never queued) to connected, over answered calls.
- service_level: calls answered within the threshold (same clock as asa_s) over offered minus
  blocked.
- erlang_c: Erlang C for the load that reached the agents: (offered - blocked) / duration_s
  calls per second, mean_handle_s, the site's agents (pooled: all of them). None for a site without
  agents; asa_s None when the load is unstable.
- routing_latency_ms: for calls that were queued and then rang, caller's receipt of the first
  `ringing` minus receipt of `queued`; nearest-rank percentiles.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from tools.simulation.traffic import CallerView
from vcc import rpc
from vcc.v1 import central_pb2, common_pb2

IMMEDIATE_RING_S = 0.001
_ENDED_OUTCOMES = frozenset({"answered", "abandoned", "blocked", "failed", "self_served"})
_OUTCOME_CODES: Mapping[str, int] = {
    "answered": common_pb2.CALL_OUTCOME_ANSWERED,
    "abandoned": common_pb2.CALL_OUTCOME_ABANDONED,
    "blocked": common_pb2.CALL_OUTCOME_BLOCKED,
    "failed": common_pb2.CALL_OUTCOME_FAILED,
    "self_served": common_pb2.CALL_OUTCOME_SELF_SERVED,
}
_COUNT_KEYS = (
    "offered",
    "answered",
    "abandoned",
    "blocked",
    "lost_on_failed_site",
    "refused_by_failed_site",
    "lost_elsewhere",
    "overflow_out",
    "overflow_in",
)
# A call with these events may rightly have had two agents at once (consult, conference).
_SHARED_KINDS = frozenset({common_pb2.CALL_EVENT_KIND_HELD, common_pb2.CALL_EVENT_KIND_TRANSFERRED})
# Events after which the agent who answered no longer holds the call at that site.
_LEG_ENDS = frozenset(
    {
        common_pb2.CALL_EVENT_KIND_AGENT_HUNG_UP,
        common_pb2.CALL_EVENT_KIND_CALLER_HUNG_UP,
        common_pb2.CALL_EVENT_KIND_RETURNED,
        common_pb2.CALL_EVENT_KIND_TRANSFERRED,
        common_pb2.CALL_EVENT_KIND_ENDED,
    }
)
# Examples of reconciliation problems kept in the report, for debugging.
_MAX_PROBLEMS = 20


# -- per-call facts ------------------------------------------------------------------------------


def _first(view: CallerView, kind: str) -> tuple[float, dict[str, str]] | None:
    for k, at, details in view.progress:
        if k == kind:
            return at, details
    return None


def _site_at(details: Mapping[str, str]) -> float | None:
    raw = details.get("site_at")
    return float(raw) if raw else None


def waited(view: CallerView) -> bool:
    """Queued and not ringing an agent at the moment it was queued (see module docstring)."""
    queued = _first(view, "queued")
    if queued is None:
        return False
    ringing = _first(view, "ringing")
    if ringing is None:
        return True
    q_site, r_site = _site_at(queued[1]), _site_at(ringing[1])
    gap = r_site - q_site if q_site is not None and r_site is not None else ringing[0] - queued[0]
    return gap > IMMEDIATE_RING_S


def wait_s(view: CallerView) -> float | None:
    """Queue entry (or dialling) to connected, for answered calls."""
    if view.outcome != "answered" or view.answered_at is None:
        return None
    since = view.queued_at if view.queued_at is not None else view.offered_at
    return max(0.0, view.answered_at - since)


def routing_latency_s(view: CallerView) -> float | None:
    queued = _first(view, "queued")
    if queued is None:
        return None
    for kind, at, _ in view.progress:
        if kind == "ringing" and at >= queued[0]:
            return at - queued[0]
    return None


def ring_sequence(view: CallerView) -> list[str]:
    return [details.get("agent_code", "") for kind, _, details in view.progress if kind == "ringing"]


# -- aggregation ---------------------------------------------------------------------------------


@dataclass
class _Tally:
    counts: Counter[str] = field(default_factory=Counter)
    answered_or_abandoned: int = 0
    waited: int = 0
    waits: list[float] = field(default_factory=list)
    within_threshold: int = 0

    def add(self, view: CallerView, threshold_s: float, fault: str | None = None) -> None:
        self.counts["offered"] += 1
        if view.outcome in ("answered", "abandoned", "blocked"):
            self.counts[view.outcome] += 1
        elif fault is not None:
            self.counts[fault] += 1
        else:
            self.counts["lost_elsewhere"] += 1
        if view.outcome in ("answered", "abandoned"):
            self.answered_or_abandoned += 1
            self.waited += waited(view)
        wait = wait_s(view)
        if wait is not None:
            self.waits.append(wait)
            self.within_threshold += wait <= threshold_s

    def figures(self) -> dict[str, object]:
        out: dict[str, object] = {key: self.counts[key] for key in _COUNT_KEYS}
        reached = self.counts["offered"] - self.counts["blocked"] - self.counts["refused_by_failed_site"]
        out["p_wait"] = self.waited / self.answered_or_abandoned if self.answered_or_abandoned else None
        out["asa_s"] = sum(self.waits) / len(self.waits) if self.waits else None
        out["service_level"] = self.within_threshold / reached if reached > 0 else None
        return out


def percentiles_ms(samples_s: Iterable[float]) -> dict[str, object]:
    """p50/p90/p99/max in milliseconds, nearest rank; None when there is no sample."""
    ordered = sorted(s * 1000.0 for s in samples_s)
    out: dict[str, object] = {"count": len(ordered)}
    for name, p in (("p50", 50), ("p90", 90), ("p99", 99)):
        out[name] = ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else None
    out["max"] = ordered[-1] if ordered else None
    return out


def _erlang(
    rate_per_s: float, mean_handle_s: float, agents: int, threshold_s: float
) -> dict[str, object] | None:
    from routing.erlang import erlang_c_for_load  # another package's module, imported when needed

    if agents <= 0 or mean_handle_s <= 0:
        return None
    result = erlang_c_for_load(rate_per_s, mean_handle_s, agents, threshold_s)
    return {
        "p_wait": result.p_wait,
        "asa_s": result.asa_s if math.isfinite(result.asa_s) else None,
        "service_level": result.service_level,
        "occupancy": result.occupancy,
        "arrival_rate_per_s": rate_per_s,
        "agents": agents,
        "offered_erlangs": rate_per_s * mean_handle_s,
    }


def build_report(
    views: Sequence[CallerView],
    *,
    service_level_threshold_s: float,
    warmup_s: float,
    traffic_start: float,
    duration_s: float,
    agents_per_site: Mapping[str, int],
    mean_handle_s: float,
    central_records: Sequence[central_pb2.CallRecord] | None,
    events: Sequence[Mapping[str, object]] = (),
    lost_on_failed_site: Collection[str] = (),
    refused_by_failed_site: Collection[str] = (),
) -> dict[str, object]:
    """The report of SPEC §6 as a JSON-ready dict (see the module docstring for definitions).

    `lost_on_failed_site` and `refused_by_failed_site` hold CallerView keys of calls that ended
    "lost" because of a killed site (see the module docstring); other lost calls are lost_elsewhere.
    """
    window_start = traffic_start + warmup_s
    on_failed, refused = set(lost_on_failed_site), set(refused_by_failed_site)

    def fault(view: CallerView) -> str | None:
        if view.key in on_failed:
            return "lost_on_failed_site"
        return "refused_by_failed_site" if view.key in refused else None

    counted = [v for v in views if v.offered_at >= window_start]

    sites = sorted(
        set(agents_per_site)
        | {v.entry_site_id for v in views}
        | {v.served_site_id for v in views if v.served_site_id}
    )
    totals = _Tally()
    per_site = {site: _Tally() for site in sites}
    for view in counted:
        totals.add(view, service_level_threshold_s, fault(view))
        per_site[view.entry_site_id].add(view, service_level_threshold_s, fault(view))
        if view.outcome == "answered" and view.served_site_id and view.served_site_id != view.entry_site_id:
            for tally in (totals, per_site[view.entry_site_id]):
                tally.counts["overflow_out"] += 1
            for tally in (totals, per_site[view.served_site_id]):
                tally.counts["overflow_in"] += 1

    everything = Counter(v.outcome for v in views)
    all_calls = {
        "offered": len(views),
        "answered": everything["answered"],
        "abandoned": everything["abandoned"],
        "blocked": everything["blocked"],
        "failed": everything["failed"],
        "lost": everything["lost"],
    }

    def erlang_for(tally: _Tally, agents: int) -> dict[str, object] | None:
        reached = tally.counts["offered"] - tally.counts["blocked"] - tally.counts["refused_by_failed_site"]
        rate = reached / duration_s if duration_s > 0 else 0.0
        return _erlang(rate, mean_handle_s, agents, service_level_threshold_s)

    latencies = [s for s in map(routing_latency_s, counted) if s is not None]
    report: dict[str, object] = {
        "totals": totals.figures(),
        "sites": {site: tally.figures() for site, tally in per_site.items()},
        "erlang_c": {
            "pooled": erlang_for(totals, sum(agents_per_site.values())),
            "sites": {site: erlang_for(per_site[site], agents_per_site.get(site, 0)) for site in sites},
        },
        "routing_latency_ms": percentiles_ms(latencies),
        "transfers": {"attempted": 0, "completed": 0, "cross_site": 0, "failed": 0},
        "events": [dict(event) for event in events],
        "reconciliation": None,
        "window": {
            "traffic_start": traffic_start,
            "warmup_s": warmup_s,
            "duration_s": duration_s,
            "service_level_threshold_s": service_level_threshold_s,
            "mean_handle_s": mean_handle_s,
            "calls_counted": len(counted),
        },
        "all_calls": all_calls,
    }
    if central_records is not None:
        counts, problems = reconcile_detailed(views, central_records)
        report["reconciliation"] = counts
        report["reconciliation_problems"] = [
            {"call_id": call_id, "problem": problem} for call_id, problem in problems[:_MAX_PROBLEMS]
        ]
    return report


# -- reconciliation ------------------------------------------------------------------------------


def _record_ring_sequence(record: central_pb2.CallRecord) -> list[str]:
    events = sorted(record.events, key=lambda e: (rpc.unix_s(e.at), e.site_id, e.seq))
    return [e.agent_code for e in events if e.kind == common_pb2.CALL_EVENT_KIND_RINGING]


def _record_ended(record: central_pb2.CallRecord) -> bool:
    return (
        record.state == common_pb2.CALL_STATE_ENDED and record.outcome != common_pb2.CALL_OUTCOME_UNSPECIFIED
    )


def _mismatch(view: CallerView, record: central_pb2.CallRecord) -> str | None:
    expected = _OUTCOME_CODES[view.outcome]
    if record.outcome != expected:
        return f"outcome: caller {view.outcome}, central {common_pb2.CallOutcome.Name(record.outcome)}"
    if view.outcome == "answered":
        if record.agent_code != view.agent_code:
            return f"agent: caller {view.agent_code}, central {record.agent_code}"
        if view.served_site_id and record.served_site_id != view.served_site_id:
            return f"served site: caller {view.served_site_id}, central {record.served_site_id}"
    if record.events:
        ended = [e for e in record.events if e.kind == common_pb2.CALL_EVENT_KIND_ENDED]
        if ended and ended[-1].outcome != expected:
            return f"ended event outcome: {common_pb2.CallOutcome.Name(ended[-1].outcome)}"
        rung_caller, rung_central = ring_sequence(view), _record_ring_sequence(record)
        if rung_caller != rung_central:
            return f"ringing: caller {rung_caller}, central {rung_central}"
    return None


def reconcile_detailed(
    views: Sequence[CallerView], central_records: Sequence[central_pb2.CallRecord]
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The reconciliation counts and, per problem, (call id, what is wrong)."""
    by_id: dict[str, central_pb2.CallRecord] = {}
    for each in central_records:
        by_id.setdefault(each.call_id, each)
    problems: list[tuple[str, str]] = []
    counts = Counter[str]()
    caller_ids = set()
    for view in views:
        if not view.call_id:
            if view.reason != "province-busy":  # refused by the network: no site ever saw it
                counts["without_call_id"] += 1
            continue
        caller_ids.add(view.call_id)
        if view.outcome not in _ENDED_OUTCOMES:
            continue  # the caller never saw the end: nothing to hold central to
        record = by_id.get(view.call_id)
        if record is None or not _record_ended(record):
            counts["missing"] += 1
            problems.append((view.call_id, "missing" if record is None else "not ended at central"))
            continue
        problem = _mismatch(view, record)
        if problem is not None:
            counts["mismatched"] += 1
            problems.append((view.call_id, problem))
    kinds = duplicates(central_records)
    duplicated_calls = set().union(*kinds.values())
    for kind, call_ids in kinds.items():
        problems.extend((call_id, f"duplicated: {kind}") for call_id in sorted(call_ids))
    result = {
        "caller_calls": len(caller_ids),
        "central_records": len(central_records),
        "missing": counts["missing"],
        "duplicated": len(duplicated_calls),
        **{f"duplicated_{kind}": len(call_ids) for kind, call_ids in kinds.items()},
        "mismatched": counts["mismatched"],
        "without_call_id": counts["without_call_id"],
        "unknown_to_callers": len(set(by_id) - caller_ids),
    }
    return result, problems


def duplicates(central_records: Sequence[central_pb2.CallRecord]) -> dict[str, set[str]]:
    """Calls central holds twice over, by how (call ids). A call id is central's primary key, so a
    second record is unlikely; what can happen is inside one record:

    - records: more than one record for one call id;
    - final_events: two ENDED events (the call ended twice, at one site or at two);
    - answered_at_once: two answers holding the call at the same moment (ANSWERED to the end of
      that agent's leg overlapping), at one site or at two, in a call that was never held or
      transferred (a consult or a conference rightly has two agents at once);
    - events_twice: one event ingested twice under two sequence numbers (same site, kind, time,
      agent and details, another seq).
    """
    found: dict[str, set[str]] = {
        "records": set(),
        "final_events": set(),
        "answered_at_once": set(),
        "events_twice": set(),
    }
    seen = Counter(r.call_id for r in central_records)
    found["records"] = {call_id for call_id, n in seen.items() if n > 1}
    for record in central_records:
        if sum(1 for e in record.events if e.kind == common_pb2.CALL_EVENT_KIND_ENDED) > 1:
            found["final_events"].add(record.call_id)
        shared = any(e.kind in _SHARED_KINDS for e in record.events)
        if not shared and _answered_while_answered(record):
            found["answered_at_once"].add(record.call_id)
        contents = Counter(_without_seq(e) for e in record.events)
        if any(n > 1 for n in contents.values()):
            found["events_twice"].add(record.call_id)
    return found


def _answered_while_answered(record: central_pb2.CallRecord) -> bool:
    """An ANSWERED event while another answer of the call (any agent, any site) was still open.

    Events in time order (every site's clock is the machine's); an agent's answer closes with its
    leg's end, or with an end that names no agent (ENDED, the caller hanging up) at its site.
    """
    open_answers: dict[tuple[str, str], float] = {}
    for e in sorted(record.events, key=lambda e: (rpc.unix_s(e.at), e.seq)):
        if e.kind == common_pb2.CALL_EVENT_KIND_ANSWERED:
            if open_answers:
                return True
            open_answers[(e.site_id, e.agent_code)] = rpc.unix_s(e.at)
        elif e.kind in _LEG_ENDS:
            if e.agent_code:
                open_answers.pop((e.site_id, e.agent_code), None)
            else:
                open_answers = {k: v for k, v in open_answers.items() if k[0] != e.site_id}
    return False


def _without_seq(event: common_pb2.CallEvent) -> bytes:
    copy = common_pb2.CallEvent()
    copy.CopyFrom(event)
    copy.seq = 0
    return copy.SerializeToString(deterministic=True)


def reconcile(
    views: Sequence[CallerView], central_records: Sequence[central_pb2.CallRecord]
) -> dict[str, int]:
    """caller_calls, central_records, missing, duplicated, mismatched (plus two diagnostic counts).

    missing: the caller saw `ended` but central has no record, or its record has not ended.
    duplicated: calls that central holds twice over in any way (`duplicates`: two records, two
    final events, two agents answering at once, one event ingested twice). mismatched: outcome,
    answering agent, ended event or the sequence of agents that rang differ between caller and central.
    """
    return reconcile_detailed(views, central_records)[0]


# -- rendering -----------------------------------------------------------------------------------


def _fmt(value: object, kind: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if kind == "pct":
            return f"{value * 100:.1f}%"
        return f"{value:.3f}"
    return str(value)


def render_table(report: Mapping[str, object]) -> str:
    """A readable rendering of a report (rich tables as plain text)."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=160, force_terminal=False, color_system=None)
    sites = report.get("sites")
    totals = report.get("totals")
    erlang = report.get("erlang_c")
    site_rows: dict[str, object] = dict(sites) if isinstance(sites, Mapping) else {}
    erlang_sites: Mapping[str, object] = {}
    erlang_pooled: object = None
    if isinstance(erlang, Mapping):
        erlang_sites = erlang.get("sites") or {}
        erlang_pooled = erlang.get("pooled")

    table = Table(title="Calls (callers' side, measurement window)")
    columns = [
        ("site", ""),
        ("offered", ""),
        ("answered", ""),
        ("abandoned", ""),
        ("blocked", ""),
        ("lost (failed site)", ""),
        ("lost (elsewhere)", ""),
        ("p_wait", "pct"),
        ("ASA s", ""),
        ("SL", "pct"),
        ("ovf out", ""),
        ("ovf in", ""),
        ("Erlang C p_wait", "pct"),
        ("Erlang C ASA s", ""),
        ("Erlang C SL", "pct"),
    ]
    for name, _ in columns:
        table.add_column(name, justify="left" if name == "site" else "right")
    keys = [
        "offered",
        "answered",
        "abandoned",
        "blocked",
        "lost_on_failed_site",
        "lost_elsewhere",
        "p_wait",
        "asa_s",
        "service_level",
        "overflow_out",
        "overflow_in",
    ]

    def row(label: str, figures: object, model: object) -> list[str]:
        figs = figures if isinstance(figures, Mapping) else {}
        mod = model if isinstance(model, Mapping) else {}
        cells = [label]
        cells += [_fmt(figs.get(key), columns[i + 1][1]) for i, key in enumerate(keys)]
        cells += [
            _fmt(mod.get("p_wait"), "pct"),
            _fmt(mod.get("asa_s")),
            _fmt(mod.get("service_level"), "pct"),
        ]
        return cells

    for site, figures in site_rows.items():
        table.add_row(*row(site, figures, erlang_sites.get(site)))
    table.add_section()
    table.add_row(*row("total (Erlang C pooled)", totals, erlang_pooled))
    console.print(table)

    latency = report.get("routing_latency_ms")
    if isinstance(latency, Mapping):
        console.print(
            "routing latency ms (queued -> ringing): "
            + "  ".join(f"{k} {_fmt(latency.get(k))}" for k in ("count", "p50", "p90", "p99", "max"))
        )
    transfers = report.get("transfers")
    if isinstance(transfers, Mapping):
        console.print("transfers: " + "  ".join(f"{k} {v}" for k, v in transfers.items()))
    reconciliation = report.get("reconciliation")
    if isinstance(reconciliation, Mapping):
        console.print("reconciliation: " + "  ".join(f"{k} {v}" for k, v in reconciliation.items()))
    else:
        console.print("reconciliation: not done (no central records)")
    events = report.get("events")
    if isinstance(events, Sequence) and events:
        ev_table = Table(title="Fault events")
        for name in ("at_s", "action", "target", "service_gap_s", "calls_lost"):
            ev_table.add_column(name)
        for event in events:
            if isinstance(event, Mapping):
                ev_table.add_row(
                    *(_fmt(event.get(k)) for k in ("at_s", "action", "target", "service_gap_s", "calls_lost"))
                )
        console.print(ev_table)
    return buffer.getvalue()


def site_figures(report: Mapping[str, object], site_id: str) -> Mapping[str, object]:
    """One site's measured figures (a small convenience for the CLI and tests)."""
    sites = report["sites"]
    assert isinstance(sites, Mapping)
    figures = sites[site_id]
    assert isinstance(figures, Mapping)
    return figures


__all__ = [
    "build_report",
    "percentiles_ms",
    "reconcile",
    "reconcile_detailed",
    "render_table",
    "ring_sequence",
    "routing_latency_s",
    "site_figures",
    "wait_s",
    "waited",
]
