"""The global site-selection policy: tables of cases, and Hypothesis properties."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.global_router import (
    CHOSEN,
    DOWN,
    EXCLUDED,
    NO_AGENT,
    NO_SKILL_GROUP,
    NO_TIE_CHANNEL,
    NO_TRUNK_CHANNEL,
    ORIGIN,
    STALE,
    CallToRoute,
    Mode,
    Policy,
    SiteSnapshot,
    SkillState,
    pre_route,
    pull_candidates,
    route,
)

G = "general"


def site(
    site_id: str,
    *,
    ready: int = 0,
    logged_in: int | None = None,
    waiting: int = 0,
    oldest: float = 0.0,
    idle: float = 0.0,
    ewt: float = 0.0,
    up: bool = True,
    age: float = 0.1,
    ties: dict[str, int] | None = None,
    trunks: int = 10,
    boards: int = 4,
    skill: str | None = G,
) -> SiteSnapshot:
    skills = {}
    if skill is not None:
        skills[skill] = SkillState(
            ready_agents=ready,
            logged_in=ready if logged_in is None else logged_in,
            calls_waiting=waiting,
            oldest_wait_s=oldest,
            longest_idle_s=idle,
            expected_wait_s=ewt,
        )
    return SiteSnapshot(
        site_id=site_id,
        up=up,
        state_age_s=age,
        skills=skills,
        free_tie=ties if ties is not None else {},
        free_trunk=trunks,
        free_board=boards,
    )


ALL_TIES = {"gz": 5, "sz": 5, "fs": 5, "dg": 5}


def origin(**kw: object) -> SiteSnapshot:
    """gz, with ties to every other site unless told otherwise."""
    kw.setdefault("ties", {k: v for k, v in ALL_TIES.items() if k != "gz"})
    kw.setdefault("logged_in", 3)
    return site("gz", **kw)  # type: ignore[arg-type]


OVERFLOW = Policy(mode="overflow", overflow_after_s=10.0, max_state_age_s=2.0)
POOLED = Policy(mode="pooled", overflow_after_s=10.0, max_state_age_s=2.0)
ISOLATED = Policy(mode="isolated", overflow_after_s=10.0, max_state_age_s=2.0)


def call(waited: float = 12.0, excluded: frozenset[str] = frozenset()) -> CallToRoute:
    return CallToRoute(origin="gz", skill_group=G, waited_s=waited, excluded=excluded)


def notes(decision: object) -> dict[str, str]:
    return {c.site_id: c.note for c in decision.candidates}  # type: ignore[attr-defined]


# ---- route: overflow ---------------------------------------------------------------------------

ROUTE_CASES: list[tuple[str, Policy, CallToRoute, list[SiteSnapshot], str, dict[str, str]]] = [
    (
        "waited long enough: the site with the lowest expected wait",
        OVERFLOW,
        call(12.0),
        [origin(), site("sz", ready=1, ewt=3.0), site("fs", ready=2, ewt=1.0)],
        "fs",
        {"gz": ORIGIN, "fs": CHOSEN, "sz": "lost to fs (ranked 2 of 2)"},
    ),
    (
        "not waited long enough: stays",
        OVERFLOW,
        call(9.9),
        [origin(), site("sz", ready=1)],
        "",
        {"gz": ORIGIN, "sz": "not needed"},
    ),
    (
        "exactly the overflow time: moves",
        OVERFLOW,
        call(10.0),
        [origin(), site("sz", ready=1)],
        "sz",
        {"sz": CHOSEN},
    ),
    (
        "nobody logged in at the origin: moves at once",
        OVERFLOW,
        call(0.0),
        [origin(logged_in=0), site("sz", ready=1)],
        "sz",
        {"sz": CHOSEN},
    ),
    (
        "the origin has no such skill group: nobody logged in, moves at once",
        OVERFLOW,
        call(0.0),
        [origin(skill=None), site("sz", ready=1)],
        "sz",
        {"sz": CHOSEN},
    ),
    (
        "the origin has a ready agent: locality wins",
        OVERFLOW,
        call(30.0),
        [origin(ready=1), site("sz", ready=5)],
        "",
        {"gz": ORIGIN, "sz": "not needed"},
    ),
    (
        "no ready agent elsewhere: stays",
        OVERFLOW,
        call(30.0),
        [origin(), site("sz", ready=0, logged_in=4, waiting=2, ewt=5.0)],
        "",
        {"sz": NO_AGENT},
    ),
    (
        "down, stale, excluded, no tie, no skill group: nowhere to go",
        OVERFLOW,
        call(30.0, frozenset({"dg"})),
        [
            origin(ties={"sz": 5, "fs": 5, "dg": 5, "zh": 0}),
            site("sz", ready=3, up=False),
            site("fs", ready=3, age=2.5),
            site("dg", ready=3),
            site("zh", ready=3),
            site("hz", ready=3, skill="billing"),
        ],
        "",
        {"sz": DOWN, "fs": STALE, "dg": EXCLUDED, "zh": NO_TIE_CHANNEL, "hz": NO_SKILL_GROUP},
    ),
    (
        "the only site with a free tie channel wins even with a longer wait",
        OVERFLOW,
        call(30.0),
        [origin(ties={"sz": 0, "fs": 1}), site("sz", ready=3, ewt=0.0), site("fs", ready=1, ewt=4.0)],
        "fs",
        {"sz": NO_TIE_CHANNEL, "fs": CHOSEN},
    ),
    (
        "equal expected waits: more ready agents, then more tie channels, then site id",
        OVERFLOW,
        call(30.0),
        [
            origin(ties={"sz": 2, "fs": 3, "dg": 3}),
            site("sz", ready=2),
            site("fs", ready=2),
            site("dg", ready=2),
        ],
        "dg",
        {"dg": CHOSEN, "fs": "lost to dg (ranked 2 of 3)", "sz": "lost to dg (ranked 3 of 3)"},
    ),
    (
        "state exactly at the staleness bound is still trusted",
        OVERFLOW,
        call(30.0),
        [origin(), site("sz", ready=1, age=2.0)],
        "sz",
        {"sz": CHOSEN},
    ),
    (
        "origin unknown to central: no tie figures, no move",
        OVERFLOW,
        call(30.0),
        [site("sz", ready=1)],
        "",
        {"sz": NO_TIE_CHANNEL},
    ),
    (
        "isolated: never moves, even with nobody logged in",
        ISOLATED,
        call(999.0),
        [origin(logged_in=0), site("sz", ready=9)],
        "",
        {"sz": "not needed"},
    ),
    # ---- pooled ----
    (
        "pooled: at once, to the site whose agent has been idle longest",
        POOLED,
        call(0.0),
        [origin(), site("sz", ready=1, idle=5.0, ewt=0.0), site("fs", ready=3, idle=9.0, ewt=2.0)],
        "fs",
        {"fs": CHOSEN, "sz": "lost to fs (ranked 2 of 2)"},
    ),
    (
        "pooled: equal idle time, lower expected wait",
        POOLED,
        call(0.0),
        [origin(), site("sz", ready=1, idle=5.0, ewt=1.0), site("fs", ready=1, idle=5.0, ewt=0.5)],
        "fs",
        {"fs": CHOSEN},
    ),
    (
        "pooled: origin first",
        POOLED,
        call(0.0),
        [origin(ready=1, idle=0.1), site("sz", ready=4, idle=60.0)],
        "",
        {"gz": ORIGIN},
    ),
    (
        "pooled: nobody ready anywhere, the call waits for a pull",
        POOLED,
        call(3.0),
        [origin(), site("sz", logged_in=2, waiting=1)],
        "",
        {"sz": NO_AGENT},
    ),
    (
        "pooled: a stale site with a ready agent is not trusted",
        POOLED,
        call(3.0),
        [origin(), site("sz", ready=2, idle=50.0, age=3.0), site("fs", ready=1, idle=1.0)],
        "fs",
        {"sz": STALE, "fs": CHOSEN},
    ),
]


@pytest.mark.parametrize(
    ("policy", "the_call", "snapshots", "target", "expected_notes"),
    [case[1:] for case in ROUTE_CASES],
    ids=[case[0] for case in ROUTE_CASES],
)
def test_route(
    policy: Policy,
    the_call: CallToRoute,
    snapshots: list[SiteSnapshot],
    target: str,
    expected_notes: dict[str, str],
) -> None:
    decision = route(the_call, snapshots, policy)
    assert decision.target == target, decision.reason
    assert decision.moves == bool(target)
    assert decision.mode == policy.mode
    assert decision.skill_group == G
    assert [c.site_id for c in decision.candidates] == [s.site_id for s in snapshots]
    got = notes(decision)
    for site_id, note in expected_notes.items():
        assert got[site_id] == note, (site_id, decision)
    assert decision.reason


def test_the_record_carries_the_figures() -> None:
    decision = route(
        call(15.0),
        [origin(ties={"sz": 7}), site("sz", ready=2, logged_in=5, waiting=0, ewt=1.5, age=0.3, boards=6)],
        OVERFLOW,
    )
    sz = decision.candidates[1]
    assert (sz.site_id, sz.up, sz.state_age_s, sz.ready_agents, sz.calls_waiting) == ("sz", True, 0.3, 2, 0)
    assert (sz.expected_wait_s, sz.free_tie_channels, sz.free_board_channels, sz.eligible) == (
        1.5,
        7,
        6,
        True,
    )
    assert "waited 15.0s >= 10.0s at gz" in decision.reason
    assert "sz has the lowest expected wait (1.5s" in decision.reason
    gz = decision.candidates[0]
    # Nobody ready at the origin, but three logged in: an expected wait, not "unstaffed" (-1).
    assert (gz.note, gz.eligible, gz.expected_wait_s) == (ORIGIN, False, 0.0)


def test_unstaffed_sites_report_minus_one() -> None:
    decision = route(call(0.0), [origin(logged_in=0), site("sz", ready=1)], OVERFLOW)
    assert decision.candidates[0].expected_wait_s == -1.0
    assert "nobody logged in for general at gz" in decision.reason


# ---- pulls ----------------------------------------------------------------------------------


def test_pulls_only_in_pooled_mode() -> None:
    snaps = [origin(waiting=2, oldest=5.0), site("sz", ready=1, ties={"gz": 5})]
    assert pull_candidates(snaps, OVERFLOW) == []
    assert pull_candidates(snaps, ISOLATED) == []
    pulls = pull_candidates(snaps, POOLED)
    assert [(p.origin, p.skill_group, p.target) for p in pulls] == [("gz", G, "sz")]
    d = pulls[0].decision
    assert (d.origin, d.target, d.mode) == ("gz", "sz", "pooled")
    assert "waited 5.0s" in d.reason


def test_pulls_serve_the_oldest_call_in_the_province_first() -> None:
    snaps = [
        origin(waiting=1, oldest=3.0),
        site("fs", logged_in=2, waiting=1, oldest=8.0, ties={"sz": 1}),
        site("sz", ready=1, idle=4.0),
    ]
    pulls = pull_candidates(snaps, POOLED)
    # One free agent at sz: fs's call has waited longer.
    assert [(p.origin, p.target) for p in pulls] == [("fs", "sz")]


def test_pulls_are_bounded_by_agents_ties_calls_and_max() -> None:
    many = [
        origin(waiting=5, oldest=9.0, ties={"sz": 2, "fs": 10}),
        site("sz", ready=3, idle=7.0),
        site("fs", ready=2, idle=1.0),
    ]
    pulls = pull_candidates(many, POOLED)
    # sz first (idle longest) while gz->sz tie channels last (2), then fs (2 agents); 4 < 5 calls.
    assert [p.target for p in pulls] == ["sz", "sz", "fs", "fs"]
    assert len(pull_candidates(many, POOLED, max_pulls=3)) == 3
    few_calls = [replace(many[0], skills={G: replace(many[0].skills[G], calls_waiting=1)}), *many[1:]]
    assert [p.target for p in pull_candidates(few_calls, POOLED)] == ["sz"]


@pytest.mark.parametrize(
    "target",
    [
        site("sz", ready=1, up=False),
        site("sz", ready=1, age=5.0),
        site("sz", ready=1, waiting=1),  # its own calls take its agent
        site("sz", ready=1, skill="billing"),
    ],
)
def test_no_pull_to_an_untrusted_or_busy_site(target: SiteSnapshot) -> None:
    assert pull_candidates([origin(waiting=1, oldest=2.0), target], POOLED) == []


def test_no_pull_without_a_tie_channel_or_from_a_stale_origin() -> None:
    assert pull_candidates([origin(waiting=1, ties={"sz": 0}), site("sz", ready=1)], POOLED) == []
    assert pull_candidates([origin(waiting=1, age=9.0), site("sz", ready=1)], POOLED) == []
    # An origin with its own ready agent serves its calls itself.
    assert pull_candidates([origin(waiting=1, ready=1), site("sz", ready=1)], POOLED) == []


# ---- pre-routing ----------------------------------------------------------------------------

PRE_ROUTE_CASES: list[tuple[str, list[SiteSnapshot], str, dict[str, str]]] = [
    ("home up with trunks", [site("gz"), site("sz", ewt=0.0)], "gz", {"gz": CHOSEN, "sz": "not needed"}),
    (
        "home down: lowest expected wait",
        [site("gz", up=False), site("sz", ewt=4.0, ready=1), site("fs", ewt=2.0, ready=1)],
        "fs",
        {"gz": DOWN, "fs": CHOSEN, "sz": "lost to fs (ranked 2 of 2)"},
    ),
    (
        "home full: equal waits, most free trunks",
        [site("gz", trunks=0), site("sz", trunks=3, ready=1), site("fs", trunks=8, ready=1)],
        "fs",
        {"gz": NO_TRUNK_CHANNEL, "fs": CHOSEN},
    ),
    (
        "home stale: not trusted",
        [site("gz", age=9.0), site("sz", ready=1)],
        "sz",
        {"gz": STALE, "sz": CHOSEN},
    ),
    (
        "a site with nobody logged in ranks last",
        [site("gz", up=False), site("sz", logged_in=0, trunks=50), site("fs", ready=1, ewt=30.0)],
        "fs",
        {"fs": CHOSEN},
    ),
    (
        "everything down or full: busy",
        [site("gz", up=False), site("sz", trunks=0), site("fs", age=3.0)],
        "",
        {"gz": DOWN, "sz": NO_TRUNK_CHANNEL, "fs": STALE},
    ),
    ("home unknown and nothing else: busy", [], "", {}),
]


@pytest.mark.parametrize(
    ("snapshots", "target", "expected_notes"),
    [case[1:] for case in PRE_ROUTE_CASES],
    ids=[case[0] for case in PRE_ROUTE_CASES],
)
def test_pre_route(snapshots: list[SiteSnapshot], target: str, expected_notes: dict[str, str]) -> None:
    decision = pre_route("gz", snapshots, OVERFLOW)
    assert decision.target == target, decision.reason
    assert (decision.mode, decision.origin) == ("pre-route", "gz")
    got = notes(decision)
    for site_id, note in expected_notes.items():
        assert got[site_id] == note, (site_id, decision)
    if not target:
        assert decision.reason.startswith("busy")


# ---- properties -----------------------------------------------------------------------------

SITE_IDS = ["gz", "sz", "fs", "dg"]


@st.composite
def provinces(draw: st.DrawFn) -> list[SiteSnapshot]:
    sites = []
    for site_id in SITE_IDS:
        logged_in = draw(st.integers(0, 4))
        sites.append(
            SiteSnapshot(
                site_id=site_id,
                up=draw(st.booleans()),
                state_age_s=draw(st.sampled_from([0.0, 0.5, 2.0, 2.01, 10.0])),
                skills=(
                    {
                        G: SkillState(
                            ready_agents=draw(st.integers(0, logged_in)),
                            logged_in=logged_in,
                            calls_waiting=draw(st.integers(0, 5)),
                            oldest_wait_s=draw(st.floats(0, 100)),
                            longest_idle_s=draw(st.floats(0, 100)),
                            expected_wait_s=draw(st.floats(0, 100)),
                        )
                    }
                    if draw(st.booleans()) or site_id == "gz"
                    else {}
                ),
                free_tie={p: draw(st.integers(0, 2)) for p in SITE_IDS if p != site_id},
                free_trunk=draw(st.integers(0, 3)),
                free_board=draw(st.integers(0, 3)),
            )
        )
    return sites


calls = st.builds(
    CallToRoute,
    origin=st.just("gz"),
    skill_group=st.just(G),
    waited_s=st.floats(0, 60),
    priority=st.integers(0, 9),
    excluded=st.frozensets(st.sampled_from(SITE_IDS)),
)
modes: st.SearchStrategy[Mode] = st.sampled_from(["isolated", "overflow", "pooled"])


@settings(max_examples=300)
@given(provinces(), calls, modes)
def test_route_properties(snapshots: list[SiteSnapshot], the_call: CallToRoute, mode: Mode) -> None:
    policy = Policy(mode=mode, overflow_after_s=10.0, max_state_age_s=2.0)
    decision = route(the_call, snapshots, policy)
    assert decision == route(the_call, list(snapshots), policy), "deterministic"
    by_id = {s.site_id: s for s in snapshots}
    gz = by_id["gz"]
    if mode == "isolated":
        assert not decision.moves
    if decision.moves:
        t = by_id[decision.target]
        assert t.up
        assert t.state_age_s <= policy.max_state_age_s
        assert decision.target not in the_call.excluded
        assert gz.free_tie.get(decision.target, 0) > 0
        assert t.skills[G].ready_agents > 0
        assert gz.skills[G].ready_agents == 0, "locality: the origin's own ready agent comes first"
    if mode == "pooled" and gz.skills[G].ready_agents == 0:
        reachable = [
            s
            for s in snapshots
            if s.site_id != "gz"
            and s.up
            and s.state_age_s <= 2.0
            and s.site_id not in the_call.excluded
            and gz.free_tie.get(s.site_id, 0) > 0
            and G in s.skills
            and s.skills[G].ready_agents > 0
        ]
        assert decision.moves == bool(reachable)


@settings(max_examples=300)
@given(provinces(), modes)
def test_pull_properties(snapshots: list[SiteSnapshot], mode: Mode) -> None:
    policy = Policy(mode=mode, overflow_after_s=10.0, max_state_age_s=2.0)
    pulls = pull_candidates(snapshots, policy)
    assert pulls == pull_candidates(list(snapshots), policy)
    if mode != "pooled":
        assert pulls == []
    by_id = {s.site_id: s for s in snapshots}
    per_target: dict[str, int] = {}
    per_origin: dict[str, int] = {}
    for p in pulls:
        o, t = by_id[p.origin], by_id[p.target]
        assert o.site_id != t.site_id
        for s in (o, t):
            assert s.up and s.state_age_s <= 2.0
        per_target[t.site_id] = per_target.get(t.site_id, 0) + 1
        per_origin[o.site_id] = per_origin.get(o.site_id, 0) + 1
        assert per_target[t.site_id] <= t.skills[G].ready_agents
        assert per_origin[o.site_id] <= o.skills[G].calls_waiting
    # Oldest first: the waits of successive first pulls per origin never increase.
    firsts: list[float] = []
    for p in pulls:
        if p.oldest_wait_s not in firsts:
            firsts.append(p.oldest_wait_s)
    assert firsts == sorted(firsts, reverse=True)


@settings(max_examples=300)
@given(provinces(), st.sampled_from(SITE_IDS))
def test_pre_route_properties(snapshots: list[SiteSnapshot], home: str) -> None:
    decision = pre_route(home, snapshots, OVERFLOW)
    assert decision == pre_route(home, list(snapshots), OVERFLOW)
    h = next(s for s in snapshots if s.site_id == home)
    home_ok = h.up and h.state_age_s <= 2.0 and h.free_trunk > 0
    if home_ok:
        assert decision.target == home
    elif decision.target:
        t = next(s for s in snapshots if s.site_id == decision.target)
        assert t.up and t.state_age_s <= 2.0 and t.free_trunk > 0
    else:
        assert not any(s.up and s.state_age_s <= 2.0 and s.free_trunk > 0 for s in snapshots)
