"""The model engine: a scenario run through the real site code in virtual time.

`vcc simulate --engine model` (and `vcc bench pooling`) use it. Each city is one
`site_node.callcontrol.Switchboard`, built from a generated province config exactly as a site
node builds it; callers and robot agents are events on a virtual clock instead of processes:

- callers arrive per site as a seeded Poisson stream, answer the IVR prompt at once with a digit
  drawn by the site's agents per skill group, and hang up when their patience (counted from
  dialling, as tools/traffic does) runs out before an agent answered;
- robot agents log in and go ready at time 0, answer `ring_delay_s` after the offer, talk for a
  drawn handle time (exponential or constant) and hang up; wrap-up is the site's own timer; after
  a ring-no-answer they go ready again (as tools/robots does);
- the switchboards' own deadlines (`next_deadline()` / `tick(now)`) run on the same clock;
- effects are carried out in memory: ToCaller feeds the caller's view, ToAgent "offered" schedules
  the robot's answer, FetchCustomer is answered at once with "no record".
- with an IVR flow (`ModelPlan.flow`), every caller runs it: each prompt takes its text's length
  at `speech_chars_per_s`, the caller presses `flow_keys` (one group per key request) once the
  prompts before it are heard and stays silent after, look-ups are answered after
  `lookup_delay_s` with nothing on record; the report's `ivr` says how long callers spent in the
  flow. Without a flow nothing of this runs, and a seed gives the same run as before.

The result is the report of tools/report.build_report, built from CallerViews the same way the
real cluster's report is, so the two can be compared line by line. Virtual time has no transport
jitter: a call that rings an agent at the instant it is queued did not wait.

Nothing here sleeps, spawns or opens a socket; a run is a plain function call.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import math
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from routing import global_router
from site_node.callcontrol import RemoteOfferIn, Switchboard
from site_node.callcontrol.domain import (
    AskRoute,
    CallState,
    DialOut,
    Effect,
    FetchCustomer,
    IvrLookup,
    Journal,
    LegToOrigin,
    LegToTarget,
    OfferRemote,
    ToAgent,
    ToCaller,
)
from tools.province.generate import SiteSpec, generate_province
from tools.simulation.report import build_report
from tools.simulation.traffic import CallerView
from vcc.config import ProvinceConfig, parse_province
from vcc.ivr.flow import Flow

Distribution = Literal["exponential", "constant"]
RoutingMode = Literal["isolated", "overflow", "pooled"]

# Any syntactically valid argon2 PHC string: the model engine never checks a password.
_UNUSED_PASSWORD_HASH = "$argon2id$v=19$m=19456,t=2,p=1$bW9kZWxlbmdpbmU$bW9kZWxlbmdpbmVtb2RlbGVuZ2luZQ"
# Modes whose cross-site machinery the engine drives (see _check_supported).
SUPPORTED_MODES: frozenset[str] = frozenset({"isolated", "overflow", "pooled"})
# Shared, never mutated: progress entries whose details the report does not read.
_NO_DETAILS: dict[str, str] = {}


class ModelError(Exception):
    """The scenario asks for something the model engine cannot run (the message says what)."""


@dataclass(frozen=True)
class ModelSite:
    id: str
    trunk_channels: int
    agents: Mapping[str, int]
    arrival_rate_per_s: float


@dataclass(frozen=True)
class ModelPlan:
    """What the model engine runs: the scenario's keys that matter in virtual time."""

    sites: Sequence[ModelSite]
    duration_s: float
    warmup_s: float = 0.0
    seed: int = 0
    handle_mean_s: float = 2.0
    handle_distribution: Distribution = "exponential"
    patience_mean_s: float | None = None  # None: callers never hang up
    patience_distribution: Distribution = "exponential"
    service_level_threshold_s: float = 0.4
    ring_delay_s: float = 0.0
    wrap_up_s: float = 0.0
    routing_mode: RoutingMode = "isolated"
    overflow_after_s: float = 1.0
    ring_timeout_s: float = 5.0
    # After the last arrival, callers still waiting this long (virtual seconds) hang up ("drain").
    drain_s: float | None = None
    # An IVR flow every caller runs (None: the sites' one menu, answered at once).
    flow: Flow | None = None
    flow_keys: Sequence[str] = ()
    speech_chars_per_s: float = 4.0
    lookup_delay_s: float = 0.2


