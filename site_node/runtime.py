"""Runs the switchboard in real time and carries out its effects.

The one place where the pure switchboard meets the event loop: it stamps operations with the
clock, journals events to the outbox, delivers progress to callers and events to desktops, looks
customers up, and fires the switchboard's deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from site_node.call_tracer import CallTracer
from site_node.callcontrol import RemoteOfferIn, Switchboard
from site_node.callcontrol.domain import (
    AskRoute,
    Audit,
    CustomerInfo,
    DialOut,
    Effect,
    FetchCustomer,
    IvrLookup,
    Journal,
    KeepOpen,
    LegToOrigin,
    LegToTarget,
    OfferRemote,
    ReportRoute,
    SuperviseMedia,
    ToAgent,
    ToCaller,
)
from site_node.grpc_api import convert
from site_node.records.open_items import kept_row
from site_node.records.outbox import KeptItem
from site_node.step_observers import StepObservers
from site_node.transition_log import TransitionLog
from vcc.errors import Unavailable, VccError
from vcc.rpc import timestamp
from vcc.v1 import common_pb2, cti_pb2, trunk_pb2

log = logging.getLogger(__name__)

# How long the stop waits for the call tasks it cancelled (SiteRuntime.close).
TASKS_STOP_S = 3.0
# How many events a desktop may fall behind before it is cut off (it re-connects and resyncs).
DESKTOP_QUEUE_LIMIT = 1000


class Journaling(Protocol):
    def append(
        self, events: Sequence[common_pb2.CallEvent], kept: Sequence[KeptItem] = ()
    ) -> asyncio.Future[None]: ...


CustomerLookup = Callable[[str], Awaitable[CustomerInfo | None]]
# A flow's look-up at central: (name, args, the flow's timeout) -> fields, or None when it failed.
FlowLookup = Callable[[str, dict[str, str], float], Awaitable[dict[str, str] | None]]
# Hooks for effects no adapter of this module carries out: desktops' web pages (ToAgent), the
# media side (SuperviseMedia), the audit log (Audit).
AgentWatcher = Callable[[ToAgent], None]
MediaHandler = Callable[[SuperviseMedia], None]
AuditSink = Callable[[Audit], None]
# The gRPC desktop stream carries these ToAgent kinds; newer ones reach only the watchers.
_NO_SNAPSHOT = cti_pb2.AgentSnapshot()
_STREAMED_KINDS = frozenset(
    {
        "state",
        "offered",
        "withdrawn",
        "connected",
        "held",
        "retrieved",
        "ended",
        "transfer",
        "callback_preview",
    }
)


class Province(Protocol):
    """Where effects that leave the site go: central's router and the peer sites."""

    def ask_route(self, ask: AskRoute) -> None: ...

    def report_route(self, report: ReportRoute) -> None: ...

    def offer_remote(self, offer: OfferRemote) -> None: ...

    def to_target(self, message: LegToTarget) -> None: ...

    def to_origin(self, message: LegToOrigin) -> None: ...

    def state_changed(self) -> None: ...


# A step of a caller's progress and the future of its records' durability (None: send at once);
# None instead of a step: another stream took the call over.
CallerStep = tuple[trunk_pb2.PlaceCallResponse, asyncio.Future[None] | None]


@dataclass(eq=False)
class CallerLine:
    """The caller's side of one call: progress to send, each after its records are durable."""

    queue: asyncio.Queue[CallerStep | None] = field(default_factory=asyncio.Queue)
    last: trunk_pb2.PlaceCallResponse | None = None
    # Set: the steps go here instead of the queue (a call on a trunk's signalling link, whose one
    # stream carries many calls' progress).
    sink: Callable[[CallerStep | None], None] | None = None

    def put(self, step: CallerStep | None) -> None:
        if self.sink is not None:
            self.sink(step)
        else:
            self.queue.put_nowait(step)


@dataclass(eq=False)
class DesktopLine:
    queue: asyncio.Queue[cti_pb2.StreamEventsResponse | None] = field(default_factory=asyncio.Queue)


