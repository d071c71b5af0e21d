"""One city's own call control: trunks, IVR, queues, agents. Pure and single-threaded.

(site_node/switchboard.py adds what makes the cities one call center: calls served elsewhere.)

Every method takes `now` and returns the effects its adapters must carry out, in order; it
never awaits, so each call is atomic on the event loop. Timers are deadlines kept here:
`next_deadline()` says when to call `tick(now)`. The same code runs in real time in a site node
and in virtual time in the model engine.
"""

from __future__ import annotations

import heapq
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from routing import agents as fsm
from routing.acd import Acd, Standing
from routing.agents import Agent, AgentState
from routing.waits import expected_wait_s, smoothed
from site_node.domain import (
    Call,
    CallState,
    CustomerInfo,
    Effect,
    FetchCustomer,
    Journal,
    Outcome,
    RecordedEvent,
    ToAgent,
    ToCaller,
)
from site_node.resources import ChannelPool
from vcc.call_events import EventKind
from vcc.config import SiteConfig
from vcc.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

MAX_ATTACHED_ITEMS = 64
MAX_ATTACHED_BYTES = 8192
ANI_CHARS = frozenset("0123456789+*#")
MAX_REASON_LENGTH = 64
# Longest a call waits for its customer record before it may ring an agent without it.
CUSTOMER_WAIT_S = 1.0
# Remembered offer keys, so a re-sent offer attaches to its call instead of making another.
MAX_REMEMBERED_KEYS = 100_000


@dataclass
class SiteCounters:
    offered: int = 0
    blocked: int = 0
    answered: int = 0
    abandoned: int = 0
    failed: int = 0
    ring_no_answer: int = 0
    ivr_bypassed: int = 0


@dataclass
class _Effects:
    """Collects effects of one operation, and numbers the journal entries per call."""

    site_id: str
    # False: the journal numbers advance but no RecordedEvent is built (Switchboard(journal=False)).
    journaling: bool = True
    items: list[Effect] = field(default_factory=list)

    def journal(self, call: Call, kind: EventKind, at: float, **fields: object) -> None:
        call.seq += 1
        if not self.journaling:
            return
        data = fields.pop("data", ())
        event = RecordedEvent(call.call_id, self.site_id, call.seq, kind, at, data=tuple(data), **fields)  # type: ignore[arg-type]
        self.items.append(Journal(event))


