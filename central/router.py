"""The global routing service at central: live state in, decisions out, every move recorded.

The policy is `routing.global_router` (pure); this module feeds it LiveState snapshots, keeps
the decisions (written behind the answer, in batches, so a RouteCall does not wait for the
database; held in memory until written, central/decision_log.py), and in pooled mode sends
PullCall commands down the state streams of the sites whose calls have waited longest when
another site shows a free agent.

In overflow and pooled mode it also pushes each streaming site its ready overflow targets
(`global_router.ready_targets`: per skill group, where a call that must leave should go now),
again whenever they change and at least every half freshness limit, so a site offers a due call
at once instead of asking RouteCall; the site reports each such decision on its stream
(`routed`), central records it in the decision log as its own, with the candidates it pushed,
and acknowledges it (the site re-sends until then, so none is lost with a broken stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from opentelemetry import trace
from opentelemetry.trace import Tracer

from central import convert, validation
from central.decision_log import DecisionLog
from central.live_state import Health, LiveState, Update
from central.store import RecordedDecision, Store
from routing import global_router
from routing.global_router import CallToRoute, Decision, Policy, Pull, ReadyTarget
from vcc.config import RoutingConfig, SiteConfig
from vcc.errors import InvalidArgument, VccError
from vcc.rpc import unix_s
from vcc.v1 import central_pb2, site_admin_pb2

log = logging.getLogger(__name__)

# Pooled mode: at most one round of pulls per this many seconds (a flood of states costs rounds,
# not pulls: each round sends only pulls not sent for the same target state).
PULL_INTERVAL_S = 0.05
MAX_PULLS_PER_ROUND = 64
# Commands waiting to be written to one site's stream; more are dropped (the next state brings
# them back if they still hold).
STREAM_QUEUE = 64
# Calls remembered as having a recorded decision (their later "stay" answers are not stored).
REMEMBERED_CALLS = 100_000
# Ready targets pushed per skill group (the best first; the site skips the ones a call refused).
TARGETS_PER_SKILL = 3
# Pushes remembered per site, to record the decisions taken on them with what central saw.
PUSHES_KEPT = 64


@dataclass(frozen=True)
class DirectoryEntry:
    agent_code: str
    name: str
    site_id: str
    # AgentState name from the site's summary (`agent_states`); "LOGGED_OUT" when the site is down
    # or does not report the agent; "UNKNOWN" when an older site reports only counts per state.
    state: str
    skills: dict[str, int]


@dataclass(frozen=True)
class PullCommand:
    pull: Pull
    record: RecordedDecision


# What central writes down a state stream: a pull, or a ready-made message.
StreamCommand = PullCommand | central_pb2.StreamSiteStateResponse


@dataclass
class SiteStream:
    """One open StreamSiteState stream: central writes commands to `commands`."""

    site_id: str
    token: int
    commands: asyncio.Queue[StreamCommand] = field(default_factory=lambda: asyncio.Queue(STREAM_QUEUE))
    dropped: int = 0
    # The last push of ready targets: what it said (to push only changes) and when.
    pushed_key: tuple[object, ...] = ()
    pushed_at: float = 0.0
    pushes: deque[tuple[int, dict[str, ReadyTarget]]] = field(
        default_factory=lambda: deque(maxlen=PUSHES_KEPT)
    )


class Router:
    def __init__(
        self,
        config: RoutingConfig,
        live: LiveState,
        store: Store,
        sites: Sequence[SiteConfig],
        *,
        clock: Callable[[], float] = time.time,
        tracer: Tracer | None = None,
    ) -> None:
        self._tracer = tracer or trace.NoOpTracer()
        self.policy = Policy(
            mode=config.mode,
            overflow_after_s=config.overflow_after_s,
            max_state_age_s=config.max_state_age_s,
        )
        self.live = live
        self._store = store
        self._sites = {s.id: s for s in sites}
        self._skill_groups = frozenset(g.id for s in sites for g in s.skill_groups)
        self._clock = clock
        self.decisions = DecisionLog(store)
        self._decided: OrderedDict[str, None] = OrderedDict()
        self._streams: dict[str, SiteStream] = {}
        self._sent: set[tuple[str, str, str, int, str, int, float]] = set()
        self._epoch = 0
        self._push_targets = config.push_targets
        # Figures: pushes sent, decisions reported on them, reports refused as malformed.
        self.pushes = 0
        self.routed_reports = 0
        self.refused_reports = 0

    def knows_site(self, site_id: str) -> bool:
        return site_id in self._sites

    def knows_skill_group(self, skill_group: str) -> bool:
        return skill_group in self._skill_groups

    # -- decisions ---------------------------------------------------------------------------

    def snapshots(self, now: float) -> list[global_router.SiteSnapshot]:
        return [convert.site_snapshot(s) for s in self.live.sites(now)]

    async def route_call(self, call_id: str, call: CallToRoute) -> RecordedDecision:
        """Decide; record only a move or the first answer for the call (the site re-asks while
        the call waits, and a row per "stay" would say nothing new)."""
        now = self._clock()
        # A child of the site's RouteCall span: the decision sits in the call's trace.
        with self._tracer.start_as_current_span("route.decide", attributes={"vcc.call_id": call_id}) as span:
            decision = global_router.route(call, self.snapshots(now), self.policy)
            span.set_attributes(
                {
                    "vcc.origin": call.origin,
                    "vcc.target": decision.target or "",
                    "vcc.reason": decision.reason,
                }
            )
        record = _record(call_id, now, decision)
        first = call_id not in self._decided
        if decision.moves or first:
            self._remember(call_id)
            self.decisions.add(record)
        if decision.moves:
            log.info("call %s: %s -> %s (%s)", call_id, call.origin, decision.target, decision.reason)
        return record

    async def pre_route(self, home_site_id: str) -> tuple[RecordedDecision, str]:
        """The decision (recorded, without a call id) and the chosen site's address ("" if busy)."""
        now = self._clock()
        states = self.live.sites(now)
        with self._tracer.start_as_current_span("route.pre-route", attributes={"vcc.origin": home_site_id}):
            decision = global_router.pre_route(
                home_site_id, [convert.site_snapshot(s) for s in states], self.policy
            )
        record = _record("", now, decision)
        self.decisions.add(record)
        address = ""
        if decision.target:
            state = next(s for s in states if s.site_id == decision.target)
            address = (state.summary.address if state.summary is not None else "") or self._sites[
                decision.target
            ].listen
        log.info("pre-route from %s: %s", home_site_id, decision.target or "busy")
        return record, address

    async def decisions_of(
        self, call_ids: Sequence[str], referenced: Mapping[str, Sequence[str]] | None = None
    ) -> dict[str, list[RecordedDecision]]:
        """Stored and pending decisions of each call, oldest first; `referenced` adds, per call,
        decisions named by its events (a pooled pull is decided before the origin picks the call,
        so it is recorded without a call id; the site's ROUTED event names its decision id)."""
        # Pending first: one written meanwhile is then in the database.
        pending = self.decisions.pending(call_ids)
        wanted = {d for ids in (referenced or {}).values() for d in ids}
        pending_by_id = self.decisions.pending_by_id(wanted)
        found = await self._store.decisions_of(call_ids)
        by_id = await self._store.decisions_by_id(sorted(wanted)) if wanted else {}
        by_id.update(pending_by_id)
        for d in pending:
            found.setdefault(d.call_id, []).append(d)
        for call_id, ids in (referenced or {}).items():
            found.setdefault(call_id, []).extend(
                replace(by_id[i], call_id=call_id) for i in ids if i in by_id
            )
        for call_id, records in found.items():
            unique = {d.decision_id: d for d in records}
            found[call_id] = sorted(unique.values(), key=lambda d: (d.at, d.decision_id))
        return found

    def _remember(self, call_id: str) -> None:
        self._decided[call_id] = None
        self._decided.move_to_end(call_id)
        while len(self._decided) > REMEMBERED_CALLS:
            self._decided.popitem(last=False)

    # -- the agent directory -----------------------------------------------------------------

    def directory(self, site_id: str = "") -> list[DirectoryEntry]:
        now = self._clock()
        entries = []
        for state in self.live.sites(now):
            if site_id and state.site_id != site_id:
                continue
            agents = self._sites[state.site_id].agents
            fallback = _presence(state.health, state.summary, len(agents))
            exact = state.presence
            entries += [
                DirectoryEntry(
                    a.code,
                    a.name,
                    state.site_id,
                    exact.get(a.code, "LOGGED_OUT")
                    if exact and state.health is not Health.DOWN
                    else fallback,
                    dict(sorted(a.skills.items())),
                )
                for a in agents
            ]
            # Agents the site reports that the config does not name: added at runtime by the
            # site's administrator (the other sites learn them from here). Skills unknown here.
            if exact and state.health is not Health.DOWN:
                named = {a.code for a in agents}
                entries += [
                    DirectoryEntry(code, "", state.site_id, exact[code], {})
                    for code in sorted(set(exact) - named)
                ]
        return entries

    # -- state streams and pooled pulls ------------------------------------------------------

    def attach(self, site_id: str) -> SiteStream:
        stream = SiteStream(site_id, self.live.open_stream(site_id))
        old = self._streams.get(site_id)
        self._streams[site_id] = stream
        if old is not None:
            log.info("site %s: a new state stream replaces the previous one", site_id)
        return stream

    def on_state(
        self,
        stream: SiteStream,
        seq: int,
        summary: site_admin_pb2.SiteSummary,
        presence: central_pb2.PresenceUpdate.ValueType = central_pb2.PRESENCE_UPDATE_FULL,
    ) -> Update:
        result = self.live.update(stream.site_id, stream.token, seq, summary, self._clock(), presence)
        if result is Update.GAP:
            log.warning(
                "site %s: presence delta %d cannot be applied (gap): resync asked", stream.site_id, seq
            )
            self._send(
                stream,
                central_pb2.StreamSiteStateResponse(
                    resync_presence=central_pb2.ResyncPresence(applied_seq=seq, reason="gap in seq")
                ),
            )
        return result

    def on_routed(self, stream: SiteStream, routed: Sequence[central_pb2.RoutedOnTarget]) -> None:
        """Decisions the site took on pushed targets: recorded, then acknowledged (a malformed one
        is refused, logged and acknowledged too: sending it again would not mend it)."""
        if not routed:
            return
        ids = []
        for r in routed:
            ids.append(r.decision_id)
            try:
                record = self._routed_record(stream, r)
            except VccError as exc:
                self.refused_reports += 1
                log.warning("site %s: routed decision refused: %s", stream.site_id, exc)
                continue
            self.routed_reports += 1
            self._remember(record.call_id)
            self.decisions.add(record)
            log.info(
                "call %s: %s -> %s (pushed target, push %d)",
                record.call_id,
                stream.site_id,
                record.decision.target,
                r.epoch,
            )
        self._send(
            stream,
            central_pb2.StreamSiteStateResponse(routed_recorded=central_pb2.RoutedRecorded(decision_ids=ids)),
        )

    def _routed_record(self, stream: SiteStream, r: central_pb2.RoutedOnTarget) -> RecordedDecision:
        origin = stream.site_id
        if not r.decision_id or len(r.decision_id) > 64:
            raise InvalidArgument("bad-decision-id", "decision_id: 1 to 64 characters")
        validation.check_call_id(r.call_id)
        if r.target_site_id not in self._sites or r.target_site_id == origin:
            raise InvalidArgument("bad-target", f"target_site_id: {r.target_site_id!r} is no other site")
        if r.skill_group not in self._skill_groups:
            raise InvalidArgument("unknown-skill-group", f"skill_group: {r.skill_group!r}")
        pushed = next((targets for epoch, targets in stream.pushes if epoch == r.epoch), None)
        ready = pushed.get(r.skill_group) if pushed is not None else None
        how = (
            f"offered at once by {origin} to {r.target_site_id}, a ready target central pushed "
            f"(push {r.epoch})"
        )
        waited = f"the call had waited {r.waited_s:.1f}s"
        if ready is not None:
            decision = replace(
                ready.decision, target=r.target_site_id, reason=f"{how}; {waited}; {ready.decision.reason}"
            )
        else:
            reason = f"{how}, not remembered here (an earlier leader's?); {waited}"
            decision = Decision(origin, r.target_site_id, self.policy.mode, reason, r.skill_group, ())
        return RecordedDecision(r.decision_id, r.call_id, unix_s(r.at), decision)

    def _send(self, stream: SiteStream, command: StreamCommand) -> bool:
        try:
            stream.commands.put_nowait(command)
        except asyncio.QueueFull:
            stream.dropped += 1
            return False
        return True

    def detach(self, stream: SiteStream) -> None:
        self.live.close_stream(stream.site_id, stream.token)
        if self._streams.get(stream.site_id) is stream:
            del self._streams[stream.site_id]

    async def run(self) -> None:
        """The decision writer, and (unless isolated) the loop that answers state changes with
        pulls and pushed targets, until cancelled; then the decisions still held are written
        (bounded: decision_log.DRAIN_S)."""
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.decisions.run(), name="central-decision-log")
                if self.policy.mode != "isolated":
                    tasks.create_task(self._state_loop(), name="central-pulls-and-targets")
        finally:
            await asyncio.shield(self.decisions.drain())

    async def _state_loop(self) -> None:
        renew_s = self.policy.max_state_age_s / 2
        while True:
            with contextlib.suppress(TimeoutError):
                # Targets are renewed before the sites' freshness limit lets them lapse.
                async with asyncio.timeout(renew_s):
                    await self.live.changed.wait()
            self.live.changed.clear()
            if self.policy.mode == "pooled":
                await self.pull_round()
            if self._push_targets:
                self.targets_round()
            # The rate limit: states arriving meanwhile are coalesced into the next round.
            await asyncio.sleep(PULL_INTERVAL_S)

    def targets_round(self) -> int:
        """Push each streaming site its ready targets where they changed (or are due for renewal);
        returns how many pushes were sent."""
        now = self._clock()
        snapshots = self.snapshots(now)
        renew_s = self.policy.max_state_age_s / 2
        sent = 0
        for site_id, stream in list(self._streams.items()):
            ready = global_router.ready_targets(site_id, snapshots, self.policy)
            key = tuple(
                (
                    skill,
                    tuple(
                        (c.site_id, c.ready_agents, c.free_tie_channels) for c in r.ranked[:TARGETS_PER_SKILL]
                    ),
                )
                for skill, r in sorted(ready.items())
            )
            if key == stream.pushed_key and now - stream.pushed_at < renew_s:
                continue
            self._epoch += 1
            message = central_pb2.OverflowTargets(
                epoch=self._epoch,
                targets=[
                    central_pb2.OverflowTarget(
                        skill_group=skill,
                        site_id=c.site_id,
                        ready_agents=c.ready_agents,
                        free_tie_channels=c.free_tie_channels,
                        state_age_s=c.state_age_s,
                        expected_wait_s=c.expected_wait_s,
                    )
                    for skill, r in sorted(ready.items())
                    for c in r.ranked[:TARGETS_PER_SKILL]
                ],
            )
            if self._send(stream, central_pb2.StreamSiteStateResponse(overflow_targets=message)):
                stream.pushes.append((self._epoch, ready))
                stream.pushed_key, stream.pushed_at = key, now
                self.pushes += 1
                sent += 1
        return sent

    async def pull_round(self) -> int:
        """Send the pulls that the current states call for and that were not sent for the same
        target state already; returns how many were sent."""
        now = self._clock()
        states = {s.site_id: s for s in self.live.sites(now)}
        pulls = global_router.pull_candidates(
            [convert.site_snapshot(s) for s in states.values()], self.policy, MAX_PULLS_PER_ROUND
        )
        sent: set[tuple[str, str, str, int, str, int, float]] = set()
        counts: dict[tuple[str, str, str], int] = {}
        delivered = 0
        for pull in pulls:
            n = counts[(pull.origin, pull.skill_group, pull.target)] = (
                counts.get((pull.origin, pull.skill_group, pull.target), 0) + 1
            )
            target = states[pull.target]
            key = (
                pull.origin,
                pull.skill_group,
                pull.target,
                n,
                target.source,
                target.seq,
                target.received_at or 0.0,
            )
            sent.add(key)
            stream = self._streams.get(pull.origin)
            if key in self._sent or stream is None:
                continue
            record = _record("", now, pull.decision)
            if not self._send(stream, PullCommand(pull, record)):
                continue
            delivered += 1
            self.decisions.add(record)
            log.debug("pull: %s -> %s for %s", pull.origin, pull.target, pull.skill_group)
        self._sent = sent
        return delivered


def _record(call_id: str, now: float, decision: Decision) -> RecordedDecision:
    return RecordedDecision(uuid.uuid4().hex, call_id, now, decision)


def _presence(health: Health, summary: site_admin_pb2.SiteSummary | None, roster: int) -> str:
    """Every agent's state as far as counts per state tell (for a summary without `agent_states`):
    exact only when every agent of the site is in the same state."""
    if health is Health.DOWN or summary is None:
        return "LOGGED_OUT"
    counts = {state: n for state, n in summary.agents_by_state.items() if n > 0}
    if roster == 0 or not counts:
        return "LOGGED_OUT"
    if len(counts) == 1:
        ((state, n),) = counts.items()
        if n == roster:
            return state
    return "UNKNOWN"