class SiteRuntime:
    def __init__(
        self,
        switchboard: Switchboard,
        journal: Journaling,
        lookup_customer: CustomerLookup,
        clock: Callable[[], float] = time.time,
        tracer: CallTracer | None = None,
    ) -> None:
        self.sb = switchboard
        self.tracer = tracer
        self._journal = journal
        self._lookup = lookup_customer
        self.clock = clock
        self.callers: dict[str, CallerLine] = {}
        self.desktops: dict[str, set[DesktopLine]] = {}
        self._names = {a.code: a.name for a in switchboard.site.agents}
        self._tasks: set[asyncio.Task[None]] = set()
        # Screen-pop look-ups under way (cancelled at close, as the tasks are).
        self._asks: set[asyncio.Future[CustomerInfo | None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = float("inf")
        self._transitions = TransitionLog(switchboard.site_id)
        # The line per transition and the call's spans, once the step's messages are on their way.
        self.observers = StepObservers(
            [self._transitions.observe, *([tracer.observe] if tracer is not None else [])]
        )
        self.closed = False
        # Wired by the composition root once the links exist (None: a site on its own).
        self.province: Province | None = None
        self.agent_watchers: list[AgentWatcher] = []
        self.media: MediaHandler = _media_nobody
        self.audit: AuditSink = _audit_to_log
        # Told every agent event besides the desktops (the agents' SIP phones).
        self.agent_listeners: list[Callable[[ToAgent], None]] = []
        # A flow's look-ups (None: a site with no central to ask; every look-up fails).
        self.flow_lookup: FlowLookup | None = None
        # Callbacks to dial through the trunk (the DialOutService; none: each dial fails).
        self.dial_out: Callable[[DialOut], None] = self._no_dialler
        # An agent's state rides in the call event that changed it (the site's
        # desk_states_in_call_events; false: a state_changed of its own after each).
        self.fold_states = switchboard.site.desk_states_in_call_events
        self._after: list[Callable[[float], list[Effect]]] = []
        # A deadline due already is carried out in this turn of the loop, once per turn.
        self._due_tick_queued = False

    # Operations -----------------------------------------------------------------------------

    def do(self, op: Callable[[float], list[Effect]]) -> list[Effect]:
        """Run one switchboard operation now and carry out its effects. VccErrors propagate."""
        self._check_open()
        effects = op(self.clock())
        self.apply(effects)
        return effects

    def offer(self, line: CallerLine, **offer: object) -> str:
        """A new call from a trunk; `line` receives its progress."""
        self._check_open()
        now = self.clock()
        call_id, effects = self.sb.offer(now, **offer)  # type: ignore[arg-type]
        self.callers[call_id] = line
        self.apply(effects)
        return call_id

    def _check_open(self) -> None:
        if self.closed:
            raise Unavailable("site-stopping", f"site {self.sb.site_id} is shutting down")

    def serve_remote(self, offer: RemoteOfferIn) -> tuple[str | None, str]:
        """A peer offers one of its calls: (reserved agent, "") or (None, refusal reason)."""
        self._check_open()
        agent, refusal, effects = self.sb.serve_remote(self.clock(), offer)
        self.apply(effects)
        return agent, refusal

    def attach_caller(self, call_id: str, line: CallerLine) -> None:
        """A re-sent offer takes over the caller side of a live call (the old stream is closed)."""
        old = self.callers.get(call_id)
        self.callers[call_id] = line
        if old is not None:
            old.put(None)
            if old.last is not None:
                line.put((old.last, None))

    def apply(self, effects: Sequence[Effect]) -> None:
        self.observers.saw(effects)
        batch: list[common_pb2.CallEvent] = []
        # Callbacks and messages changed: durable with the events (the same commit).
        kept: list[KeptItem] = []
        durable: asyncio.Future[None] | None = None
        desk: list[ToAgent] = []
        for fx in effects:
            match fx:
                case Journal(event):
                    batch.append(convert.event_to_proto(event))
                case KeepOpen():
                    kept.append(kept_row(fx))
                case ToCaller():
                    if fx.kind == "ended" and batch:
                        # The caller hears the end only once its record is durable.
                        durable = self._journal.append(batch, kept)
                        batch, kept = [], []
                    self._to_caller(fx, durable if fx.kind == "ended" else None)
                case ToAgent():
                    for watch in self.agent_watchers:
                        watch(fx)
                    desk.append(fx)
                    for listener in self.agent_listeners:
                        listener(fx)
                case FetchCustomer(call_id, ani):
                    self._fetch_customer(call_id, ani)
                case IvrLookup():
                    self._spawn(self._flow_lookup(fx))
                case DialOut():
                    self.dial_out(fx)
                case AskRoute() | ReportRoute() | OfferRemote() | LegToTarget() | LegToOrigin():
                    self._to_province(fx)
                case SuperviseMedia():
                    self.media(fx)
                case Audit():
                    self.audit(fx)
        if desk:
            self._to_desktops(desk)
        if batch or kept:
            self._journal.append(batch, kept)
        self.observers.step_done()
        if self.sb.supervising and effects:
            # Supervision follows the calls it watches (ends with the agent's leg): one more
            # pure step over the state these effects left, whose own effects need no follow-up.
            follow = self.sb.follow_supervision(self.clock())
            if follow:
                self.apply(follow)
                return
        if not self._due_tick_queued and self._deadline_due():
            # Due already (a caller who must leave for another city at once): carried out right
            # after this step, in this turn; the timer would take a turn of the loop more, behind
            # whatever else is ready (0.8 ms of the cross-site decision at load 14, measured).
            self._due_tick_queued = True
            asyncio.get_running_loop().call_soon(self._due_tick_done)
            self._after.append(self._due_tick)
        else:
            self._schedule_timer()
        if self.province is not None and effects:
            self.province.state_changed()
        while self._after:
            self._follow_up(self._after.pop(0))

    def after_step(self, op: Callable[[float], list[Effect]]) -> None:
        """Run `op` right after the step being carried out (an adapter's follow-up of one of its
        effects, such as an auto-answer): in the same turn of the loop, never inside the step."""
        self._after.append(op)

    def _follow_up(self, op: Callable[[float], list[Effect]]) -> None:
        if self.closed:
            return
        try:
            effects = op(self.clock())
        except VccError as exc:
            log.debug("follow-up refused: %s", exc)
            return
        self.apply(effects)

    def _to_province(self, fx: AskRoute | ReportRoute | OfferRemote | LegToTarget | LegToOrigin) -> None:
        p = self.province
        if p is None:
            # A site on its own: no other city to ask, and nobody offers us calls.
            if isinstance(fx, AskRoute):
                call_id = fx.call_id
                self.loop_soon(lambda: self.do(lambda now: self.sb.route_decided(now, call_id, None)))
            return
        match fx:
            case AskRoute():
                # In the call's trace: central's answer continues it (traceparent over gRPC).
                with self._call_context(fx.call_id):
                    p.ask_route(fx)
            case ReportRoute():
                p.report_route(fx)
            case OfferRemote():
                with self._call_context(fx.call_id):
                    p.offer_remote(fx)
            case LegToTarget():
                p.to_target(fx)
            case LegToOrigin():
                p.to_origin(fx)

    def _call_context(self, call_id: str) -> contextlib.AbstractContextManager[None]:
        if self.tracer is None:
            return contextlib.nullcontext()
        if self.tracer.span_context(call_id) is None:
            # The call's span is made by the observers: a call new in this very step is observed
            # now, so that the RPC made for it continues its trace.
            self.observers.catch_up()
        return self.tracer.context_of(call_id)

    def loop_soon(self, action: Callable[[], object]) -> None:
        """Run `action` on the next loop iteration (never re-entrantly inside apply)."""

        def run() -> None:
            if self.closed:
                return
            try:
                action()
            except VccError as exc:
                log.debug("deferred switchboard action refused: %s", exc)

        asyncio.get_running_loop().call_soon(run)

    def _to_caller(self, u: ToCaller, durable: asyncio.Future[None] | None) -> None:
        line = self.callers.get(u.call_id)
        if line is None:
            return
        msg = convert.caller_update_to_proto(u)
        line.last = msg
        line.put((msg, durable))
        if u.kind == "ended":
            del self.callers[u.call_id]

    def _to_desktops(self, updates: Sequence[ToAgent]) -> None:
        """One step's agent updates to the agents' gRPC desktops. An agent's state changed in the
        same step as a call event of its rides in that event (its last one of the step) instead
        of a state_changed of its own: the snapshot is the state after the step either way."""
        streamed = [u for u in updates if u.kind in _STREAMED_KINDS and self.desktops.get(u.agent_code)]
        if not streamed:
            return
        carrier: dict[str, int] = {}
        if self.fold_states:
            changed = {u.agent_code for u in streamed if u.kind == "state"}
            for i, u in enumerate(streamed):
                if u.kind != "state" and u.agent_code in changed:
                    carrier[u.agent_code] = i
        snapshots: dict[str, cti_pb2.AgentSnapshot] = {}
        for i, u in enumerate(streamed):
            code = u.agent_code
            if u.kind == "state" and code in carrier:
                continue
            # Only a state change carries the agent's snapshot: not built for the other kinds.
            with_state = u.kind == "state" or carrier.get(code) == i
            snapshot = _NO_SNAPSHOT
            if with_state:
                snapshot = snapshots.get(code) or snapshots.setdefault(code, self.snapshot(code))
            msg = convert.agent_update_to_proto(u, snapshot)
            if u.kind != "state" and with_state:
                msg.agent.CopyFrom(snapshot)
            self._to_desktop(code, msg)

    def _to_desktop(self, code: str, msg: cti_pb2.StreamEventsResponse) -> None:
        lines = self.desktops.get(code, set())
        for line in list(lines):
            if line.queue.qsize() >= DESKTOP_QUEUE_LIMIT:
                log.warning("agent %s: desktop too slow, cutting its event stream", code)
                lines.discard(line)
                line.queue.put_nowait(None)
            else:
                line.queue.put_nowait(msg)

    def snapshot(self, code: str) -> cti_pb2.AgentSnapshot:
        return convert.snapshot_to_proto(
            self.sb.agent(code), self._names.get(code, ""), self.sb.site_id, self.sb.skills[code]
        )

    def _fetch_customer(self, call_id: str, ani: str) -> None:
        # The answer's callback, not a task per call: a batched look-up answers many calls at once.
        answer = asyncio.ensure_future(self._lookup(ani))
        self._asks.add(answer)
        answer.add_done_callback(lambda done: self._customer_answered(call_id, done))

    def _customer_answered(self, call_id: str, answer: asyncio.Future[CustomerInfo | None]) -> None:
        self._asks.discard(answer)
        if answer.cancelled() or self.closed:
            return
        customer = None
        if (exc := answer.exception()) is not None:
            # The look-up is best effort: the call rings without a screen pop.
            log.debug("customer look-up for %s failed: %s", call_id, exc)
        else:
            customer = answer.result()
        try:
            self.do(lambda now: self.sb.customer_found(now, call_id, customer))
        except VccError as refused:
            log.debug("customer answer for %s refused: %s", call_id, refused)

    def _no_dialler(self, d: DialOut) -> None:
        self.loop_soon(lambda: self.do(lambda now: self.sb.dial_failed(now, d.dial_id, "failed")))

    async def _flow_lookup(self, ask: IvrLookup) -> None:
        fields: dict[str, str] | None = None
        if self.flow_lookup is not None:
            try:
                fields = await self.flow_lookup(ask.name, dict(ask.args), ask.timeout_s)
            except Exception as exc:  # the flow's on_timeout path covers any failure
                log.debug("flow look-up for %s failed: %s", ask.call_id, exc)
        if not self.closed:
            self.do(lambda now: self.sb.ivr_looked_up(now, ask.call_id, ask.request, fields))

    # Desktops -------------------------------------------------------------------------------

    def attach_desktop(self, code: str) -> DesktopLine:
        line = DesktopLine()
        self.desktops.setdefault(code, set()).add(line)
        self.sb.desktop_attached(code)
        line.queue.put_nowait(
            cti_pb2.StreamEventsResponse(
                at=timestamp(self.clock()), state_changed=cti_pb2.AgentStateChanged(agent=self.snapshot(code))
            )
        )
        return line

    def desk_attached(self, code: str) -> None:
        """A desk other than a gRPC stream (a web page's event stream) is open for the agent."""
        self.sb.desktop_attached(code)

    def desk_detached(self, code: str) -> None:
        if not self.closed:
            self.sb.desktop_detached(self.clock(), code)
            self._schedule_timer()

    def detach_desktop(self, code: str, line: DesktopLine) -> None:
        lines = self.desktops.get(code)
        if lines is not None and line in lines:
            lines.discard(line)
        if not self.closed:
            self.sb.desktop_detached(self.clock(), code)
            self._schedule_timer()

    # Timers and tasks -----------------------------------------------------------------------

    def _deadline_due(self) -> bool:
        when = self.sb.next_deadline()
        return when is not None and not self.closed and when <= self.clock()

    def _due_tick(self, now: float) -> list[Effect]:
        try:
            return self.sb.tick(now)
        finally:
            # Whatever the tick did or refused, the deadlines left keep their timer.
            self._schedule_timer()

    def _due_tick_done(self) -> None:
        self._due_tick_queued = False

    def _schedule_timer(self) -> None:
        when = self.sb.next_deadline()
        if when is None or self.closed or when >= self._timer_when:
            return
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, when - self.clock())
        self._timer_when = when
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = float("inf")
        try:
            self.apply(self.sb.tick(self.clock()))
        except VccError:
            log.exception("deadline handling failed")
        self._schedule_timer()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """End every call (recorded as failed or answered), close streams, cancel tasks."""
        if self.closed:
            return
        self.apply(self.sb.shutdown(self.clock()))
        self.observers.catch_up()
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        for ask in list(self._asks):
            ask.cancel()
        if self._tasks:
            # Bounded: a task slow to unwind on a loaded machine must not hold the stop (the
            # desktops below still hear the end).
            _, stuck = await asyncio.wait(set(self._tasks), timeout=TASKS_STOP_S)
            if stuck:
                log.warning("%d call tasks did not end within %.1fs of the stop", len(stuck), TASKS_STOP_S)
        for lines in self.desktops.values():
            for line in lines:
                line.queue.put_nowait(None)


def _media_nobody(request: SuperviseMedia) -> None:
    # The SIP side (rtpengine forking) is not wired yet: supervision is signalling only.
    log.info(
        "supervision media %s for call %s (%s on %s): no media side",
        request.mode,
        request.call_id,
        request.supervisor,
        request.agent_code,
    )


def _audit_to_log(entry: Audit) -> None:
    log.info(
        "audit: %s %s %s call=%s %s (%s)",
        entry.actor,
        entry.action,
        entry.target,
        entry.call_id,
        entry.detail,
        entry.outcome,
    )
