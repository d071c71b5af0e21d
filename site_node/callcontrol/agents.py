"""Agents and their states at this site (SPEC F16, F17): log in and out, ready and not ready with
a reason, wrap-up and its timer, and the desk that must stay attached for an agent to be routed.

The agent state machine itself is pure (routing/agents.py); this part applies it, keeps the ACD's
view of who is ready in step, and counts agents logged in per skill group.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import replace

from routing import agents as fsm
from routing.acd import Acd, Standing
from routing.agents import Agent, AgentState
from site_node.callcontrol.domain import ToAgent
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.limits import check_reason
from site_node.callcontrol.timers import Timers
from vcc.config import SiteConfig
from vcc.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound


class Agents:
    def __init__(self, site: SiteConfig, acd: Acd, timers: Timers) -> None:
        self.site = site
        self._acd = acd
        self._timers = timers
        self.agents: dict[str, Agent] = {}
        self.skills: dict[str, dict[str, int]] = {}
        for a in site.agents:
            self.agents[a.code] = Agent(a.code)
            self.skills[a.code] = dict(a.skills)
            acd.set_skills(a.code, a.skills)
        # Agents logged in per skill group (kept as agents log in and out: read on every enqueue).
        self.staffed = {g.id: 0 for g in site.skill_groups}
        self._desktop_attached: dict[str, int] = {}
        self._detaches: dict[str, int] = {}
        timers.on("wrap", self._wrap_up_expired)
        timers.on("desktop", self._desktop_expired)

    def agent(self, code: str) -> Agent:
        agent = self.agents.get(code)
        if agent is None:
            raise NotFound("unknown-agent", f"agent_code: no agent {code!r} at site {self.site.id}")
        return agent

    def logged_in(self, code: str) -> Agent:
        agent = self.agent(code)
        if agent.state == AgentState.LOGGED_OUT:
            raise FailedPrecondition("not-logged-in", f"agent {code} is not logged in")
        return agent

    def by_state(self) -> Counter[str]:
        return Counter(str(a.state) for a in self.agents.values())

    # Administration (SPEC F25): agents added and re-skilled while the site runs --------------

    def add(self, code: str, skills: Mapping[str, int]) -> None:
        """A new agent of this site, logged out."""
        if code in self.agents:
            raise AlreadyExists("agent-exists", f"agent {code} already exists at site {self.site.id}")
        self._check_groups(skills)
        self.agents[code] = Agent(code)
        self.skills[code] = dict(skills)
        self._acd.set_skills(code, skills)

    def set_skills(self, code: str, skills: Mapping[str, int]) -> None:
        """New skills and levels, in force at once: the staffed counts follow a logged-in agent, and
        a ready agent stands in the ACD of its new groups."""
        agent = self.agent(code)
        self._check_groups(skills)
        if agent.state != AgentState.LOGGED_OUT:
            for group in self.skills[code]:
                self.staffed[group] -= 1
            for group in skills:
                self.staffed[group] += 1
        self.skills[code] = dict(skills)
        self._acd.set_skills(code, skills)
        if agent.state == AgentState.READY:
            self._acd.agent_ready(code, standing(agent))

    def _check_groups(self, skills: Mapping[str, int]) -> None:
        if not skills:
            raise InvalidArgument("bad-skills", "skills: at least one skill group")
        for group, level in skills.items():
            if group not in self.staffed:
                raise InvalidArgument("unknown-skill-group", f"skills: no skill group {group!r} at this site")
            if not 1 <= level <= 10:
                raise InvalidArgument("bad-skill-level", f"skills.{group}: a level from 1 to 10")

    # Transitions ----------------------------------------------------------------------------

    def apply(self, code: str, event: fsm.AgentEvent, now: float, fx: Effects) -> Agent:
        """One transition of the agent's state machine, with what follows from it."""
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
            if not self._acd.is_ready(code) or before.state != AgentState.READY:
                self._acd.agent_ready(code, standing(after))
        else:
            self._acd.agent_unavailable(code)
        if (after.state, after.reason) != (before.state, before.reason):
            fx.add(self.state_event(code, now, type(event).__name__))
        if after.state == AgentState.WRAP_UP and after.wrap_up_until is not None:
            self._timers.arm(after.wrap_up_until, "wrap", code, str(after.calls_handled))
        return after

    def reserve(self, code: str, call_id: str, now: float) -> None:
        """The ACD (or a peer's offer, or a consultation) chose this agent for a call: it rings."""
        self.agents[code] = fsm.transition(self.agents[code], fsm.Offer(call_id), now)

    def unreserve(self, code: str) -> None:
        """A reservation that never rang (the offer could not go on): back in the ACD as it was."""
        self._acd.agent_ready(code, standing(self.agents[code]))

    def state_event(self, code: str, now: float, event: str = "Offer") -> ToAgent:
        """The desk's state update; `event` names what changed it (reservations are offers)."""
        a = self.agents[code]
        return ToAgent(
            code, "state", now, call_id=a.call_id, reason=a.reason, state=str(a.state), event=event
        )

    # Requests from the agent's desktop -------------------------------------------------------

    def login(self, now: float, code: str, fx: Effects) -> None:
        """Credentials are checked by the adapter (slow hash) before this is called."""
        if self.agent(code).state != AgentState.LOGGED_OUT:
            raise AlreadyExists("already-logged-in", f"agent {code} is already logged in")
        self.apply(code, fsm.LogIn(), now, fx)
        # A new session: an absence timer left by an earlier session's desk is stale.
        self._detaches[code] = self._detaches.get(code, 0) + 1

    def logout(self, now: float, code: str, fx: Effects) -> None:
        agent = self.agent(code)
        if agent.state not in fsm.LOGGED_IN_IDLE:
            raise FailedPrecondition("agent-busy", f"agent {code} is {agent.state}: finish the call first")
        self.apply(code, fsm.LogOut(), now, fx)
        self._desktop_attached.pop(code, None)

    def set_ready(self, now: float, code: str, ready: bool, reason: str, fx: Effects) -> None:
        self.logged_in(code)
        check_reason(ready, reason)
        self.apply(code, fsm.SetReady() if ready else fsm.SetNotReady(reason), now, fx)

    def end_wrap_up(self, now: float, code: str, ready: bool, reason: str, fx: Effects) -> None:
        self.logged_in(code)
        check_reason(ready, reason)
        self.apply(code, fsm.EndWrapUp(ready, reason), now, fx)

    def _wrap_up_expired(self, code: str, token: str, now: float, fx: Effects) -> None:
        agent = self.agents[code]
        if agent.state == AgentState.WRAP_UP and str(agent.calls_handled) == token:
            self.apply(code, fsm.EndWrapUp(None), now, fx)

    # Desks ----------------------------------------------------------------------------------

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
            self._timers.arm(now + self.site.desktop_grace_s, "desktop", code, str(self._detaches[code]))

    def _desktop_expired(self, code: str, token: str, now: float, fx: Effects) -> None:
        agent = self.agents[code]
        stale = token != str(self._detaches.get(code))  # an earlier absence: a later one has its own timer
        if stale or code in self._desktop_attached or agent.state == AgentState.LOGGED_OUT:
            return
        if agent.state in fsm.LOGGED_IN_IDLE:
            # Nobody is at the desk: take the agent out of routing so no caller rings there.
            self.apply(code, fsm.LogOut(), now, fx)
        else:
            # Busy: the call ends on its own (caller, ring timeout or wrap-up); look again later.
            self._timers.arm(now + self.site.desktop_grace_s, "desktop", code, token)

    def site_stopping(self, code: str) -> None:
        """The site stops under this agent's call: the desk is left not ready."""
        self.agents[code] = replace(
            self.agents[code], state=AgentState.NOT_READY, reason="site-shutdown", call_id=""
        )


def standing(agent: Agent) -> Standing:
    return Standing(agent.idle_since, agent.last_offered_at)
