"""Invariants every chaos run must keep, checked from central's records and the callers' views.

- no agent ever holds two calls: at one site, an agent's answered intervals (ANSWERED to the end
  of that agent's leg: hung up by either side, returned, transferred or ended) never overlap;
- no call is served twice at once: a call's answered intervals at different sites never overlap
  (in particular never on both sides of a partition);
- no call has two final records or none: exactly one record per call id, at most one final
  event (an ENDED; or central's closure of a lost city's call, after which that city's own late
  ENDED ends nothing), and every call whose caller heard `ended` has an ended record;
- no agent ever talks to two callers: the callers' side of the first invariant, from what each
  caller heard (connected to agent A at a site, until transferred or ended), never from central;
- the offered balance: of the calls whose caller heard the end, the callers count as many
  answered, abandoned, blocked and failed as central's records of the same calls do, and central
  holds no ended record of a call that no caller placed.

Each invariant holds two independent sources against each other (or one source against an
impossibility, like two overlapping answers of one agent); none recounts a number from itself.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

from tools.simulation.traffic import CallerView
from vcc import rpc
from vcc.call_events import CENTRAL_SITE
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
# What a caller hears when the agent it talked to no longer has the call.
_CALLER_LEG_ENDS = frozenset({"transferred", "queued", "ringing", "connected", "prompt", "ended"})
_FINAL = frozenset({"answered", "abandoned", "blocked", "failed", "self_served"})
_OUTCOME_NAMES = {
    K.CALL_OUTCOME_ANSWERED: "answered",
    K.CALL_OUTCOME_ABANDONED: "abandoned",
    K.CALL_OUTCOME_BLOCKED: "blocked",
    K.CALL_OUTCOME_FAILED: "failed",
    K.CALL_OUTCOME_SELF_SERVED: "self_served",
    # Never heard by a caller (its city died with it): counted apart from every outcome callers hear.
    K.CALL_OUTCOME_SITE_LOST: "site_lost",
}
# Events of one site share its clock; a few microseconds of rounding is not an overlap.
_EPSILON_S = 1e-3
_MAX_EXAMPLES = 5


def answered_intervals(
    record: central_pb2.CallRecord,
) -> tuple[list[tuple[str, str, float, float]], int]:
    """(site, agent, answered at, leg ended at) per answer in the record; and answers never closed.

    An answer is closed by its own site's next leg end. A serving city that died mid-call never
    journals one: its answer is then closed where the call's origin took the caller back (the
    origin's RETURNED naming that city), else by the call's end (an ENDED of another site, or
    central's closure of a lost city's call). Left open, such an answer had no interval at all,
    and an origin answering again while the far agent still had the caller went unseen.
    """
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
            end = _closed_elsewhere(record, site, start[1])
            if end is None:
                open_answers += 1
            else:
                intervals.append((site, start[0], start[1], end))
    return intervals, open_answers


def _closed_elsewhere(record: central_pb2.CallRecord, site: str, answered_at: float) -> float | None:
    """When another site ended the leg `site` left open: the origin's RETURNED from it (the first
    after the answer), else the call's first end after the answer; None if neither came."""
    returned: list[float] = []
    ended: list[float] = []
    for e in record.events:
        at = rpc.unix_s(e.at)
        if e.site_id == site or at < answered_at - _EPSILON_S:
            continue
        if e.kind == K.CALL_EVENT_KIND_RETURNED and e.data.get("target") == site:
            returned.append(at)
        elif e.kind == K.CALL_EVENT_KIND_ENDED:
            ended.append(at)
    if returned:
        return min(returned)
    return min(ended, default=None)


def final_events(record: central_pb2.CallRecord) -> list[common_pb2.CallEvent]:
    """The events that gave the call its end: its ENDED events, or, once central closed the call
    of a lost city (outcome SITE_LOST), that closure alone (the city's own ENDED that arrived
    after it is kept in the journal and ends nothing: central.records.fold)."""
    ends = [e for e in record.events if e.kind == K.CALL_EVENT_KIND_ENDED]
    closures = [e for e in ends if e.site_id == CENTRAL_SITE and e.outcome == K.CALL_OUTCOME_SITE_LOST]
    return closures or ends


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


def check(
    views: Sequence[CallerView],
    records: Sequence[central_pb2.CallRecord],
    *,
    ended_before: float | None = None,
) -> dict[str, object]:
    """Counts of each broken invariant (all 0 when the run kept them), with a few examples.

    `ended_before`: `views` hold only the calls that ended before this moment (a check in the
    middle of a run): a record that ended later may belong to a caller still on the line.
    """
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
        if len(final_events(record)) > 1:
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
    balance = offered_balance(views, records, ended_before=ended_before)
    two_callers = agents_with_two_callers(views)
    return {
        "agents_with_two_calls": len(double_booked),
        "agents_with_two_callers": len(two_callers),
        "calls_served_twice_at_once": len(served_twice),
        "calls_with_two_final_records": len(duplicate_records) + len(two_final),
        "calls_without_final_record": len(no_final),
        "offered_balance": balance,
        "answers_never_closed": open_answers,  # diagnostic: calls cut short with their site
        "examples": {
            "agents_with_two_calls": double_booked[:_MAX_EXAMPLES],
            "agents_with_two_callers": two_callers[:_MAX_EXAMPLES],
            "calls_served_twice_at_once": served_twice[:_MAX_EXAMPLES],
            "calls_with_two_final_records": (duplicate_records + two_final)[:_MAX_EXAMPLES],
            "calls_without_final_record": no_final[:_MAX_EXAMPLES],
        },
    }


