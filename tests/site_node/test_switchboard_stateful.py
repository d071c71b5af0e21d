"""The switchboard under random traffic: a Hypothesis state machine that offers calls, presses
digits, hangs up, drives agents through their whole day, lets time run out on every timer, and
after every step checks that calls, agents, trunks, queues, counters and the journal agree.

Teardown proves liveness: with every agent logged in and answering, every call gets served.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from routing.agents import LOGGED_IN_IDLE, ON_CALL, AgentState
from site_node.callcontrol import Switchboard
from site_node.callcontrol.domain import (
    CallState,
    CustomerInfo,
    Effect,
    EventKind,
    Journal,
    Outcome,
    RecordedEvent,
    ToAgent,
    ToCaller,
)
from tests.site_node.test_switchboard import FAKE_HASH, SERVICE, sequential_ids, site_config, snapshot
from vcc.errors import AlreadyExists, FailedPrecondition, VccError

SKILLS: dict[str, dict[str, int]] = {
    "0101": {"general": 5},
    "0102": {"general": 3, "billing": 7},
    "0201": {"billing": 5, "vip": 2},
    "0202": {"vip": 9, "general": 1},
}
AGENTS = sorted(SKILLS)
GROUPS = ["general", "billing", "vip"]
AGENT_CALL_STATE = {
    AgentState.RINGING: CallState.RINGING,
    AgentState.TALKING: CallState.TALKING,
    AgentState.HELD: CallState.HELD,
}
CUSTOMER = CustomerInfo("cust-1", "Chen Jing", "13800000000")


def traffic_site(wrap_up_s: float, ivr_ports: int) -> dict[str, Any]:
    return {
        # Five channels in all, so a burst of offers runs the trunks out.
        "trunk_groups": [{"id": "pstn", "channels": 3}, {"id": "backup", "channels": 2}],
        "boards": [{"id": "ivr", "kind": "ivr", "channels": ivr_ports}],
        "skill_groups": [
            {"id": "general", "strategy": "longest_idle"},
            {"id": "billing", "strategy": "most_skilled", "priority": 1},
            {"id": "vip", "strategy": "round_robin", "priority": 2},
        ],
        "agents": [{"code": c, "password_hash": FAKE_HASH, "skills": s} for c, s in SKILLS.items()],
        "ivr": {
            "choices": [
                {"digit": "1", "skill_group": "billing"},
                {"digit": "2", "skill_group": "general"},
                {"digit": "3", "skill_group": "vip"},
            ],
            "digit_timeout_s": 5,
            "default_skill_group": "general",
        },
        "ring_timeout_s": 10,
        "wrap_up_s": wrap_up_s,
        "desktop_grace_s": 30,
    }


class SwitchboardMachine(RuleBasedStateMachine):
    @initialize(
        wrap_up_s=st.sampled_from([0.0, 5.0]),
        ivr_ports=st.sampled_from([1, 3]),
        ready_at_start=st.sets(st.sampled_from(AGENTS)),
    )
    def start(self, wrap_up_s: float, ivr_ports: int, ready_at_start: set[str]) -> None:
        self.sb = Switchboard(
            site_config(**traffic_site(wrap_up_s, ivr_ports)), SERVICE, new_call_id=sequential_ids()
        )
        self.now = 0.0
        self.keys = 0
        # Every call id the trunk side was given, blocked ones included, and their keys.
        self.offered: dict[str, str] = {}
        self.history: dict[str, list[RecordedEvent]] = defaultdict(list)
        self.caller_ended: Counter[str] = Counter()
        # Some agents start the day ready, so that calls ring from the first steps.
        for code in sorted(ready_at_start):
            self.apply(self.sb.login(self.now, code))
            self.apply(self.sb.set_ready(self.now, code, True))

    # Bookkeeping ------------------------------------------------------------------------------

    def apply(self, effects: list[Effect]) -> None:
        """Record what one operation did, checking what can only be seen in its effects."""
        offered_now: list[ToAgent] = []
        for e in effects:
            if isinstance(e, Journal):
                ev = e.event
                past = self.history[ev.call_id]
                assert ev.site_id == "gz"
                # Per call, 1, 2, 3... with no gap, and nothing after the end.
                assert ev.seq == len(past) + 1, (ev, past)
                assert not past or past[-1].kind != EventKind.ENDED, (ev, past)
                past.append(ev)
            elif isinstance(e, ToCaller) and e.kind == "ended":
                self.caller_ended[e.call_id] += 1
            elif isinstance(e, ToAgent) and e.kind == "offered":
                offered_now.append(e)
        for o in offered_now:
            # Offered only for a group the agent is skilled in; still ringing it when the operation returns.
            assert o.skill_group in self.sb.skills[o.agent_code], o
            agent = self.sb.agents[o.agent_code]
            assert (agent.state, agent.call_id) == (AgentState.RINGING, o.call_id), (o, agent)

    def refused_without_change(self, action: Any) -> VccError | None:
        """Run an action that may be refused; a refusal must leave everything as it was."""
        before = snapshot(self.sb)
        try:
            fx = action()
        except VccError as exc:
            assert snapshot(self.sb) == before, exc
            return exc
        self.apply(fx)
        return None

    def live(self, *states: CallState) -> list[str]:
        return sorted(c.call_id for c in self.sb.calls.values() if not states or c.state in states)

    def agents_in(self, *states: AgentState) -> list[str]:
        return [code for code in AGENTS if self.sb.agents[code].state in states]

    def new_key(self) -> str:
        self.keys += 1
        return f"key-{self.keys}"

    # Trunk side -------------------------------------------------------------------------------

    @rule(
        trunk=st.sampled_from(["", "", "pstn", "backup"]),
        look_up=st.sampled_from(["now", "now", "later"]),
        pre_routed=st.booleans(),
        press=st.sampled_from(["", "1", "2", "3"]),
    )
    def offer(self, trunk: str, look_up: str, pre_routed: bool, press: str) -> None:
        """A call arrives; `later` leaves the look-up to its timeout or customer_found; a caller who
        knows the menu presses at once."""
        key = self.new_key()
        call_id, fx = self.sb.offer(
            self.now,
            idempotency_key=key,
            ani="13800000000",
            dnis=SERVICE,
            trunk_group=trunk,
            call_id=f"pre-{self.keys}" if pre_routed else "",
        )
        assert call_id not in self.offered
        if pre_routed:
            assert call_id == f"pre-{self.keys}"
        self.offered[call_id] = key
        self.apply(fx)
        if look_up == "now":
            self.apply(self.sb.customer_found(self.now, call_id, CUSTOMER))
        if press and call_id in self.sb.calls:
            self.apply(self.sb.caller_digits(self.now, call_id, press))

    @rule(data=st.data(), customer=st.sampled_from([CUSTOMER, None]))
    def customer_found(self, data: st.DataObject, customer: CustomerInfo | None) -> None:
        calls = [*self.live(), "nope"]
        self.apply(self.sb.customer_found(self.now, data.draw(st.sampled_from(calls)), customer))

    @precondition(lambda self: self.offered)
    @rule(data=st.data())
    def offer_again_with_a_used_key(self, data: st.DataObject) -> None:
        if not self.offered:
            return
        call_id = data.draw(st.sampled_from(sorted(self.offered)))
        key = self.offered[call_id]
        err = self.refused_without_change(
            lambda: self.sb.offer(self.now, idempotency_key=key, ani="1", dnis=SERVICE)
        )
        assert isinstance(err, AlreadyExists)
        assert self.sb.call_for_key(key) == call_id

    @precondition(lambda self: self.sb.calls)
    @rule(data=st.data(), digits=st.sampled_from(["1", "2", "3", "9", "*", "21"]))
    def caller_digits(self, data: st.DataObject, digits: str) -> None:
        calls = self.live()
        if calls:
            self.apply(self.sb.caller_digits(self.now, data.draw(st.sampled_from(calls)), digits))

    @precondition(lambda self: self.sb.calls)
    @rule(data=st.data())
    def caller_hang_up(self, data: st.DataObject) -> None:
        calls = self.live()
        if calls:
            self.apply(self.sb.caller_hang_up(self.now, data.draw(st.sampled_from(calls))))

    # Agent side -------------------------------------------------------------------------------

    @rule(code=st.sampled_from(AGENTS), then_ready=st.booleans())
    def login(self, code: str, then_ready: bool) -> None:
        was_out = self.sb.agents[code].state == AgentState.LOGGED_OUT
        err = self.refused_without_change(lambda: self.sb.login(self.now, code))
        assert (err is None) == was_out
        if err is not None:
            assert isinstance(err, AlreadyExists)
        elif then_ready:
            self.apply(self.sb.set_ready(self.now, code, True))

    @rule(code=st.sampled_from(AGENTS), ready=st.booleans())
    def set_ready(self, code: str, ready: bool) -> None:
        was_out = self.sb.agents[code].state == AgentState.LOGGED_OUT
        reason = "" if ready else "lunch"
        err = self.refused_without_change(lambda: self.sb.set_ready(self.now, code, ready, reason))
        assert (err is None) != was_out
        if err is not None:
            assert isinstance(err, FailedPrecondition)

    @rule(code=st.sampled_from(AGENTS))
    def logout(self, code: str) -> None:
        idle = self.sb.agents[code].state in LOGGED_IN_IDLE
        err = self.refused_without_change(lambda: self.sb.logout(self.now, code))
        assert (err is None) == idle

    @precondition(lambda self: self.agents_in(AgentState.RINGING))
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        ringing = self.agents_in(AgentState.RINGING)
        if ringing:
            code = data.draw(st.sampled_from(ringing))
            self.apply(self.sb.answer(self.now, code, self.sb.agents[code].call_id))

    @precondition(lambda self: self.agents_in(AgentState.TALKING, AgentState.HELD))
    @rule(data=st.data())
    def hold_or_retrieve(self, data: st.DataObject) -> None:
        busy = self.agents_in(AgentState.TALKING, AgentState.HELD)
        if busy:
            code = data.draw(st.sampled_from(busy))
            agent = self.sb.agents[code]
            self.apply(self.sb.hold(self.now, code, agent.call_id, agent.state == AgentState.TALKING))

    @precondition(lambda self: self.agents_in(AgentState.TALKING, AgentState.HELD))
    @rule(data=st.data())
    def agent_hang_up(self, data: st.DataObject) -> None:
        busy = self.agents_in(AgentState.TALKING, AgentState.HELD)
        if busy:
            code = data.draw(st.sampled_from(busy))
            self.apply(self.sb.agent_hang_up(self.now, code, self.sb.agents[code].call_id))

    @precondition(lambda self: self.agents_in(AgentState.RINGING, AgentState.TALKING, AgentState.HELD))
    @rule()
    def every_desk_works(self) -> None:
        """A busy moment: every ringing agent answers, every connected one finishes its call."""
        for code in AGENTS:
            agent = self.sb.agents[code]
            if agent.state == AgentState.RINGING:
                self.apply(self.sb.answer(self.now, code, agent.call_id))
            elif agent.state in (AgentState.TALKING, AgentState.HELD):
                self.apply(self.sb.agent_hang_up(self.now, code, agent.call_id))

    @precondition(lambda self: self.agents_in(AgentState.WRAP_UP))
    @rule(data=st.data(), ready=st.booleans())
    def end_wrap_up(self, data: st.DataObject, ready: bool) -> None:
        wrapping = self.agents_in(AgentState.WRAP_UP)
        if wrapping:
            code = data.draw(st.sampled_from(wrapping))
            self.apply(self.sb.end_wrap_up(self.now, code, ready, "" if ready else "paperwork"))

    @rule(code=st.sampled_from(AGENTS), attach=st.booleans())
    def desktop(self, code: str, attach: bool) -> None:
        if attach:
            self.sb.desktop_attached(code)
        else:
            self.sb.desktop_detached(self.now, code)

    @rule(
        data=st.data(),
        action=st.sampled_from(["answer", "hold", "retrieve", "hang_up", "end_wrap_up", "logout", "login"]),
        code=st.sampled_from([*AGENTS, "9999"]),
    )
    def any_agent_action(self, data: st.DataObject, action: str, code: str) -> None:
        """Whatever an agent's desktop sends, in any state: done properly or refused with no change."""
        call_id = data.draw(st.sampled_from([*self.live(), *sorted(self.offered), "nope"]))
        sb, now = self.sb, self.now
        actions = {
            "answer": lambda: sb.answer(now, code, call_id),
            "hold": lambda: sb.hold(now, code, call_id, True),
            "retrieve": lambda: sb.hold(now, code, call_id, False),
            "hang_up": lambda: sb.agent_hang_up(now, code, call_id),
            "end_wrap_up": lambda: sb.end_wrap_up(now, code, True),
            "logout": lambda: sb.logout(now, code),
            "login": lambda: sb.login(now, code),
        }
        self.refused_without_change(actions[action])

    # Time -------------------------------------------------------------------------------------

    @rule(dt=st.sampled_from([0.2, 0.5, 1.0, 3.0, 5.0, 10.0, 30.0]))
    def time_passes(self, dt: float) -> None:
        self.advance(dt)

    def advance(self, dt: float) -> None:
        self.now += dt
        self.apply(self.sb.tick(self.now))
        nxt = self.sb.next_deadline()
        assert nxt is None or nxt > self.now

    # Invariants -------------------------------------------------------------------------------

    @invariant()
    def agents_and_calls_agree(self) -> None:
        sb = self.sb
        holders: Counter[str] = Counter()
        for code, agent in sb.agents.items():
            if agent.state in ON_CALL:
                call = sb.calls.get(agent.call_id)
                assert call is not None, agent
                assert call.agent_code == code, (agent, call)
                assert call.state == AGENT_CALL_STATE[agent.state], (agent, call)
                holders[agent.call_id] += 1
        # No agent holds two calls, and a connected or ringing call has exactly one agent.
        for call in sb.calls.values():
            if call.state in (CallState.RINGING, CallState.TALKING, CallState.HELD):
                assert holders[call.call_id] == 1, call
                assert (
                    sum(
                        1
                        for c in sb.calls.values()
                        if c.agent_code == call.agent_code
                        and c.state in (CallState.RINGING, CallState.TALKING, CallState.HELD)
                    )
                    == 1
                )
            else:
                assert holders[call.call_id] == 0, call
            assert call.state != CallState.ENDED

    @invariant()
    def resources_match_live_calls(self) -> None:
        sb = self.sb
        assert sum(p.busy for p in sb.trunks.values()) == len(sb.calls)
        for pool in [*sb.trunks.values(), *sb.boards.values()]:
            assert 0 <= pool.busy <= pool.total
        in_ivr = [c for c in sb.calls.values() if c.state == CallState.IVR]
        assert all(c.ivr_port for c in in_ivr)
        assert sb.boards["ivr"].busy == len(in_ivr)

    @invariant()
    def queues_match_calls_and_agents(self) -> None:
        sb = self.sb
        waiting = {c.call_id for c in sb.calls.values() if c.state == CallState.QUEUED and not c.parked}
        assert {cid for cid in sb.calls if sb.acd.queued(cid) is not None} == waiting
        assert sb.acd.total_waiting == len(waiting)
        for c in sb.calls.values():
            if c.parked:
                assert c.state == CallState.QUEUED and c.customer_pending
        for code, agent in sb.agents.items():
            assert sb.acd.is_ready(code) == (agent.state == AgentState.READY), agent
        # Nothing is left unmatched: no group has both a waiting call and a ready agent.
        for g in GROUPS:
            assert not (sb.acd.waiting(g) and sb.acd.ready_count(g)), g

    @invariant()
    def every_call_ends_exactly_once(self) -> None:
        for call_id in self.offered:
            ends = [e for e in self.history[call_id] if e.kind == EventKind.ENDED]
            if call_id in self.sb.calls:
                assert not ends and self.caller_ended[call_id] == 0
            else:
                assert len(ends) == 1 and self.history[call_id][-1] is ends[0]
                assert self.caller_ended[call_id] == 1
        assert set(self.history) <= set(self.offered)

    @invariant()
    def counters_add_up(self) -> None:
        c = self.sb.counters
        unanswered_live = sum(1 for call in self.sb.calls.values() if call.answered_at is None)
        assert c.offered == len(self.offered)
        assert c.offered == c.answered + c.abandoned + c.blocked + c.failed + unanswered_live
        events = [e for h in self.history.values() for e in h]
        outcomes = Counter(e.outcome for e in events if e.kind == EventKind.ENDED)
        assert c.answered == sum(1 for e in events if e.kind == EventKind.ANSWERED)
        assert c.abandoned == outcomes[Outcome.ABANDONED]
        assert c.blocked == outcomes[Outcome.BLOCKED]
        assert c.ring_no_answer == sum(1 for e in events if e.kind == EventKind.RING_NO_ANSWER)

    # Liveness -----------------------------------------------------------------------------------

    def teardown(self) -> None:
        if not hasattr(self, "sb"):
            return
        sb = self.sb
        for _ in range(200):
            if not sb.calls:
                break
            for code in AGENTS:
                state = sb.agents[code].state
                call_id = sb.agents[code].call_id
                if state == AgentState.LOGGED_OUT:
                    self.apply(sb.login(self.now, code))
                    self.apply(sb.set_ready(self.now, code, True))
                elif state == AgentState.NOT_READY:
                    self.apply(sb.set_ready(self.now, code, True))
                elif state == AgentState.WRAP_UP:
                    self.apply(sb.end_wrap_up(self.now, code, True))
                elif state == AgentState.RINGING:
                    self.apply(sb.answer(self.now, code, call_id))
                elif state in (AgentState.TALKING, AgentState.HELD):
                    self.apply(sb.agent_hang_up(self.now, code, call_id))
            self.agents_and_calls_agree()
            self.queues_match_calls_and_agents()
            self.advance(1.0)
        assert not sb.calls, sb.calls
        assert sb.acd.total_waiting == 0
        assert all(p.busy == 0 for p in [*sb.trunks.values(), *sb.boards.values()])
        self.every_call_ends_exactly_once()
        self.counters_add_up()


SwitchboardMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSwitchboardMachine = SwitchboardMachine.TestCase
