"""Supervision under random traffic: the switchboard's state machine (test_switchboard_stateful)
with a group leader who monitors, whispers, barges in, intercepts and forces states at random,
supervision followed after every operation as the runtime does. Every invariant of the plain
machine still holds, and so do supervision's own: a supervised call is connected to the agent
it was taken on, its supervisor logged in and free; every supervision is journaled on the call."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, rule

from routing.agents import LOGGED_IN_IDLE, ON_CALL, AgentState
from site_node.callcontrol import Switchboard
from site_node.callcontrol.domain import CallState, Effect, EventKind
from tests.site_node import test_switchboard_stateful as plain
from tests.site_node.test_switchboard import FAKE_HASH, SERVICE, sequential_ids, site_config
from vcc.errors import PermissionDenied

LEADER = "0900"
TEAM = ["0101", "0102", "0202"]  # the agents skilled in general (the group the leader leads)
OUTSIDE = ["0201"]


class SupervisedMachine(plain.SwitchboardMachine):
    @initialize(
        wrap_up_s=st.sampled_from([0.0, 5.0]),
        ivr_ports=st.sampled_from([1, 3]),
        ready_at_start=st.sets(st.sampled_from(plain.AGENTS)),
    )
    def start(self, wrap_up_s: float, ivr_ports: int, ready_at_start: set[str]) -> None:
        site = plain.traffic_site(wrap_up_s, ivr_ports)
        site["agents"].append(
            {"code": LEADER, "password_hash": FAKE_HASH, "skills": {"general": 1}, "role": "group_leader",
             "leads": ["general"]}
        )  # fmt: skip
        # Calls whose journal shows a supervisor's part (a mode or an intercept).
        self.supervised_calls: set[str] = set()
        super().start(wrap_up_s, ivr_ports, set())
        self.sb = Switchboard(site_config(**site), SERVICE, new_call_id=sequential_ids())
        for code in sorted(ready_at_start):
            self.apply(self.sb.login(self.now, code))
            self.apply(self.sb.set_ready(self.now, code, True))
        # The leader starts the day at the console (it may log out and in again).
        self.apply(self.sb.login(self.now, LEADER))

    def apply(self, effects: list[Effect]) -> None:
        if self.sb.supervising:
            effects = effects + self.sb.follow_supervision(self.now)
        super().apply(effects)
        for call_id, events in self.history.items():
            if any(e.kind in (EventKind.SUPERVISED, EventKind.INTERCEPTED) for e in events):
                self.supervised_calls.add(call_id)

    # The group leader ---------------------------------------------------------------------------

    @rule(ready=st.booleans(), out=st.booleans())
    def leader_desk(self, ready: bool, out: bool) -> None:
        state = self.sb.agents[LEADER].state
        if state == AgentState.LOGGED_OUT:
            self.refused_without_change(lambda: self.sb.login(self.now, LEADER))
        elif out:
            self.refused_without_change(lambda: self.sb.logout(self.now, LEADER))
        elif state == AgentState.WRAP_UP:
            self.refused_without_change(
                lambda: self.sb.end_wrap_up(self.now, LEADER, ready, "" if ready else "x")
            )
        elif state in ON_CALL:
            call_id = self.sb.agents[LEADER].call_id
            if state == AgentState.RINGING:
                self.refused_without_change(lambda: self.sb.answer(self.now, LEADER, call_id))
            else:
                self.refused_without_change(lambda: self.sb.agent_hang_up(self.now, LEADER, call_id))
        else:
            self.refused_without_change(
                lambda: self.sb.set_ready(self.now, LEADER, ready, "" if ready else "x")
            )

    @rule(code=st.sampled_from(TEAM))
    def team_call(self, code: str) -> None:
        """A busy moment for the team: an agent gets ready, a general call comes in and is answered."""
        sb, now = self.sb, self.now
        if sb.agents[code].state == AgentState.LOGGED_OUT:
            self.apply(sb.login(now, code))
        if sb.agents[code].state in LOGGED_IN_IDLE:
            self.apply(sb.set_ready(now, code, True))
        self.offer(trunk="", look_up="now", pre_routed=False, press="2")
        for agent in TEAM:
            if sb.agents[agent].state == AgentState.RINGING:
                self.apply(sb.answer(now, agent, sb.agents[agent].call_id))

    @rule(
        data=st.data(),
        action=st.sampled_from(["monitor", "whisper", "barge", "intercept", "leave"]),
    )
    def supervise(self, data: st.DataObject, action: str) -> None:
        sb, now = self.sb, self.now
        # Mostly an agent on a call (the interesting case), sometimes anyone.
        talking = [a for a in TEAM + OUTSIDE if sb.agents[a].state in (AgentState.TALKING, AgentState.HELD)]
        agent = data.draw(
            st.sampled_from(talking if talking and data.draw(st.booleans()) else TEAM + OUTSIDE)
        )
        actions: dict[str, Any] = {
            "intercept": lambda: sb.intercept(now, LEADER, agent),
            "leave": lambda: sb.leave_supervision(now, LEADER),
        }
        err = self.refused_without_change(
            actions.get(action, lambda: sb.supervise(now, LEADER, agent, action))
        )
        event(f"{action}: {'done' if err is None else err.error_id}")
        if agent in OUTSIDE and action != "leave":
            assert isinstance(err, PermissionDenied)

    @rule(
        agent=st.sampled_from(TEAM + OUTSIDE + [LEADER]),
        action=st.sampled_from(["ready", "not_ready", "logout"]),
    )
    def force(self, agent: str, action: str) -> None:
        sb, now = self.sb, self.now
        was = sb.agents[agent]
        actions: dict[str, Any] = {
            "ready": lambda: sb.force_state(now, LEADER, agent, True),
            "not_ready": lambda: sb.force_state(now, LEADER, agent, False, "meeting"),
            "logout": lambda: sb.force_logout(now, LEADER, agent),
        }
        err = self.refused_without_change(actions[action])
        if agent not in TEAM:
            assert isinstance(err, PermissionDenied)
        elif err is None and action == "logout" and was.state in LOGGED_IN_IDLE:
            assert sb.agents[agent].state == AgentState.LOGGED_OUT

    @rule(code=st.sampled_from(plain.AGENTS))
    def agent_tries_to_supervise(self, code: str) -> None:
        err = self.refused_without_change(lambda: self.sb.supervise(self.now, code, LEADER, "monitor"))
        assert isinstance(err, PermissionDenied)

    # Invariants ---------------------------------------------------------------------------------

    @invariant()
    def supervision_is_consistent(self) -> None:
        part = self.sb.supervision
        assert len(part.by_call) == len(part.by_supervisor) <= 1
        for call_id, s in part.by_call.items():
            call = self.sb.calls[call_id]
            assert call.agent_code == s.agent_code and s.agent_code in TEAM
            assert call.state in (CallState.TALKING, CallState.HELD)
            assert self.sb.agents[s.supervisor].state in LOGGED_IN_IDLE
            # The journal says who supervises, in which mode, last.
            last = [
                e
                for e in self.history[call_id]
                if e.kind in (EventKind.SUPERVISED, EventKind.SUPERVISION_ENDED)
            ]
            assert last and last[-1].kind == EventKind.SUPERVISED
            assert dict(last[-1].data)["mode"] == s.mode
        for agent in part.pending_logout:
            assert self.sb.agents[agent].state not in LOGGED_IN_IDLE

    @invariant()
    def an_intercepted_call_is_the_leaders(self) -> None:
        leader = self.sb.agents[LEADER]
        if leader.state in (AgentState.TALKING, AgentState.HELD):
            call = self.sb.calls[leader.call_id]
            assert call.agent_code == LEADER

    def teardown(self) -> None:
        if not hasattr(self, "sb"):
            return
        # The leader finishes any call and stops taking calls; the plain machine's liveness follows.
        for _ in range(8):
            leader = self.sb.agents[LEADER]
            if leader.state == AgentState.RINGING:
                self.apply(self.sb.answer(self.now, LEADER, leader.call_id))
            elif leader.state in (AgentState.TALKING, AgentState.HELD):
                self.apply(self.sb.agent_hang_up(self.now, LEADER, leader.call_id))
            elif leader.state == AgentState.WRAP_UP:
                self.apply(self.sb.end_wrap_up(self.now, LEADER, False, "done"))
            elif leader.state == AgentState.READY:
                self.apply(self.sb.set_ready(self.now, LEADER, False, "done"))
        super().teardown()


SupervisedMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSupervisedMachine = SupervisedMachine.TestCase