@dataclass
class ModelStats:
    """How the run went, for profiling and the bench (not part of the SPEC report)."""

    calls: int = 0
    effects: int = 0
    events: int = 0
    virtual_s: float = 0.0
    wall_s: float = 0.0
    drained: int = 0


# Event kinds on the engine's own heap (the switchboards keep their own deadlines).
_ARRIVAL, _PATIENCE, _ANSWER, _HANG_UP, _READY, _DRAIN, _PLAYED, _KEYS, _LOOKED_UP = range(9)


@dataclass(frozen=True)
class _OneFlow:
    """Every call to the service number runs the plan's flow (site_node.callcontrol FlowBook)."""

    flow: Flow
    number: str

    def for_number(self, number: str) -> tuple[str, Flow] | None:
        return ("model", self.flow) if number == self.number else None

    def named(self, flow_id: str) -> Flow | None:
        return self.flow if flow_id == self.flow.id else None


@dataclass
class _InFlow:
    """A caller in the flow: when the prompts said so far end, and the key groups pressed."""

    speaking_until: float = 0.0
    pressed: int = 0


@dataclass
class _Site:
    index: int
    id: str
    board: Switchboard
    rate_per_s: float
    arrivals: random.Random
    digits: list[str]
    digit_weights: list[float]
    service_number: str
    minted: list[str] = field(default_factory=lambda: [""])
    # Skill group -> agents logged in (robots log in at 0 and stay).
    logged_in: dict[str, int] = field(default_factory=dict)