def offered_balance(
    views: Sequence[CallerView],
    records: Sequence[central_pb2.CallRecord],
    *,
    ended_before: float | None = None,
) -> dict[str, object]:
    """Outcome counts of the calls whose caller heard the end, from the callers and from central.

    `holds` when both count the same per outcome and central has no ended record of a call no
    caller placed (calls central refused before any site saw them have no call id: not counted;
    with `ended_before`, only records that ended before it, see `check`).
    """
    heard = {v.call_id: v.outcome for v in views if v.call_id and v.outcome in _FINAL}
    placed = {v.call_id for v in views if v.call_id}
    by_id: dict[str, central_pb2.CallRecord] = {}
    for record in records:
        by_id.setdefault(record.call_id, record)
    callers = Counter(heard.values())
    central = Counter(_OUTCOME_NAMES.get(by_id[c].outcome, "none") if c in by_id else "none" for c in heard)
    phantom = sorted(
        r.call_id
        for r in by_id.values()
        if r.call_id not in placed
        and r.outcome != K.CALL_OUTCOME_UNSPECIFIED
        and (ended_before is None or _record_end(r) < ended_before)
    )
    names = sorted(_FINAL)
    return {
        "callers": {name: callers[name] for name in names},
        "central": {name: central[name] for name in [*names, "none"]},
        "central_records_no_caller_placed": len(phantom),
        "examples": phantom[:_MAX_EXAMPLES],
        "holds": all(callers[n] == central[n] for n in names) and central["none"] == 0 and not phantom,
    }


def _record_end(record: central_pb2.CallRecord) -> float:
    """When the call ended at its site (its ENDED event, or the record's end)."""
    ends = [rpc.unix_s(e.at) for e in record.events if e.kind == K.CALL_EVENT_KIND_ENDED]
    if record.HasField("ended_at"):
        ends.append(rpc.unix_s(record.ended_at))
    return max(ends, default=float("inf"))


def caller_intervals(view: CallerView) -> list[tuple[str, str, float, float]]:
    """(site, agent, connected at, until) for each agent of the caller's entry site that the caller
    was connected to, as the caller heard it: from `connected` to the next message that says the
    agent no longer has it (transferred, queued or ringing again, another connected, ended).

    Times are the entry site's own stamps ("site_at"; the caller's receipt when missing): the
    entry site both releases its agent and tells the caller, so one clock orders the two callers
    of an agent. An agent in another city is left out: its release reaches the caller later,
    through the entry site, and would look like an overlap.
    """
    spans: list[tuple[str, str, float, float]] = []
    current: tuple[str, str, float] | None = None
    for kind, received, details in view.progress:
        at = float(details["site_at"]) if details.get("site_at") else received
        if kind in _CALLER_LEG_ENDS and current is not None:
            spans.append((*current, at))
            current = None
        if kind == "connected" and details.get("site_id", view.entry_site_id) == view.entry_site_id:
            current = (view.entry_site_id, details.get("agent_code", ""), at)
    if current is not None and view.ended_at is not None:
        spans.append((*current, view.ended_at))
    return spans


def agents_with_two_callers(views: Sequence[CallerView]) -> list[str]:
    """Agents that two callers heard at the same time (each caller's own account)."""
    by_agent: dict[tuple[str, str], list[tuple[float, float, str]]] = defaultdict(list)
    for view in views:
        for site, agent, start, end in caller_intervals(view):
            if agent:
                by_agent[(site, agent)].append((start, end, view.call_id or view.key))
    return [
        f"{site}/{agent}: {a} and {b}"
        for (site, agent), spans in sorted(by_agent.items())
        for a, b in _overlaps(spans)
    ]


def broken(invariants: dict[str, object]) -> list[str]:
    """One line per broken invariant (empty: all kept)."""
    problems = [
        f"invariant broken: {key} {invariants[key]}"
        for key in (
            "agents_with_two_calls",
            "agents_with_two_callers",
            "calls_served_twice_at_once",
            "calls_with_two_final_records",
            "calls_without_final_record",
        )
        if invariants.get(key)
    ]
    balance = invariants.get("offered_balance")
    if isinstance(balance, dict) and not balance.get("holds"):
        problems.append(
            "invariant broken: callers and central count different outcomes "
            f"(callers {balance.get('callers')}, central {balance.get('central')}, "
            f"records no caller placed {balance.get('central_records_no_caller_placed')})"
        )
    return problems
