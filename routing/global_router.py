"""The global site-selection policy of the virtual call center (pure: time and state come in).

Central feeds it one snapshot per site, built from every site's live state, and asks:
- `route(call, snapshots, policy)`: should this call waiting at its origin leave, and for where?
- `pull_candidates(snapshots, policy)`: pooled mode, which origins should offer a waiting call to
  which site that has a free agent (the oldest waiting call in the province first)?
- `pre_route(home, snapshots, policy)`: where should the network deliver a new call?
- `ready_targets(origin, snapshots, policy)`: per skill group, where a call of `origin` that must
  leave now should go (central pushes these, so a site offers without asking first).

Every answer is a `Decision` that lists each site considered, its figures and why it was not
eligible or lost, so an operator can read why a caller in one city was served in another.
Calls are only queued at their origin: a target must be able to reserve a ready agent now.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

Mode = Literal["isolated", "overflow", "pooled"]
# What a decision was about (the RoutingDecision.mode on the wire).
DecisionMode = Literal["isolated", "overflow", "pooled", "pre-route", "transfer"]

# Candidate notes: why a site could not take the call (stable words, part of the record).
ORIGIN = "origin"
EXCLUDED = "excluded"
DOWN = "down"
STALE = "stale"
NO_SKILL_GROUP = "no-skill-group"
NO_AGENT = "no-agent"
NO_TIE_CHANNEL = "no-tie-channel"
NO_TRUNK_CHANNEL = "no-trunk-channel"
CHOSEN = "chosen"


@dataclass(frozen=True, slots=True)
class SkillState:
    """One skill group at one site, as the site last reported it."""

    ready_agents: int = 0
    logged_in: int = 0
    calls_waiting: int = 0
    oldest_wait_s: float = 0.0
    longest_idle_s: float = 0.0
    expected_wait_s: float = 0.0


@dataclass(frozen=True, slots=True)
class SiteSnapshot:
    site_id: str
    # Up as far as membership and the state stream tell (see central.live_state).
    up: bool
    # Seconds since central received this state.
    state_age_s: float
    skills: Mapping[str, SkillState] = field(default_factory=dict)
    # Peer site id -> free tie-trunk channels on THIS site's side (its `tie:<peer>` pool).
    free_tie: Mapping[str, int] = field(default_factory=dict)
    free_trunk: int = 0
    free_board: int = 0


@dataclass(frozen=True, slots=True)
class Policy:
    mode: Mode = "overflow"
    overflow_after_s: float = 10.0
    max_state_age_s: float = 2.0


@dataclass(frozen=True, slots=True)
class CallToRoute:
    origin: str
    skill_group: str
    waited_s: float
    priority: int = 0
    # Sites that refused this call already.
    excluded: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Candidate:
    site_id: str
    up: bool
    state_age_s: float
    ready_agents: int
    calls_waiting: int
    # -1: nobody is logged in for the skill there.
    expected_wait_s: float
    free_tie_channels: int
    free_board_channels: int
    eligible: bool
    note: str


@dataclass(frozen=True, slots=True)
class Decision:
    origin: str
    # "" : the call stays (or, for a pre-route, every site is down or full: busy).
    target: str
    mode: DecisionMode
    reason: str
    skill_group: str
    candidates: tuple[Candidate, ...]

    @property
    def moves(self) -> bool:
        return bool(self.target) and self.target != self.origin


@dataclass(frozen=True, slots=True)
class Pull:
    """Pooled mode: `origin` should offer its longest-waiting `skill_group` call to `target`."""

    origin: str
    skill_group: str
    target: str
    oldest_wait_s: float
    decision: Decision


# ---- route ---------------------------------------------------------------------------------


def route(call: CallToRoute, snapshots: Sequence[SiteSnapshot], policy: Policy) -> Decision:
    """Stay or move a call waiting at its origin; see the module doc and `Policy.mode`."""
    by_id = {s.site_id: s for s in snapshots}
    origin = by_id.get(call.origin)
    here = _skill(origin, call.skill_group)
    candidates = [_route_candidate(call, s, origin, policy) for s in snapshots]
    eligible = [c for c in candidates if c.eligible and c.site_id != call.origin]

    def decide(target: str, reason: str, ranked: Sequence[Candidate] = ()) -> Decision:
        return Decision(
            call.origin, target, policy.mode, reason, call.skill_group, _noted(candidates, target, ranked)
        )

    if policy.mode == "isolated":
        return decide("", "isolated mode: calls never leave their city")
    if here.ready_agents > 0:
        return decide("", f"{call.origin} has a ready agent for {call.skill_group}: served locally")
    nobody_here = origin is not None and here.logged_in == 0
    if policy.mode == "overflow" and not nobody_here and call.waited_s < policy.overflow_after_s:
        return decide(
            "",
            f"waited {call.waited_s:.1f}s of the {policy.overflow_after_s:.1f}s "
            f"before overflow at {call.origin}",
        )
    if not eligible:
        return decide("", _nowhere(call.skill_group, candidates))
    ranked = _rank(policy.mode, eligible, by_id, call.skill_group)
    best = ranked[0]
    if policy.mode == "pooled":
        idle = by_id[best.site_id].skills[call.skill_group].longest_idle_s
        return decide(
            best.site_id,
            f"pooled: no ready agent at {call.origin}; {best.site_id} has the agent idle longest "
            f"({idle:.1f}s, {best.ready_agents} ready, {best.free_tie_channels} free tie channels)",
            ranked,
        )
    why = (
        f"nobody logged in for {call.skill_group} at {call.origin}"
        if nobody_here
        else f"waited {call.waited_s:.1f}s >= {policy.overflow_after_s:.1f}s at {call.origin}, no ready agent"
    )
    return decide(
        best.site_id,
        f"overflow: {why}; {best.site_id} has the lowest expected wait ({best.expected_wait_s:.1f}s, "
        f"{best.ready_agents} ready, {best.free_tie_channels} free tie channels)",
        ranked,
    )


def _rank(
    mode: Mode, eligible: Sequence[Candidate], by_id: Mapping[str, SiteSnapshot], skill_group: str
) -> list[Candidate]:
    """Best target first: pooled by the agent idle longest, overflow by the lowest expected wait."""
    if mode == "pooled":
        return sorted(
            eligible,
            key=lambda c: (
                -by_id[c.site_id].skills[skill_group].longest_idle_s,
                c.expected_wait_s,
                c.site_id,
            ),
        )
    return sorted(
        eligible, key=lambda c: (c.expected_wait_s, -c.ready_agents, -c.free_tie_channels, c.site_id)
    )


# ---- ready targets (pushed to the sites) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadyTarget:
    """Where a call of `decision.skill_group` should go now; `ranked`: the eligible sites, best first."""

    decision: Decision
    ranked: tuple[Candidate, ...]


def ready_targets(origin: str, snapshots: Sequence[SiteSnapshot], policy: Policy) -> dict[str, ReadyTarget]:
    """Per skill group of `origin`: where one of its calls should go if it must leave now.

    `route()` without the two questions only the origin can answer at the moment a call is due
    (has it a ready agent, has the call waited long enough): central pushes these to the origin,
    which offers at once when its own rules say a call must leave, and reports the decision.
    The decision's target is "" when no other site can take such a call now; its candidates are
    ranked as `route()` ranks them. Isolated mode: none.
    """
    if policy.mode == "isolated":
        return {}
    by_id = {s.site_id: s for s in snapshots}
    here = by_id.get(origin)
    if here is None:
        return {}
    out: dict[str, ReadyTarget] = {}
    for skill in here.skills:
        call = CallToRoute(origin=origin, skill_group=skill, waited_s=math.inf)
        candidates = [_route_candidate(call, s, here, policy) for s in snapshots]
        eligible = [c for c in candidates if c.eligible and c.site_id != origin]
        if not eligible:
            nowhere = Decision(origin, "", policy.mode, _nowhere(skill, candidates), skill, tuple(candidates))
            out[skill] = ReadyTarget(nowhere, ())
            continue
        ranked = _rank(policy.mode, eligible, by_id, skill)
        best = ranked[0]
        reason = (
            f"{policy.mode}: ready target for {origin}'s {skill} calls that must leave; {best.site_id} "
            f"ranks first ({best.ready_agents} ready, expected wait {best.expected_wait_s:.1f}s, "
            f"{best.free_tie_channels} free tie channels, state {best.state_age_s:.2f}s old)"
        )
        decision = Decision(
            origin, best.site_id, policy.mode, reason, skill, _noted(candidates, best.site_id, ranked)
        )
        out[skill] = ReadyTarget(decision, tuple(ranked))
    return out


def _route_candidate(
    call: CallToRoute, s: SiteSnapshot, origin: SiteSnapshot | None, policy: Policy
) -> Candidate:
    sk = _skill(s, call.skill_group)
    tie = 0 if origin is None or s.site_id == call.origin else max(0, origin.free_tie.get(s.site_id, 0))
    note = ""
    if s.site_id == call.origin:
        # The origin's figures are for the record; whether it serves is the first rule of route().
        note = ORIGIN
    elif s.site_id in call.excluded:
        note = EXCLUDED
    elif not s.up:
        note = DOWN
    elif s.state_age_s > policy.max_state_age_s:
        note = STALE
    elif call.skill_group not in s.skills:
        note = NO_SKILL_GROUP
    elif sk.ready_agents <= 0:
        note = NO_AGENT
    elif tie <= 0:
        note = NO_TIE_CHANNEL
    eligible = note == "" or (note == ORIGIN and sk.ready_agents > 0)
    return _candidate(s, sk, tie, eligible, note)


def _nowhere(skill_group: str, candidates: Sequence[Candidate]) -> str:
    others = [c for c in candidates if c.note != ORIGIN]
    if not others:
        return "no other site in the province"
    notes = ", ".join(f"{c.site_id} {c.note}" for c in others)
    return f"no other site can take a {skill_group} call now ({notes}): the call keeps waiting"


# ---- pooled: pulls -------------------------------------------------------------------------


def pull_candidates(snapshots: Sequence[SiteSnapshot], policy: Policy, max_pulls: int = 64) -> list[Pull]:
    """Pooled mode: which origins should offer a waiting call to which site with a free agent.

    Waiting (origin, skill group) pairs are served oldest wait first across the province; each
    takes, in turn, one free agent at the site whose agent has been idle longest (then lowest
    expected wait, then site id), while free agents, tie channels and waiting calls last. An
    origin with a ready agent for the skill serves its own calls. At most `max_pulls`.
    """
    if policy.mode != "pooled":
        return []
    fresh = [s for s in snapshots if s.up and s.state_age_s <= policy.max_state_age_s]
    waiting = sorted(
        (
            (s, skill, st)
            for s in fresh
            for skill, st in s.skills.items()
            if st.calls_waiting > 0 and st.ready_agents == 0
        ),
        key=lambda w: (-w[2].oldest_wait_s, w[0].site_id, w[1]),
    )
    free_agents = {
        (s.site_id, skill): st.ready_agents
        for s in fresh
        for skill, st in s.skills.items()
        if st.ready_agents > 0 and st.calls_waiting == 0
    }
    ties = {(s.site_id, peer): n for s in fresh for peer, n in s.free_tie.items()}
    calls_left = {(s.site_id, skill): st.calls_waiting for s, skill, st in waiting}
    by_id = {s.site_id: s for s in fresh}
    pulls: list[Pull] = []
    progress = True
    while progress and len(pulls) < max_pulls:
        progress = False
        for origin, skill, st in waiting:
            if len(pulls) >= max_pulls:
                break
            if calls_left[(origin.site_id, skill)] <= 0:
                continue
            targets = sorted(
                (
                    by_id[site_id]
                    for (site_id, sk), n in free_agents.items()
                    if sk == skill
                    and n > 0
                    and site_id != origin.site_id
                    and ties.get((origin.site_id, site_id), 0) > 0
                ),
                key=lambda t: (-t.skills[skill].longest_idle_s, t.skills[skill].expected_wait_s, t.site_id),
            )
            if not targets:
                continue
            target = targets[0]
            free_agents[(target.site_id, skill)] -= 1
            ties[(origin.site_id, target.site_id)] -= 1
            calls_left[(origin.site_id, skill)] -= 1
            progress = True
            pulls.append(_pull(origin, skill, st, target, fresh))
    return pulls


def _pull(
    origin: SiteSnapshot, skill: str, st: SkillState, target: SiteSnapshot, fresh: Sequence[SiteSnapshot]
) -> Pull:
    tsk = target.skills[skill]
    tie = origin.free_tie.get(target.site_id, 0)
    chosen = _candidate(target, tsk, tie, True, CHOSEN)
    reason = (
        f"pooled: an agent is free at {target.site_id} for {skill} (idle {tsk.longest_idle_s:.1f}s); "
        f"{origin.site_id}'s oldest {skill} call has waited {st.oldest_wait_s:.1f}s, the oldest eligible "
        f"in the province"
    )
    here = _candidate(origin, st, 0, False, ORIGIN)
    decision = Decision(origin.site_id, target.site_id, "pooled", reason, skill, (here, chosen))
    return Pull(origin.site_id, skill, target.site_id, st.oldest_wait_s, decision)


# ---- pre-routing ---------------------------------------------------------------------------


def pre_route(home: str, snapshots: Sequence[SiteSnapshot], policy: Policy) -> Decision:
    """Where the network should deliver a new call whose city is `home`.

    The home site when it is up, fresh and has a free trunk channel; else the live site with a
    free trunk channel and the lowest expected wait (its worst staffed skill group; a site with
    nobody logged in ranks last), then the most free trunk channels, then site id; else busy ("").
    """
    candidates = []
    for s in snapshots:
        note = ""
        if not s.up:
            note = DOWN
        elif s.state_age_s > policy.max_state_age_s:
            note = STALE
        elif s.free_trunk <= 0:
            note = NO_TRUNK_CHANNEL
        candidates.append(_pre_route_candidate(s, note))
    home_c = next((c for c in candidates if c.site_id == home), None)

    def decide(target: str, reason: str, ranked: Sequence[Candidate] = ()) -> Decision:
        return Decision(home, target, "pre-route", reason, "", _noted(candidates, target, ranked))

    if home_c is not None and home_c.eligible:
        return decide(home, f"home site {home} is up with {_trunks(snapshots, home)} free trunk channels")
    why_home = home_c.note if home_c is not None else "unknown"
    others = [c for c in candidates if c.eligible and c.site_id != home]
    if not others:
        return decide(
            "", f"busy: home site {home} is {why_home} and no other site is up with a free trunk channel"
        )
    ranked = sorted(others, key=lambda c: (_rank_wait(c), -_trunks(snapshots, c.site_id), c.site_id))
    best = ranked[0]
    wait = "nobody logged in" if best.expected_wait_s < 0 else f"expected wait {best.expected_wait_s:.1f}s"
    return decide(
        best.site_id,
        f"home site {home} is {why_home}; {best.site_id} is up with "
        f"{_trunks(snapshots, best.site_id)} free trunk channels and the lowest {wait}",
        ranked,
    )


def _pre_route_candidate(s: SiteSnapshot, note: str) -> Candidate:
    staffed = [sk for sk in s.skills.values() if sk.logged_in > 0]
    total = SkillState(
        ready_agents=sum(sk.ready_agents for sk in s.skills.values()),
        calls_waiting=sum(sk.calls_waiting for sk in s.skills.values()),
        logged_in=len(staffed),
        expected_wait_s=max((sk.expected_wait_s for sk in staffed), default=0.0),
    )
    return _candidate(s, total, 0, note == "", note)


def _rank_wait(c: Candidate) -> float:
    return math.inf if c.expected_wait_s < 0 else c.expected_wait_s


def _trunks(snapshots: Sequence[SiteSnapshot], site_id: str) -> int:
    return next((s.free_trunk for s in snapshots if s.site_id == site_id), 0)


# ---- shared --------------------------------------------------------------------------------


def _skill(s: SiteSnapshot | None, skill_group: str) -> SkillState:
    if s is None:
        return SkillState()
    return s.skills.get(skill_group, SkillState())


def _candidate(s: SiteSnapshot, sk: SkillState, tie: int, eligible: bool, note: str) -> Candidate:
    return Candidate(
        site_id=s.site_id,
        up=s.up,
        state_age_s=s.state_age_s,
        ready_agents=sk.ready_agents,
        calls_waiting=sk.calls_waiting,
        expected_wait_s=sk.expected_wait_s if sk.logged_in > 0 else -1.0,
        free_tie_channels=tie,
        free_board_channels=s.free_board,
        eligible=eligible,
        note=note,
    )


def _noted(
    candidates: Sequence[Candidate], target: str, ranked: Sequence[Candidate]
) -> tuple[Candidate, ...]:
    """Notes for the eligible sites: the winner is `chosen`, the others say what they lost on."""
    order = {c.site_id: i for i, c in enumerate(ranked)}
    noted = []
    for c in candidates:
        note = c.note
        if c.site_id == target and c.eligible:
            note = CHOSEN
        elif c.site_id in order and target:
            note = f"lost to {target} (ranked {order[c.site_id] + 1} of {len(ranked)})"
        elif c.eligible and c.note == "":
            note = "not needed"
        noted.append(replace(c, note=note))
    return tuple(noted)