class _Engine:
    def __init__(self, plan: ModelPlan, province: ProvinceConfig) -> None:
        self.plan = plan
        self.heap: list[tuple[float, int, int, int, str, str]] = []
        self.seq = itertools.count()
        self.live: dict[str, CallerView] = {}
        self.views: list[CallerView] = []
        self.stats = ModelStats()
        self.end_of_arrivals = plan.warmup_s + plan.duration_s
        self.handle_rng = random.Random(f"{plan.seed}/handle")
        self.patience_rng = random.Random(f"{plan.seed}/patience")
        self.digit_rng = random.Random(f"{plan.seed}/digits")
        self.policy = global_router.Policy(
            plan.routing_mode, plan.overflow_after_s, province.routing.max_state_age_s
        )
        self.decisions = 0
        # offer id -> (origin, target) of every remote leg opened.
        self.legs: dict[str, tuple[_Site, _Site]] = {}
        self.sites: list[_Site] = []
        self.in_flow: dict[str, _InFlow] = {}
        self.flow_keys = [k for k in plan.flow_keys if k]
        for index, spec in enumerate(plan.sites):
            site_cfg = province.site(spec.id)
            minted = [""]
            board = Switchboard(
                site_cfg,
                province.province.service_number,
                new_call_id=_reader(minted),
                routing=province.routing,
                journal=False,  # nothing here reads the journal: skip building it
                flows=None if plan.flow is None else _OneFlow(plan.flow, province.province.service_number),
            )
            digit_of = {c.skill_group: c.digit for c in site_cfg.ivr.choices}
            digits = [digit_of[g] for g, n in spec.agents.items() if n > 0 and g in digit_of]
            weights = [float(n) for g, n in spec.agents.items() if n > 0 and g in digit_of]
            self.sites.append(
                _Site(
                    index,
                    spec.id,
                    board,
                    spec.arrival_rate_per_s,
                    random.Random(f"{plan.seed}/arrivals/{spec.id}"),
                    digits or [site_cfg.ivr.choices[0].digit],
                    weights or [1.0],
                    province.province.service_number,
                    minted,
                    {g: n for g, n in spec.agents.items() if n > 0},
                )
            )
        self.by_id = {site.id: site for site in self.sites}

    # -- scheduling ----------------------------------------------------------------------------

    def push(self, at: float, kind: int, site: int, a: str = "", b: str = "") -> None:
        heapq.heappush(self.heap, (at, next(self.seq), kind, site, a, b))

    def draw(self, rng: random.Random, mean: float, distribution: Distribution) -> float:
        if distribution == "constant" or mean <= 0:
            return max(0.0, mean)
        return rng.expovariate(1.0 / mean)

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> None:
        for site in self.sites:
            self.apply_all(0.0, site, [])
            for code in site.board.agents:
                self.apply_all(0.0, site, site.board.login(0.0, code))
                self.apply_all(0.0, site, site.board.set_ready(0.0, code, True))
            if site.rate_per_s > 0:
                self.push(site.arrivals.expovariate(site.rate_per_s), _ARRIVAL, site.index)
        drain_s = self.plan.drain_s
        if drain_s is None:
            drain_s = max(
                60.0, 50.0 * (self.plan.handle_mean_s + self.plan.ring_delay_s + self.plan.wrap_up_s)
            )
        self.push(self.end_of_arrivals + drain_s, _DRAIN, -1)
        heap = self.heap
        sites = self.sites
        pooled = self.plan.routing_mode == "pooled"
        now = 0.0
        while True:
            if pooled:
                self.pull(now)
            due_site: _Site | None = None
            due = heap[0][0] if heap else math.inf
            for site in sites:
                deadline = site.board.next_deadline()
                if deadline is not None and deadline < due:
                    due, due_site = deadline, site
            if due == math.inf:
                break
            now = due
            if due_site is not None:
                self.apply_all(now, due_site, due_site.board.tick(now))
                continue
            _, _, kind, index, a, b = heapq.heappop(heap)
            self.stats.events += 1
            if kind == _DRAIN:
                self.drain(now)
                if not self.live:
                    break
                continue
            site = sites[index]
            if kind == _ARRIVAL:
                self.arrive(now, site)
            elif kind == _ANSWER:
                call = site.board.calls.get(b)
                if call is not None and call.state == CallState.RINGING and call.agent_code == a:
                    self.apply_all(now, site, site.board.answer(now, a, b))
            elif kind == _HANG_UP:
                call = site.board.calls.get(b)
                if call is not None and call.agent_code == a and call.state in _CONNECTED:
                    self.apply_all(now, site, site.board.agent_hang_up(now, a, b))
            elif kind == _PATIENCE:
                view = self.live.get(a)
                if view is not None and view.answered_at is None:
                    self.apply_all(now, site, site.board.caller_hang_up(now, a))
            elif kind == _PLAYED:
                self.apply_all(now, site, site.board.prompts_played(now, a))
            elif kind == _KEYS:
                call = site.board.calls.get(a)
                if call is not None and call.state == CallState.IVR:
                    self.apply_all(now, site, site.board.caller_digits(now, a, b))
            elif kind == _LOOKED_UP:
                self.apply_all(now, site, site.board.ivr_looked_up(now, a, int(b), {}))
            elif kind == _READY:
                agent = site.board.agents[a]
                if agent.state == "NOT_READY" and agent.reason == "no-answer":
                    self.apply_all(now, site, site.board.set_ready(now, a, True))
        self.stats.virtual_s = now

    def arrive(self, now: float, site: _Site) -> None:
        nxt = now + site.arrivals.expovariate(site.rate_per_s)
        if nxt < self.end_of_arrivals:
            self.push(nxt, _ARRIVAL, site.index)
        n = self.stats.calls
        self.stats.calls = n + 1
        call_id = f"{site.id}-{n}"
        site.minted[0] = call_id
        view = CallerView(
            key=f"k{n}",
            entry_site_id=site.id,
            call_id=call_id,
            offered_at=now,
            progress=[],
            outcome="lost",
            queued_at=None,
            answered_at=None,
            ended_at=None,
            agent_code="",
            served_site_id="",
            skill_group="",
            ani=f"1380000{n % 10_000:04d}",
        )
        self.views.append(view)
        self.live[call_id] = view
        if self.plan.patience_mean_s is not None:
            patience = self.draw(
                self.patience_rng, self.plan.patience_mean_s, self.plan.patience_distribution
            )
            self.push(now + patience, _PATIENCE, site.index, call_id)
        _, effects = site.board.offer(now, idempotency_key=view.key, ani=view.ani, dnis=site.service_number)
        self.apply_all(now, site, effects)

    def drain(self, now: float) -> None:
        """The end of the run: whoever still waits hangs up, as the traffic generator's drain does."""
        for call_id, view in list(self.live.items()):
            if view.answered_at is None:
                site = self.sites[next(s.index for s in self.sites if s.id == view.entry_site_id)]
                if call_id in site.board.calls:
                    self.stats.drained += 1
                    self.apply_all(now, site, site.board.caller_hang_up(now, call_id, "drain"))

    # -- effects -------------------------------------------------------------------------------

    def apply_all(self, now: float, site: _Site, effects: list[Effect]) -> None:
        """Carry out effects; what they trigger at once (screen pop, digits, routing answers, the
        other end of a remote leg) runs after them, in order, as a real site's adapters see it."""
        follow_ups: deque[tuple[int, _Site, Any]] = deque()
        batch = effects
        while True:
            self.stats.effects += len(batch)
            for effect in batch:
                kind = type(effect)
                if kind is Journal:
                    continue
                if kind is ToCaller:
                    self.to_caller(now, site, effect, follow_ups)  # type: ignore[arg-type]
                elif kind is ToAgent:
                    self.to_agent(now, site, effect)  # type: ignore[arg-type]
                elif kind is FetchCustomer:
                    follow_ups.append((_SCREEN_POP, site, effect.call_id))  # type: ignore[union-attr]
                elif kind is DialOut:
                    continue  # callbacks are not dialled in the model (the dial times out unanswered)
                elif kind is IvrLookup:
                    ask: IvrLookup = effect  # type: ignore[assignment]
                    self.push(
                        now + self.plan.lookup_delay_s, _LOOKED_UP, site.index, ask.call_id, str(ask.request)
                    )
                elif kind in _CROSS_SITE:
                    follow_ups.append((_CROSS_SITE[kind], site, effect))
                else:
                    raise ModelError(f"the model engine cannot carry out {kind.__name__}")
            if not follow_ups:
                return
            action, site, arg = follow_ups.popleft()
            board = site.board
            if action == _SCREEN_POP:
                batch = board.customer_found(now, arg, None)
            elif action == _DIGITS:
                call_id, digit = arg
                batch = board.caller_digits(now, call_id, digit)
            elif action == _BATCH:
                batch = arg
            else:
                site, batch = self.cross_site(now, action, site, arg, follow_ups)

    # -- cross-site: central's router and the site-to-site protocol, with no delay ---------------

    def cross_site(
        self, now: float, action: int, site: _Site, effect: Any, follow_ups: deque[tuple[int, _Site, Any]]
    ) -> tuple[_Site, list[Effect]]:
        """(the site whose effects these are, the effects) of one cross-site effect."""
        if action == _ROUTE:
            ask: AskRoute = effect
            decision = global_router.route(
                global_router.CallToRoute(
                    site.id, ask.skill_group, ask.waited_s, ask.priority, frozenset(ask.exclude)
                ),
                self.snapshots(now),
                self.policy,
            )
            self.decisions += 1
            target = decision.target if decision.moves else None
            return site, site.board.route_decided(now, ask.call_id, target, f"d{self.decisions}")
        if action == _OFFER:
            offer: OfferRemote = effect
            target_site = self.by_id[offer.target_site_id]
            self.legs[offer.offer_id] = (site, target_site)
            code, reason, target_fx = target_site.board.serve_remote(
                now,
                RemoteOfferIn(
                    offer.offer_id,
                    offer.call_id,
                    site.id,
                    offer.skill_group,
                    offer.priority,
                    offer.arrived_at,
                    offer.ani,
                    offer.dnis,
                    offer.attached,
                    offer.customer,
                    offer.agent_code,
                    offer.purpose,
                ),
            )
            if code is None:
                return site, site.board.remote_refused(now, offer.offer_id, reason)
            follow_ups.append((_BATCH, target_site, target_fx))
            return site, site.board.remote_reserved(now, offer.offer_id, code)
        if action == _TO_TARGET:
            to_target: LegToTarget = effect
            target_site = self.legs[to_target.offer_id][1]
            if to_target.kind == "confirm":
                return target_site, target_site.board.remote_answer_confirmed(now, to_target.offer_id)
            return target_site, target_site.board.remote_caller_gone(
                now, to_target.offer_id, to_target.reason
            )
        to_origin: LegToOrigin = effect
        origin = self.legs[to_origin.offer_id][0]
        board, offer_id = origin.board, to_origin.offer_id
        if to_origin.kind == "answer_asked":
            return origin, board.remote_answer_asked(now, offer_id)
        if to_origin.kind == "hung_up":
            return origin, board.remote_hung_up(now, offer_id)
        if to_origin.kind in ("held", "retrieved"):
            return origin, board.remote_held(now, offer_id, to_origin.kind == "held")
        return origin, board.remote_returned(now, offer_id, to_origin.reason)

    def snapshots(self, now: float) -> list[global_router.SiteSnapshot]:
        """Every site's live state as central would see it with no staleness (the model's ideal)."""
        out = []
        for site in self.sites:
            board = site.board
            acd = board.acd
            skills = {}
            for group in acd.skill_groups:
                waiting = acd.waiting(group)
                idle_since = acd.longest_idle_since(group)
                oldest = acd.oldest_arrival(group) if waiting else None
                skills[group] = global_router.SkillState(
                    ready_agents=acd.ready_count(group),
                    logged_in=site.logged_in.get(group, 0),
                    calls_waiting=waiting,
                    oldest_wait_s=0.0 if oldest is None else now - oldest,
                    longest_idle_s=0.0 if idle_since is None else now - idle_since,
                    expected_wait_s=board.expected_wait(group, waiting + 1),
                )
            out.append(
                global_router.SiteSnapshot(
                    site.id,
                    up=True,
                    state_age_s=0.0,
                    skills=skills,
                    free_tie={peer: pool.free for peer, pool in board.ties.items()},
                    free_trunk=sum(pool.free for pool in board.trunks.values()),
                    free_board=sum(pool.free for pool in board.boards.values()),
                )
            )
        return out

    def pull(self, now: float) -> None:
        """Pooled mode: an agent free in one city takes the oldest eligible call of the province."""
        sites = self.sites
        waiting = [s for s in sites if s.board.acd.total_waiting]
        if not waiting:
            return
        ready = [s for s in sites if any(s.board.acd.ready_count(g) for g in s.board.acd.skill_groups)]
        if not ready or (len(ready) == 1 and ready[0] is waiting[0] and len(waiting) == 1):
            return
        for _ in range(len(sites) * 4):  # bounded: each round moves calls or stops
            pulls = global_router.pull_candidates(self.snapshots(now), self.policy)
            if not pulls:
                return
            moved = False
            for p in pulls:
                self.decisions += 1
                origin = self.by_id[p.origin]
                effects = origin.board.pull_call(now, p.skill_group, p.target, f"d{self.decisions}")
                moved = moved or bool(effects)
                self.apply_all(now, origin, effects)
            if not moved:
                return

    def to_caller(
        self, now: float, site: _Site, e: ToCaller, follow_ups: deque[tuple[int, _Site, Any]]
    ) -> None:
        view = self.live.get(e.call_id)
        if view is None:
            return
        kind = e.kind
        if kind == "prompt" and self.plan.flow is not None:
            self.flow_prompt(now, site, e)
        elif kind == "prompt":
            follow_ups.append((_DIGITS, site, (e.call_id, self.choose_digit(site, e.choices))))
        elif kind == "queued":
            view.skill_group = e.skill_group
            if view.queued_at is None:
                view.queued_at = now
            view.progress.append(("queued", now, _NO_DETAILS))
        elif kind == "ringing":
            view.progress.append(("ringing", now, {"site_id": e.site_id, "agent_code": e.agent_code}))
        elif kind == "connected":
            view.answered_at = now
            view.served_site_id = e.site_id
            view.agent_code = e.agent_code
            view.progress.append(("connected", now, _NO_DETAILS))
        elif kind == "ended":
            if self.plan.flow is not None:
                self.in_flow.pop(e.call_id, None)
            view.outcome = e.outcome.value.lower() if e.outcome is not None else "failed"
            view.reason = e.reason
            view.ended_at = now
            view.progress.append(("ended", now, _NO_DETAILS))
            del self.live[e.call_id]

    def flow_prompt(self, now: float, site: _Site, e: ToCaller) -> None:
        """A flow's prompt takes its time to say; a key request is answered once all is heard."""
        caller = self.in_flow.setdefault(e.call_id, _InFlow(now))
        if e.text:
            caller.speaking_until = (
                max(now, caller.speaking_until) + len(e.text) / self.plan.speech_chars_per_s
            )
        if e.collect:
            self.push(caller.speaking_until, _PLAYED, site.index, e.call_id)
            if caller.pressed < len(self.flow_keys):
                keys = self.flow_keys[caller.pressed]
                caller.pressed += 1
                self.push(caller.speaking_until, _KEYS, site.index, e.call_id, keys)

    def choose_digit(self, site: _Site, choices: Sequence[str]) -> str:
        if len(site.digits) == 1:
            return site.digits[0]
        return self.digit_rng.choices(site.digits, weights=site.digit_weights)[0]

    def to_agent(self, now: float, site: _Site, e: ToAgent) -> None:
        kind = e.kind
        if kind == "offered":
            self.push(now + self.plan.ring_delay_s, _ANSWER, site.index, e.agent_code, e.call_id)
        elif kind == "connected":
            handle = self.draw(self.handle_rng, self.plan.handle_mean_s, self.plan.handle_distribution)
            self.push(now + handle, _HANG_UP, site.index, e.agent_code, e.call_id)
        elif kind == "withdrawn" and e.reason == "no-answer":
            self.push(now, _READY, site.index, e.agent_code)


