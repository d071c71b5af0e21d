"""Invariants every chaos run must keep, checked from central's records and the callers' views.

- no agent ever holds two calls: at one site, an agent's answered intervals (ANSWERED to the end
  of that agent's leg: hung up by either side, returned, transferred or ended) never overlap;
- no call is served twice at once: a call's answered intervals at different sites never overlap
  (in particular never on both sides of a partition);
- no call has two final records or none: exactly one record per call id, at most one ENDED event,
  and every call whose caller heard `ended` has an ended record;
- offered = answered + abandoned + blocked + lost, over every call the callers offered (lost:
  every call that did not end normally, whatever the report attributes it to).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

from tools.simulation.traffic import CallerView
from vcc import rpc
from vcc.v1 import central_pb2, common_pb2

K = common_pb2
# Events after which the agent who answered no longer holds the call at that site.
_LEG_ENDS = frozenset(
    {
        K.CALL_EVENT_KIND_AGENT_HUNG_UP,
        K.CALL_EVENT_KIND_CALLER_HUNG_UP,
        K.CALL_EVENT_KIND_RETURNED,
        K.CALL_EVENT_KIND_TRANSFERRED,
        K.CALL_EVENT_KIND_ENDED,
    }
)
# Events of one site share its clock; a few microseconds of rounding is not an overlap.
_EPSILON_S = 1e-3
_MAX_EXAMPLES = 5


def answered_intervals(
    record: central_pb2.CallRecord,
) -> tuple[list[tuple[str, str, float, float]], int]:
    """(site, agent, answered at, leg ended at) per answer in the record; and answers never closed."""
    by_site: dict[str, list[common_pb2.CallEvent]] = defaultdict(list)
    for event in record.events:
        by_site[event.site_id].append(event)
    intervals: list[tuple[str, str, float, float]] = []
    open_answers = 0
    for site, events in by_site.items():
        events.sort(key=lambda e: (e.seq, rpc.unix_s(e.at)))
        start: tuple[str, float] | None = None
        for event in events:
            if event.kind == K.CALL_EVENT_KIND_ANSWERED:
                if start is not None:
                    open_answers += 1
                start = (event.agent_code, rpc.unix_s(event.at))
            elif event.kind in _LEG_ENDS and start is not None:
                intervals.append((site, start[0], start[1], rpc.unix_s(event.at)))
                start = None
        if start is not None:
            open_answers += 1
    return intervals, open_answers


def _overlaps(spans: list[tuple[float, float, str]]) -> list[tuple[str, str]]:
    """Pairs of labels whose spans overlap (each span against the longest-reaching one before it)."""
    spans.sort()
    found = []
    reach, holder = -float("inf"), ""
    for start, end, label in spans:
        if start < reach - _EPSILON_S:
            found.append((holder, label))
        if end > reach:
            reach, holder = end, label
    return found


def check(views: Sequence[CallerView], records: Sequence[central_pb2.CallRecord]) -> dict[str, object]:
    """Counts of each broken invariant (all 0 when the run kept them), with a few examples."""
    by_agent: dict[tuple[str, str], list[tuple[float, float, str]]] = defaultdict(list)
    served_twice: list[str] = []
    open_answers = 0
    two_final: list[str] = []
    for record in records:
        intervals, unclosed = answered_intervals(record)
        open_answers += unclosed
        for site, agent, start, end in intervals:
            by_agent[(site, agent)].append((start, end, record.call_id))
        spans = [(start, end, site) for site, _, start, end in intervals]
        if any(a != b for a, b in _overlaps(spans)):
            served_twice.append(record.call_id)
        if sum(1 for e in record.events if e.kind == K.CALL_EVENT_KIND_ENDED) > 1:
            two_final.append(record.call_id)
    double_booked = [
        f"{site}/{agent}: {a} and {b}"
        for (site, agent), spans in by_agent.items()
        for a, b in _overlaps(spans)
    ]
    per_call = Counter(r.call_id for r in records)
    duplicate_records = sorted(c for c, n in per_call.items() if n > 1)
    ended_at_central = {
        r.call_id
        for r in records
        if r.state == K.CALL_STATE_ENDED and r.outcome != K.CALL_OUTCOME_UNSPECIFIED
    }
    no_final = sorted(
        v.call_id
        for v in views
        if v.call_id
        and v.outcome in ("answered", "abandoned", "blocked")
        and v.call_id not in ended_at_central
    )
    outcomes = Counter(v.outcome for v in views)
    lost = len(views) - outcomes["answered"] - outcomes["abandoned"] - outcomes["blocked"]
    balance = {
        "offered": len(views),
        "answered": outcomes["answered"],
        "abandoned": outcomes["abandoned"],
        "blocked": outcomes["blocked"],
        "lost": lost,
        "holds": lost == outcomes["lost"] + outcomes["failed"],
    }
    return {
        "agents_with_two_calls": len(double_booked),
        "calls_served_twice_at_once": len(served_twice),
        "calls_with_two_final_records": len(duplicate_records) + len(two_final),
        "calls_without_final_record": len(no_final),
        "offered_balance": balance,
        "answers_never_closed": open_answers,  # diagnostic: calls cut short with their site
        "examples": {
            "agents_with_two_calls": double_booked[:_MAX_EXAMPLES],
            "calls_served_twice_at_once": served_twice[:_MAX_EXAMPLES],
            "calls_with_two_final_records": (duplicate_records + two_final)[:_MAX_EXAMPLES],
            "calls_without_final_record": no_final[:_MAX_EXAMPLES],
        },
    }


def broken(invariants: dict[str, object]) -> list[str]:
    """One line per broken invariant (empty: all kept)."""
    problems = [
        f"invariant broken: {key} {invariants[key]}"
        for key in (
            "agents_with_two_calls",
            "calls_served_twice_at_once",
            "calls_with_two_final_records",
            "calls_without_final_record",
        )
        if invariants.get(key)
    ]
    balance = invariants.get("offered_balance")
    if isinstance(balance, dict) and not balance.get("holds"):
        problems.append(f"invariant broken: offered != answered + abandoned + blocked + lost ({balance})")
    return problems