class LocalSwitchboard:
    def __init__(
        self,
        site: SiteConfig,
        service_number: str,
        new_call_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        *,
        journal: bool = True,
    ) -> None:
        """`journal=False` leaves the Journal effects out (nothing else changes): for the model
        engine, which never reads them and would spend much of its time building them."""
        self.journaling = journal
        self.site = site
        self.site_id = site.id
        self.service_number = service_number
        self._new_call_id = new_call_id
        self.trunks = {t.id: ChannelPool(t.id, "trunk", t.channels) for t in site.trunk_groups}
        self.boards = {b.id: ChannelPool(b.id, b.kind, b.channels) for b in site.boards}
        self.ties = {t.peer: ChannelPool(f"tie:{t.peer}", "tie", t.channels) for t in site.tie_trunks}
        self.acd = Acd({g.id: (g.strategy, g.priority) for g in site.skill_groups})
        self.agents: dict[str, Agent] = {}
        self.skills: dict[str, dict[str, int]] = {}
        for a in site.agents:
            self.agents[a.code] = Agent(a.code)
            self.skills[a.code] = dict(a.skills)
            self.acd.set_skills(a.code, a.skills)
        self.calls: dict[str, Call] = {}
        self._by_key: dict[str, str] = {}
        self._ended_keys: dict[str, tuple[str, Outcome]] = {}
        # Last journal number of calls that ended here: a call that comes back continues from it.
        self._ended_seq: dict[str, int] = {}
        self.counters = SiteCounters()
        self.mean_handle_s = {g.id: 30.0 for g in site.skill_groups}
        # Agents logged in per skill group (kept as agents log in and out: read on every enqueue).
        self.staffed = {g.id: 0 for g in site.skill_groups}
        self._deadlines: list[tuple[float, int, str, str, str]] = []
        self._timer_seq = 0
        self._desktop_attached: dict[str, int] = {}
        self._detaches: dict[str, int] = {}
        self._ivr_choices = {c.digit: c.skill_group for c in site.ivr.choices}

    # Timers ---------------------------------------------------------------------------------

    def _arm(self, when: float, kind: str, subject: str, token: str) -> None:
        self._timer_seq += 1
        heapq.heappush(self._deadlines, (when, self._timer_seq, kind, subject, token))

    def next_deadline(self) -> float | None:
        return self._deadlines[0][0] if self._deadlines else None

    def tick(self, now: float) -> list[Effect]:
        fx = _Effects(self.site_id, self.journaling)
        while self._deadlines and self._deadlines[0][0] <= now:
            when, _, kind, subject, token = heapq.heappop(self._deadlines)
            self._on_deadline(kind, subject, token, when, fx)
        self._dispatch(now, fx)
        return fx.items

    def _on_deadline(self, kind: str, subject: str, token: str, when: float, fx: _Effects) -> None:
        if kind == "ring":
            self._ring_expired(subject, token, when, fx)
        elif kind == "ivr":
            self._ivr_expired(subject, when, fx)
        elif kind == "wrap":
            self._wrap_up_expired(subject, token, when, fx)
        elif kind == "desktop":
            self._desktop_expired(subject, token, when, fx)
        elif kind == "customer":
            self._customer_resolved(subject, None, when, fx)

    # Trunk side -----------------------------------------------------------------------------

    def call_for_key(self, idempotency_key: str) -> str | None:
        """The call a previous offer with this key created, live or ended."""
        live = self._by_key.get(idempotency_key)
        if live is not None:
            return live
        ended = self._ended_keys.get(idempotency_key)
        return ended[0] if ended else None

    def ended_outcome(self, idempotency_key: str) -> tuple[str, Outcome] | None:
        return self._ended_keys.get(idempotency_key)

    def offer(
        self,
        now: float,
        *,
        idempotency_key: str,
        ani: str,
        dnis: str,
        trunk_group: str = "",
        call_id: str = "",
        attached: dict[str, str] | None = None,
    ) -> tuple[str, list[Effect]]:
        """A call arrives on a trunk. Returns its call id (minted here unless pre-routed)."""
        attached = dict(attached or {})
        self._validate_offer(
            key=idempotency_key,
            ani=ani,
            dnis=dnis,
            trunk_group=trunk_group,
            call_id=call_id,
            attached=attached,
        )
        if idempotency_key in self._by_key or idempotency_key in self._ended_keys:
            raise AlreadyExists("offer-key-reused", f"an offer with key {idempotency_key!r} was already made")
        if call_id and call_id in self.calls:
            raise AlreadyExists("call-exists", f"call {call_id} is already at site {self.site_id}")
        call_id = call_id or self._new_call_id()
        fx = _Effects(self.site_id, self.journaling)
        self.counters.offered += 1
        pool = self._free_trunk(trunk_group)
        call = Call(call_id, idempotency_key, ani, dnis, self.site_id, trunk_group or "", now, attached)
        call.seq = self._ended_seq.pop(call_id, 0)
        if pool is None:
            self.counters.blocked += 1
            call.state = CallState.ENDED
            call.outcome = Outcome.BLOCKED
            fx.journal(
                call, EventKind.BLOCKED, now, ani=ani, dnis=dnis, data=(("trunk_group", trunk_group or "*"),)
            )
            fx.journal(
                call, EventKind.ENDED, now, outcome=Outcome.BLOCKED, data=(("reason", "no-trunk-channel"),)
            )
            fx.items.append(
                ToCaller(call_id, "ended", now, outcome=Outcome.BLOCKED, reason="no-trunk-channel")
            )
            self._remember_ended(call, Outcome.BLOCKED)
            return call_id, fx.items
        call.trunk_group = pool.id
        self.calls[call_id] = call
        self._by_key[idempotency_key] = call_id
        fx.journal(call, EventKind.ARRIVED, now, ani=ani, dnis=dnis, data=(("trunk_group", pool.id),))
        fx.items.append(ToCaller(call_id, "accepted", now, site_id=self.site_id, trunk_group=pool.id))
        call.customer_pending = True
        fx.items.append(FetchCustomer(call_id, ani))
        self._arm(now + CUSTOMER_WAIT_S, "customer", call_id, "")
        self._start_ivr(call, now, fx)
        self._dispatch(now, fx)
        return call_id, fx.items

    def _validate_offer(
        self, *, key: str, ani: str, dnis: str, trunk_group: str, call_id: str, attached: dict[str, str]
    ) -> None:
        if not key or len(key) > 128:
            raise InvalidArgument("bad-idempotency-key", "idempotency_key: required, at most 128 characters")
        if not ani or len(ani) > 32 or not set(ani) <= ANI_CHARS:
            raise InvalidArgument("bad-ani", "ani: 1 to 32 characters of 0-9 + * #")
        if dnis != self.service_number:
            raise InvalidArgument("unknown-dnis", f"dnis: {dnis!r} is not a service number of this province")
        if trunk_group and trunk_group not in self.trunks:
            raise NotFound(
                "unknown-trunk-group", f"trunk_group: no trunk group {trunk_group!r} at {self.site_id}"
            )
        if call_id and (len(call_id) > 64 or not call_id.isascii()):
            raise InvalidArgument("bad-call-id", "call_id: at most 64 ASCII characters")
        size = sum(len(k) + len(v) for k, v in attached.items())
        if len(attached) > MAX_ATTACHED_ITEMS or size > MAX_ATTACHED_BYTES:
            raise InvalidArgument("attached-data-too-large", "attached_data: at most 64 entries and 8 KiB")

    def _free_trunk(self, trunk_group: str) -> ChannelPool | None:
        if trunk_group:
            pool = self.trunks[trunk_group]
            return pool if pool.acquire() else None
        for pool in self.trunks.values():
            if pool.free > 0:
                pool.acquire()
                return pool
        # Count the refusal on the first group: the network offered it to the site as a whole.
        next(iter(self.trunks.values())).refused += 1
        return None

    def _start_ivr(self, call: Call, now: float, fx: _Effects) -> None:
        ivr = self.site.ivr
        got, port = self._acquire_board("ivr")
        if not got:
            # Every IVR port busy: skip the menu rather than refuse the caller.
            self.counters.ivr_bypassed += 1
            self._enqueue(call, ivr.default_skill_group, now, fx, reason="ivr-ports-busy")
            return
        call.ivr_port = port
        call.state = CallState.IVR
        fx.journal(call, EventKind.IVR_STARTED, now)
        fx.items.append(
            ToCaller(
                call.call_id,
                "prompt",
                now,
                prompt=ivr.prompt,
                choices=tuple(self._ivr_choices),
                timeout_s=ivr.digit_timeout_s,
            )
        )
        self._arm(now + ivr.digit_timeout_s, "ivr", call.call_id, "")

    def _acquire_board(self, kind: str) -> tuple[bool, str | None]:
        """(got a channel, the board it is on). A site with no board of this kind has virtual,
        unlimited channels: (True, None)."""
        pools = [b for b in self.boards.values() if b.kind == kind]
        if not pools:
            return True, None
        for pool in pools:
            if pool.acquire():
                return True, pool.id
        return False, None

    def _release_ivr(self, call: Call) -> None:
        if call.ivr_port:
            self.boards[call.ivr_port].release()
        call.ivr_port = None

    def caller_digits(self, now: float, call_id: str, digits: str) -> list[Effect]:
        call = self._live_call(call_id)
        if not digits or len(digits) > 32 or not set(digits) <= set("0123456789*#"):
            raise InvalidArgument("bad-digits", "digits: 1 to 32 of 0-9 * #")
        fx = _Effects(self.site_id, self.journaling)
        if call.state != CallState.IVR:
            # Digits outside the menu are heard by nobody; record them for the history.
            fx.journal(call, EventKind.DIGITS, now, data=(("digits", digits), ("ignored", "true")))
            return fx.items
        fx.journal(call, EventKind.DIGITS, now, data=(("digits", digits),))
        group = self._ivr_choices.get(digits[0])
        call.attached["ivr_choice"] = digits[0]
        self._release_ivr(call)
        self._enqueue(
            call,
            group or self.site.ivr.default_skill_group,
            now,
            fx,
            reason="" if group else "unknown-choice",
        )
        self._dispatch(now, fx)
        return fx.items

    def _ivr_expired(self, call_id: str, now: float, fx: _Effects) -> None:
        call = self.calls.get(call_id)
        if call is None or call.state != CallState.IVR:
            return
        self._release_ivr(call)
        self._enqueue(call, self.site.ivr.default_skill_group, now, fx, reason="no-digit")

    def customer_found(self, now: float, call_id: str, customer: CustomerInfo | None) -> list[Effect]:
        """The look-up answered (None: no record, or central unreachable)."""
        fx = _Effects(self.site_id, self.journaling)
        self._customer_resolved(call_id, customer, now, fx)
        self._dispatch(now, fx)
        return fx.items

    def _customer_resolved(
        self, call_id: str, customer: CustomerInfo | None, now: float, fx: _Effects
    ) -> None:
        call = self.calls.get(call_id)
        if call is None or not call.customer_pending:
            return
        call.customer_pending = False
        call.customer = customer
        if call.parked:
            call.parked = False
            self.acd.enqueue(call.call_id, call.skill_group, call.arrived_at, call.priority)
            self._waiting(call, now, fx)

    def caller_hang_up(self, now: float, call_id: str, reason: str = "caller-hung-up") -> list[Effect]:
        call = self._live_call(call_id)
        fx = _Effects(self.site_id, self.journaling)
        if call.state in (CallState.TALKING, CallState.HELD):
            fx.journal(call, EventKind.CALLER_HUNG_UP, now, agent_code=call.agent_code)
            self._end_agent_leg(call, now, fx, reason)
            self._end(call, Outcome.ANSWERED, reason, now, fx)
        else:
            if call.state == CallState.IVR:
                self._release_ivr(call)
            elif call.state == CallState.QUEUED:
                self.acd.dequeue(call.call_id)
            elif call.state == CallState.RINGING:
                self._withdraw_offer(call, now, fx, reason)
            fx.journal(call, EventKind.ABANDONED, now, skill_group=call.skill_group)
            self._end(call, Outcome.ABANDONED, reason, now, fx)
        self._dispatch(now, fx)
        return fx.items

    def _end(self, call: Call, outcome: Outcome, reason: str, now: float, fx: _Effects) -> None:
        call.state = CallState.ENDED
        call.outcome = outcome
        if outcome == Outcome.ANSWERED:
            pass  # counted at answer time
        elif outcome == Outcome.ABANDONED:
            self.counters.abandoned += 1
        elif outcome == Outcome.FAILED:
            self.counters.failed += 1
        self.trunks[call.trunk_group].release()
        fx.journal(
            call,
            EventKind.ENDED,
            now,
            outcome=outcome,
            agent_code=call.agent_code,
            skill_group=call.skill_group,
            data=(("reason", reason),),
        )
        fx.items.append(ToCaller(call.call_id, "ended", now, outcome=outcome, reason=reason))
        del self.calls[call.call_id]
        self._by_key.pop(call.idempotency_key, None)
        self._remember_ended(call, outcome)

    def _remember_ended(self, call: Call, outcome: Outcome) -> None:
        self._ended_keys[call.idempotency_key] = (call.call_id, outcome)
        self._ended_seq[call.call_id] = call.seq
        for memory in (self._ended_keys, self._ended_seq):
            if len(memory) > MAX_REMEMBERED_KEYS:
                # dicts keep insertion order: forget the oldest.
                del memory[next(iter(memory))]

    # Queueing and offering ------------------------------------------------------------------

    def _enqueue(self, call: Call, group: str, now: float, fx: _Effects, reason: str = "") -> None:
        call.state = CallState.QUEUED
        call.skill_group = group
        call.agent_code = ""
        if call.customer_pending:
            # Its place is kept by arrival time: it joins the ACD when the screen pop is ready.
            call.parked = True
            position = self.acd.waiting(group) + 1
        else:
            self.acd.enqueue(call.call_id, group, call.arrived_at, call.priority)
            position = self.acd.position(call.call_id)
            self._waiting(call, now, fx)
        data = (("reason", reason),) if reason else ()
        fx.journal(call, EventKind.QUEUED, now, skill_group=group, data=data)
        fx.items.append(
            ToCaller(
                call.call_id,
                "queued",
                now,
                skill_group=group,
                position=position,
                expected_wait_s=self.expected_wait(group, position),
            )
        )

    def _waiting(self, call: Call, now: float, fx: _Effects) -> None:
        """Hook: the call has just joined the ACD's queue."""

    def expected_wait(self, group: str, position: int) -> float:
        """Expected wait of the call at `position`; -1 when nobody is staffed for the group."""
        ewt = expected_wait_s(position, self.staffed[group], self.mean_handle_s[group])
        return ewt if ewt != float("inf") else -1.0

    def _dispatch(self, now: float, fx: _Effects) -> None:
        """Connect waiting calls with ready agents."""
        for match in self.acd.matches():
            self._ring(self.calls[match.call.call_id], match.agent_code, now, fx)

    def _ring(
        self, call: Call, code: str, now: float, fx: _Effects, data: tuple[tuple[str, str], ...] = ()
    ) -> None:
        """Offer the call to an agent the ACD (or a peer's offer) reserved."""
        agent = self.agents[code]
        self.agents[code] = fsm.transition(agent, fsm.Offer(call.call_id), now)
        call.state = CallState.RINGING
        call.agent_code = code
        if call.purpose == "transfer-consult":
            # The caller is on hold and hears nothing of this: history, not a ring of the call.
            data = (("stage", "consult-ringing"), ("from", call.from_agent_code), *data)
            fx.journal(
                call, EventKind.TRANSFERRED, now, agent_code=code, skill_group=call.skill_group, data=data
            )
        else:
            fx.journal(call, EventKind.RINGING, now, agent_code=code, skill_group=call.skill_group, data=data)
        if not call.guest_of:
            fx.items.append(ToCaller(call.call_id, "ringing", now, site_id=self.site_id, agent_code=code))
        fx.items.append(self._state_event(code, now))
        fx.items.append(
            ToAgent(
                code,
                "offered",
                now,
                call_id=call.call_id,
                ani=call.ani,
                dnis=call.dnis,
                skill_group=call.skill_group,
                entry_site_id=call.entry_site_id,
                attached=tuple(sorted(call.attached.items())),
                customer=call.customer,
                ring_timeout_s=self.site.ring_timeout_s,
                waited_s=now - call.arrived_at,
                purpose=call.purpose,
                from_agent_code=call.from_agent_code,
            )
        )
        self._arm(now + self.site.ring_timeout_s, "ring", call.call_id, code)

    def _ring_expired(self, call_id: str, agent_code: str, now: float, fx: _Effects) -> None:
        call = self.calls.get(call_id)
        if call is None or call.state != CallState.RINGING or call.agent_code != agent_code:
            return
        self.counters.ring_no_answer += 1
        fx.journal(call, EventKind.RING_NO_ANSWER, now, agent_code=agent_code)
        self._set_agent(agent_code, fsm.RingTimeout(), now, fx)
        fx.items.append(ToAgent(agent_code, "withdrawn", now, call_id=call_id, reason="no-answer"))
        self._enqueue(call, call.skill_group, now, fx, reason="ring-no-answer")

    def _withdraw_offer(self, call: Call, now: float, fx: _Effects, reason: str) -> None:
        code = call.agent_code
        fx.items.append(ToAgent(code, "withdrawn", now, call_id=call.call_id, reason=reason))
        self._set_agent(code, fsm.OfferWithdrawn(), now, fx)

    # Agent side -----------------------------------------------------------------------------

    def agent(self, code: str) -> Agent:
        agent = self.agents.get(code)
        if agent is None:
            raise NotFound("unknown-agent", f"agent_code: no agent {code!r} at site {self.site_id}")
        return agent

    def _set_agent(self, code: str, event: fsm.AgentEvent, now: float, fx: _Effects) -> Agent:
        before = self.agents[code]
        try:
            after = fsm.transition(before, event, now)
        except fsm.IllegalTransition as exc:
            raise FailedPrecondition("wrong-agent-state", str(exc)) from None
        self.agents[code] = after
        logged_in = after.state != AgentState.LOGGED_OUT
        if logged_in != (before.state != AgentState.LOGGED_OUT):
            for group in self.skills[code]:
                self.staffed[group] += 1 if logged_in else -1
        if after.state == AgentState.READY:
            if not self.acd.is_ready(code) or before.state != AgentState.READY:
                self.acd.agent_ready(code, self._standing(after))
        else:
            self.acd.agent_unavailable(code)
        if (after.state, after.reason) != (before.state, before.reason):
            fx.items.append(self._state_event(code, now))
        if after.state == AgentState.WRAP_UP and after.wrap_up_until is not None:
            self._arm(after.wrap_up_until, "wrap", code, str(after.calls_handled))
        return after

    @staticmethod
    def _standing(agent: Agent) -> Standing:
        return Standing(agent.idle_since, agent.last_offered_at)

    def _state_event(self, code: str, now: float) -> ToAgent:
        a = self.agents[code]
        return ToAgent(code, "state", now, call_id=a.call_id, reason=a.reason)

    def login(self, now: float, code: str) -> list[Effect]:
        """Credentials are checked by the adapter (slow hash) before this is called."""
        agent = self.agent(code)
        if agent.state != AgentState.LOGGED_OUT:
            raise AlreadyExists("already-logged-in", f"agent {code} is already logged in")
        fx = _Effects(self.site_id, self.journaling)
        self._set_agent(code, fsm.LogIn(), now, fx)
        return fx.items

    def logout(self, now: float, code: str) -> list[Effect]:
        agent = self.agent(code)
        if agent.state not in fsm.LOGGED_IN_IDLE:
            raise FailedPrecondition("agent-busy", f"agent {code} is {agent.state}: finish the call first")
        fx = _Effects(self.site_id, self.journaling)
        self._set_agent(code, fsm.LogOut(), now, fx)
        self._desktop_attached.pop(code, None)
        return fx.items

    def set_ready(self, now: float, code: str, ready: bool, reason: str = "") -> list[Effect]:
        self._logged_in(code)
        _check_reason(ready, reason)
        fx = _Effects(self.site_id, self.journaling)
        self._set_agent(code, fsm.SetReady() if ready else fsm.SetNotReady(reason), now, fx)
        self._dispatch(now, fx)
        return fx.items

    def end_wrap_up(self, now: float, code: str, ready: bool, reason: str = "") -> list[Effect]:
        self._logged_in(code)
        _check_reason(ready, reason)
        fx = _Effects(self.site_id, self.journaling)
        self._set_agent(code, fsm.EndWrapUp(ready, reason), now, fx)
        self._dispatch(now, fx)
        return fx.items

    def _wrap_up_expired(self, code: str, token: str, now: float, fx: _Effects) -> None:
        agent = self.agents[code]
        if agent.state == AgentState.WRAP_UP and str(agent.calls_handled) == token:
            self._set_agent(code, fsm.EndWrapUp(None), now, fx)

    def _agent_call(self, code: str, call_id: str) -> Call:
        self._logged_in(code)
        call = self.calls.get(call_id)
        if call is None:
            raise NotFound("unknown-call", f"call_id: no live call {call_id!r} at site {self.site_id}")
        if call.agent_code != code:
            raise FailedPrecondition("not-your-call", f"call {call_id} is not with agent {code}")
        return call

    def answer(self, now: float, code: str, call_id: str) -> list[Effect]:
        call = self._agent_call(code, call_id)
        if call.state != CallState.RINGING:
            raise FailedPrecondition("call-not-ringing", f"call {call_id} is {call.state}, not ringing")
        fx = _Effects(self.site_id, self.journaling)
        self._connect(call, now, fx)
        self.counters.answered += 1
        return fx.items

    def _connect(self, call: Call, now: float, fx: _Effects) -> None:
        code = call.agent_code
        self._set_agent(code, fsm.Answer(), now, fx)
        call.state = CallState.TALKING
        call.answered_at = now
        if call.purpose == "transfer-consult":
            fx.journal(
                call, EventKind.TRANSFERRED, now, agent_code=code, data=(("stage", "consult-connected"),)
            )
        else:
            fx.journal(call, EventKind.ANSWERED, now, agent_code=code, skill_group=call.skill_group)
        if not call.guest_of:
            fx.items.append(ToCaller(call.call_id, "connected", now, site_id=self.site_id, agent_code=code))
        fx.items.append(ToAgent(code, "connected", now, call_id=call.call_id))

    def hold(self, now: float, code: str, call_id: str, hold: bool) -> list[Effect]:
        call = self._agent_call(code, call_id)
        want = CallState.TALKING if hold else CallState.HELD
        if call.state != want:
            raise FailedPrecondition("wrong-call-state", f"call {call_id} is {call.state}")
        fx = _Effects(self.site_id, self.journaling)
        self._set_agent(code, fsm.Hold() if hold else fsm.Retrieve(), now, fx)
        call.state = CallState.HELD if hold else CallState.TALKING
        kind = "held" if hold else "retrieved"
        fx.journal(call, EventKind.HELD if hold else EventKind.RETRIEVED, now, agent_code=code)
        if not call.guest_of:
            fx.items.append(ToCaller(call_id, kind, now))
        fx.items.append(ToAgent(code, kind, now, call_id=call_id))
        return fx.items

    def agent_hang_up(self, now: float, code: str, call_id: str) -> list[Effect]:
        call = self._agent_call(code, call_id)
        if call.state not in (CallState.TALKING, CallState.HELD):
            raise FailedPrecondition("call-not-connected", f"call {call_id} is {call.state}, not connected")
        fx = _Effects(self.site_id, self.journaling)
        fx.journal(call, EventKind.AGENT_HUNG_UP, now, agent_code=code)
        self._end_agent_leg(call, now, fx, "agent-hung-up")
        self._end(call, Outcome.ANSWERED, "agent-hung-up", now, fx)
        self._dispatch(now, fx)
        return fx.items

    def _end_agent_leg(self, call: Call, now: float, fx: _Effects, reason: str) -> None:
        code = call.agent_code
        if call.answered_at is not None:
            group = call.skill_group
            self.mean_handle_s[group] = smoothed(self.mean_handle_s[group], now - call.answered_at)
        wrap = self.site.wrap_up_s
        fx.items.append(ToAgent(code, "ended", now, call_id=call.call_id, reason=reason, wrap_up_s=wrap))
        self._set_agent(code, fsm.CallEnded(wrap), now, fx)

    # Desktops -------------------------------------------------------------------------------

    def desktop_attached(self, code: str) -> None:
        self._desktop_attached[code] = self._desktop_attached.get(code, 0) + 1

    def desktop_detached(self, now: float, code: str) -> None:
        left = self._desktop_attached.get(code, 0) - 1
        if left > 0:
            self._desktop_attached[code] = left
            return
        self._desktop_attached.pop(code, None)
        self._detaches[code] = self._detaches.get(code, 0) + 1
        if self.agents[code].state != AgentState.LOGGED_OUT:
            self._arm(now + self.site.desktop_grace_s, "desktop", code, str(self._detaches[code]))

    def _desktop_expired(self, code: str, token: str, now: float, fx: _Effects) -> None:
        agent = self.agents[code]
        stale = token != str(self._detaches.get(code))  # an earlier absence: a later one has its own timer
        if stale or code in self._desktop_attached or agent.state == AgentState.LOGGED_OUT:
            return
        if agent.state in fsm.LOGGED_IN_IDLE:
            # Nobody is at the desk: take the agent out of routing so no caller rings there.
            self._set_agent(code, fsm.LogOut(), now, fx)
        else:
            # Busy: the call ends on its own (caller, ring timeout or wrap-up); look again later.
            self._arm(now + self.site.desktop_grace_s, "desktop", code, token)

    def _logged_in(self, code: str) -> Agent:
        agent = self.agent(code)
        if agent.state == AgentState.LOGGED_OUT:
            raise FailedPrecondition("not-logged-in", f"agent {code} is not logged in")
        return agent

    def _live_call(self, call_id: str) -> Call:
        call = self.calls.get(call_id)
        if call is None:
            raise NotFound("unknown-call", f"call_id: no live call {call_id!r} at site {self.site_id}")
        return call

    # Shutdown -------------------------------------------------------------------------------

    def shutdown(self, now: float) -> list[Effect]:
        """The site is stopping: every call still here ends as failed, its record kept."""
        fx = _Effects(self.site_id, self.journaling)
        for call in list(self.calls.values()):
            if call.state == CallState.QUEUED:
                self.acd.dequeue(call.call_id)
            elif call.state == CallState.IVR:
                self._release_ivr(call)
            if call.state in (CallState.RINGING, CallState.TALKING, CallState.HELD):
                code = call.agent_code
                fx.items.append(ToAgent(code, "ended", now, call_id=call.call_id, reason="site-shutdown"))
                agent = self.agents[code]
                self.agents[code] = replace(
                    agent, state=AgentState.NOT_READY, reason="site-shutdown", call_id=""
                )
            outcome = Outcome.ANSWERED if call.answered_at is not None else Outcome.FAILED
            self._end(call, outcome, "site-shutdown", now, fx)
        return fx.items

    # Live figures ---------------------------------------------------------------------------

    def agents_by_state(self) -> Counter[str]:
        return Counter(str(a.state) for a in self.agents.values())

    def oldest_wait_s(self, group: str, now: float) -> float:
        oldest = self.acd.oldest_arrival(group)
        return 0.0 if oldest is None else now - oldest


def _check_reason(ready: bool, reason: str) -> None:
    if not ready and not reason:
        raise InvalidArgument("reason-required", "reason_code: required for not ready")
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidArgument("bad-reason-code", f"reason_code: at most {MAX_REASON_LENGTH} characters")