# What an effect triggers at once (follow-ups of apply_all).
_SCREEN_POP, _DIGITS, _BATCH, _ROUTE, _OFFER, _TO_TARGET, _TO_ORIGIN = range(7)
_CROSS_SITE: dict[type, int] = {
    AskRoute: _ROUTE,
    OfferRemote: _OFFER,
    LegToTarget: _TO_TARGET,
    LegToOrigin: _TO_ORIGIN,
}
_CONNECTED = frozenset({CallState.TALKING, CallState.HELD})


def _reader(cell: list[str]) -> Callable[[], str]:
    """The switchboard's call id minter: the engine names each call before offering it."""
    return lambda: cell[0]


# -- public API ------------------------------------------------------------------------------------


def province_for(plan: ModelPlan) -> ProvinceConfig:
    """The province config a real cluster would run this plan on (addresses are placeholders)."""
    specs = [
        SiteSpec(
            id=s.id,
            name=s.id,
            trunk_channels=s.trunk_channels,
            agents=dict(s.agents) or {"general": 0},
            listen=f"127.0.0.1:{20000 + i}",
        )
        for i, s in enumerate(plan.sites)
    ]
    raw = generate_province(
        specs,
        etcd_endpoint="127.0.0.1:2379",
        central_listen="127.0.0.1:19999",
        database_url="sqlite+aiosqlite:///unused.db",
        password_hash=_UNUSED_PASSWORD_HASH,
        ring_timeout_s=plan.ring_timeout_s,
        wrap_up_s=plan.wrap_up_s,
        outbox_dir="/nonexistent",
    )
    raw["routing"] = {"mode": plan.routing_mode, "overflow_after_s": plan.overflow_after_s}
    return parse_province(raw, "<model engine province>")


def _check_supported(plan: ModelPlan) -> None:
    if plan.routing_mode not in SUPPORTED_MODES:
        raise ModelError(
            f"routing.mode: {plan.routing_mode!r} is not supported by the model engine yet "
            f"(it supports {', '.join(sorted(SUPPORTED_MODES))})"
        )
    if not plan.sites:
        raise ModelError("sites: at least one site")
    if plan.duration_s <= 0:
        raise ModelError("duration_s: must be above 0")


def run_views(plan: ModelPlan) -> tuple[list[CallerView], ModelStats]:
    """Run a plan in virtual time; (what every caller saw, in arrival order; run statistics)."""
    _check_supported(plan)
    engine = _Engine(plan, province_for(plan))
    started = time.perf_counter()
    was_enabled = gc.isenabled()
    gc.disable()  # see run_plan
    try:
        engine.run()
    finally:
        if was_enabled:
            gc.enable()
    engine.stats.wall_s = time.perf_counter() - started
    return engine.views, engine.stats


def batch_means(plan: ModelPlan, batches: int) -> list[tuple[float, float, int]]:
    """(p_wait, ASA seconds, calls) of consecutive equal batches of the measured calls (offered
    after the warm-up), with tools/report's definitions: the method of batch means, for a
    confidence interval from one long run. Top-level and picklable: tests run it in workers."""
    from tools.simulation.report import wait_s, waited

    views, _ = run_views(plan)
    measured = [v for v in views if plan.warmup_s <= v.offered_at < plan.warmup_s + plan.duration_s]
    size = len(measured) // batches
    out = []
    for b in range(batches):
        chunk = measured[b * size : (b + 1) * size]
        served = [v for v in chunk if v.outcome in ("answered", "abandoned")]
        waits = [w for w in map(wait_s, chunk) if w is not None]
        p_wait = sum(map(waited, served)) / len(served) if served else 0.0
        out.append((p_wait, sum(waits) / len(waits) if waits else 0.0, len(chunk)))
    return out


def run_plan(plan: ModelPlan) -> tuple[dict[str, object], ModelStats]:
    """Run a plan in virtual time; (the SPEC §6 report, run statistics)."""
    _check_supported(plan)
    province = province_for(plan)
    engine = _Engine(plan, province)
    started = time.perf_counter()
    # Millions of small objects and no reference cycles worth collecting: the cyclic collector
    # would only rescan them over and over.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        engine.run()
        report = build_report(
            engine.views,
            service_level_threshold_s=plan.service_level_threshold_s,
            warmup_s=plan.warmup_s,
            traffic_start=0.0,
            duration_s=plan.duration_s,
            agents_per_site={s.id: sum(s.agents.values()) for s in plan.sites},
            mean_handle_s=plan.handle_mean_s + plan.ring_delay_s + plan.wrap_up_s,
            central_records=None,
        )
    finally:
        if was_enabled:
            gc.enable()
    engine.stats.wall_s = time.perf_counter() - started
    if plan.flow is not None:
        report["ivr"] = ivr_time(engine.views)
    report["engine"] = {
        "kind": "model",
        "calls": engine.stats.calls,
        "drained": engine.stats.drained,
        "virtual_s": engine.stats.virtual_s,
        "wall_s": engine.stats.wall_s,
    }
    return report, engine.stats


def ivr_time(views: Sequence[CallerView]) -> dict[str, object]:
    """How long callers spent in the flow: to the queue, or to the end of a call the IVR ended."""
    spent = []
    ended_in_ivr = 0
    for v in views:
        left = v.queued_at if v.queued_at is not None else v.ended_at
        if left is None or v.outcome == "blocked":
            continue  # a blocked call never reached the IVR
        if v.queued_at is None:
            ended_in_ivr += 1
        spent.append(left - v.offered_at)
    spent.sort()
    return {
        "calls": len(spent),
        "ended_in_ivr": ended_in_ivr,
        "mean_s": round(sum(spent) / len(spent), 3) if spent else 0.0,
        "p90_s": round(spent[int(0.9 * (len(spent) - 1))], 3) if spent else 0.0,
    }


def plan_from_scenario(scenario: Any) -> ModelPlan:
    """The model plan of a validated scenario (tools/simulation/scenario.py): same keys, same meaning.

    Keys the model cannot honour (fault events, transfers) are a clear error, never ignored.
    """
    events = list(getattr(scenario, "events", None) or [])
    if events:
        actions = sorted({str(getattr(e, "action", e)) for e in events})
        raise ModelError(
            f"events: fault events ({', '.join(actions)}) need the real cluster, not --engine model"
        )
    transfers = getattr(scenario, "transfers", None)
    if transfers is not None and float(getattr(transfers, "probability", 0.0) or 0.0) > 0:
        raise ModelError("transfers.probability: transfers are not modelled by the model engine yet")
    handle = scenario.handle_time
    patience = getattr(scenario, "patience", None)
    ivr = getattr(scenario, "ivr", None)
    flow: Flow | None = None
    if ivr is not None:
        from vcc.ivr.validate import FlowError, load_flow

        try:
            flow = load_flow(Path(ivr.flow).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ModelError(f"ivr.flow: cannot read {ivr.flow}: {exc.strerror}") from None
        except FlowError as exc:
            raise ModelError(f"ivr.flow: {'; '.join(str(f) for f in exc.faults)}") from None
    routing = getattr(scenario, "routing", None)
    mode = str(getattr(routing, "mode", "isolated") if routing is not None else "isolated")
    after = getattr(routing, "after_s", None) if routing is not None else None
    sites = [
        ModelSite(
            id=str(s.id),
            trunk_channels=int(s.trunk_channels),
            agents={str(k): int(v) for k, v in dict(s.agents).items()},
            arrival_rate_per_s=float(s.arrival_rate_per_s),
        )
        for s in scenario.sites
    ]
    return ModelPlan(
        sites=sites,
        duration_s=float(scenario.duration_s),
        warmup_s=float(getattr(scenario, "warmup_s", 0.0) or 0.0),
        seed=int(getattr(scenario, "seed", 0) or 0),
        handle_mean_s=float(handle.mean_s),
        handle_distribution=str(getattr(handle, "distribution", "exponential")),  # type: ignore[arg-type]
        patience_mean_s=None if patience is None else float(patience.mean_s),
        patience_distribution=(
            "exponential" if patience is None else str(getattr(patience, "distribution", "exponential"))  # type: ignore[arg-type]
        ),
        service_level_threshold_s=float(scenario.service_level_threshold_s),
        ring_delay_s=float(getattr(scenario, "ring_delay_s", 0.0) or 0.0),
        wrap_up_s=float(getattr(scenario, "wrap_up_s", 0.0) or 0.0),
        routing_mode=mode,  # type: ignore[arg-type]
        overflow_after_s=float(after) if after is not None else 1.0,
        flow=flow,
        flow_keys=list(ivr.keys) if ivr is not None else [],
        speech_chars_per_s=float(ivr.speech_chars_per_s) if ivr is not None else 4.0,
    )


def run_model(scenario: Any) -> dict[str, object]:
    """The report (tools/report.build_report format) of a scenario run in virtual time."""
    plan = scenario if isinstance(scenario, ModelPlan) else plan_from_scenario(scenario)
    return run_plan(plan)[0]


__all__ = [
    "SUPPORTED_MODES",
    "ModelError",
    "ModelPlan",
    "ModelSite",
    "ModelStats",
    "batch_means",
    "plan_from_scenario",
    "province_for",
    "run_model",
    "run_plan",
    "run_views",
]
