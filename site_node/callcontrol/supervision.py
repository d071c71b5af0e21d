"""Supervision (SPEC F24, F25): a group leader monitors (silent), whispers (coaches the agent: the
caller does not hear), barges in (three-way) or intercepts (takes the call over: the agent leaves
to wrap-up, the leader talks to the caller); and forces an agent ready, not ready (with a reason)
or logged out (a busy agent: once the call and its wrap-up are over).

Who may act on whom is decided here, from the config's roles, so every adapter enforces the same
rule: a group leader acts on the agents (role agent) of the skill groups it leads, an administrator
on everyone else of the site, an agent on nobody. Every action is journaled on the call it touches (the
supervisor's part in the call's history at central) and returned as an Audit effect. The media
(forking, mixing) is asked for with SuperviseMedia; the SIP side carries it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from routing import agents as fsm
from routing.agents import AgentState
from site_node.callcontrol.agents import Agents
from site_node.callcontrol.calls import CallBook
from site_node.callcontrol.connected import CONNECTED, ConnectedCalls
from site_node.callcontrol.domain import Audit, Call, CallState, SuperviseMedia, ToAgent, ToCaller
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.limits import check_reason
from vcc import people
from vcc.call_events import EventKind
from vcc.config import SiteConfig
from vcc.errors import FailedPrecondition, InvalidArgument, PermissionDenied

Mode = Literal["monitor", "whisper", "barge"]
MODES: tuple[Mode, ...] = ("monitor", "whisper", "barge")
# The reason a ready leader is set not ready with while supervising (no caller rings there).
REASON_SUPERVISING = "supervising"
REASON_FORCED_LOGOUT = "forced-logout"


# Who hears whom on a supervised call's bridge (the SIP side mixes by it): the caller, the agent
# and the supervisor; nobody hears themselves. Monitor: the supervisor hears both, nobody hears
# the supervisor. Whisper: the agent hears the supervisor too, the caller does not. Barge-in: all.
_ALL: dict[str, tuple[str, ...]] = {
    "caller": ("agent", "supervisor"),
    "agent": ("caller", "supervisor"),
    "supervisor": ("caller", "agent"),
}
HEARS: dict[str, dict[str, tuple[str, ...]]] = {
    "monitor": {"caller": ("agent",), "agent": ("caller",), "supervisor": ("caller", "agent")},
    "whisper": {"caller": ("agent",), "agent": ("caller", "supervisor"), "supervisor": ("caller", "agent")},
    "barge": _ALL,
}


def who_hears(mode: str) -> dict[str, tuple[str, ...]]:
    """The mix each party of a supervised call is sent, by the supervision's mode."""
    if mode not in HEARS:
        raise InvalidArgument("bad-supervision-mode", "mode: monitor, whisper or barge")
    return dict(HEARS[mode])


# A call's parties when nothing mixes them: the caller and the agent hear each other.
DIRECT: dict[str, tuple[str, ...]] = {"caller": ("agent",), "agent": ("caller",)}


def supervised_hears(base: dict[str, tuple[str, ...]], mode: str) -> dict[str, tuple[str, ...]]:
    """The mix of a call whose parties hear each other by `base` (DIRECT, or a consultation's or
    conference's CONSULT_HEARS), supervised over its agent: the supervisor hears the agent and
    whoever the agent hears; whisper: the agent hears the supervisor too; barge-in: so does
    everyone who hears the agent. `supervised_hears(DIRECT, mode) == who_hears(mode)`."""
    who_hears(mode)  # a bad mode is refused here too
    out = {party: tuple(heard) for party, heard in base.items()}
    out["supervisor"] = tuple(dict.fromkeys([*out.get("agent", ()), "agent"]))
    if mode in ("whisper", "barge"):
        out["agent"] = (*out.get("agent", ()), "supervisor")
    if mode == "barge":
        for party, heard in base.items():
            if party != "agent" and "agent" in heard:
                out[party] = (*out[party], "supervisor")
    return out


@dataclass(slots=True)
class Supervising:
    call_id: str
    supervisor: str
    agent_code: str
    mode: Mode


class Supervision:
    def __init__(self, site: SiteConfig, calls: CallBook, agents: Agents, connected: ConnectedCalls) -> None:
        self.site = site
        self._calls = calls
        self._agents = agents
        self._connected = connected
        self.roles = {a.code: a.role for a in site.agents}
        self.leads = {a.code: frozenset(a.leads) for a in site.agents}
        self.by_call: dict[str, Supervising] = {}
        self.by_supervisor: dict[str, Supervising] = {}
        # Agents a supervisor logged out while they were busy: out once the call is over.
        self.pending_logout: dict[str, str] = {}

    # Who may act on whom --------------------------------------------------------------------

    def team(self, leader: str) -> list[str]:
        """The agents `leader` may act on (in config order); raises for an agent."""
        self._check_role(leader)
        return [code for code in self._agents.agents if code != leader and self._leads(leader, code)]

    def check_may_act(self, leader: str, agent: str) -> None:
        self._check_role(leader)
        self._agents.agent(agent)
        if agent == leader or not self._leads(leader, agent):
            raise PermissionDenied(
                "not-your-team", f"agent {agent} is not in a skill group that {leader} leads"
            )

    def _check_role(self, leader: str) -> None:
        role = self.roles.get(leader, "agent")
        people.require(people.SUPERVISE, role, "not-a-supervisor", f"agent {leader} is not a group leader")

    def _leads(self, leader: str, agent: str) -> bool:
        if self.roles.get(leader) == "administrator":
            return True
        if self.roles.get(agent, "agent") != "agent":
            return False  # a group leader supervises agents, not other leaders or administrators
        return bool(self.leads.get(leader, frozenset()) & self._agents.skills[agent].keys())

    def _ready_supervisor(self, leader: str, agent: str) -> None:
        self.check_may_act(leader, agent)
        self._agents.logged_in(leader)

    # Listening, coaching, joining -----------------------------------------------------------

    def supervise(self, leader: str, agent: str, mode: str, now: float, fx: Effects) -> None:
        if mode not in MODES:
            raise InvalidArgument("bad-supervision-mode", "mode: monitor, whisper or barge")
        self._ready_supervisor(leader, agent)
        call = self._agent_call(agent)
        held = self.by_call.get(call.call_id)
        if held is not None and held.supervisor != leader:
            raise FailedPrecondition(
                "already-supervised", f"call {call.call_id} is supervised by {held.supervisor}"
            )
        mine = self.by_supervisor.get(leader)
        if mine is not None and mine.call_id != call.call_id:
            raise FailedPrecondition(
                "supervising-another-call", f"{leader} supervises call {mine.call_id}: leave it first"
            )
        if held is None:
            self._leader_free(leader, now, fx)
        elif held.mode == mode:
            return  # already so: nothing changes
        before = held.mode if held is not None else ""
        s = Supervising(call.call_id, leader, agent, mode)
        self.by_call[call.call_id] = s
        self.by_supervisor[leader] = s
        fx.journal(
            call, EventKind.SUPERVISED, now, agent_code=leader,
            data=(("supervisor", leader), ("agent", agent), ("mode", mode), ("from", before)),
        )  # fmt: skip
        fx.add(SuperviseMedia(call.call_id, mode, leader, agent))
        fx.add(ToAgent(leader, "supervision", now, call_id=call.call_id, stage=mode, other_agent_code=agent))
        # A silent monitor is not announced; whisper and barge-in are heard, so the agent is told.
        told = "ended" if mode == "monitor" and before in ("whisper", "barge") else mode
        if mode != "monitor" or told == "ended":
            fx.add(
                ToAgent(agent, "supervision", now, call_id=call.call_id, stage=told, other_agent_code=leader)
            )
        fx.add(Audit(now, leader, mode, agent, call.call_id, f"from {before}" if before else ""))

    def leave(self, leader: str, now: float, fx: Effects) -> None:
        s = self.by_supervisor.get(leader)
        if s is None:
            raise FailedPrecondition("not-supervising", f"{leader} supervises no call")
        self._end(s, "supervisor-left", now, fx)
        fx.add(Audit(now, leader, "leave", s.agent_code, s.call_id))

    def intercept(self, leader: str, agent: str, now: float, fx: Effects) -> None:
        self._ready_supervisor(leader, agent)
        call = self._agent_call(agent)
        if call.guest_of or call.consult is not None or call.remote is not None:
            raise FailedPrecondition(
                "cannot-intercept", f"call {call.call_id} is in a transfer or served for another site"
            )
        held = self.by_call.get(call.call_id)
        if held is not None and held.supervisor != leader:
            raise FailedPrecondition(
                "already-supervised", f"call {call.call_id} is supervised by {held.supervisor}"
            )
        mine = self.by_supervisor.get(leader)
        if mine is not None and mine.call_id != call.call_id:
            raise FailedPrecondition(
                "supervising-another-call", f"{leader} supervises call {mine.call_id}: leave it first"
            )
        if self._agents.agents[leader].state not in fsm.LOGGED_IN_IDLE:
            raise FailedPrecondition("supervisor-busy", f"{leader} is on a call")
        if held is not None:
            self._forget(held)
        was_held = call.state == CallState.HELD
        fx.journal(
            call,
            EventKind.INTERCEPTED,
            now,
            agent_code=leader,
            data=(("supervisor", leader), ("agent", agent)),
        )
        # The agent's leg ends as if they hung up (wrap-up follows); the caller stays on the line.
        self._connected.end_agent_leg(call, now, fx, "intercepted")
        self._agents.apply(leader, fsm.TakeOver(call.call_id), now, fx)
        call.agent_code = leader
        call.state = CallState.TALKING
        # The leader's handle time counts from here.
        call.answered_at = now
        fx.add(SuperviseMedia(call.call_id, "intercept", leader, agent))
        if not call.guest_of:
            if was_held:
                fx.add(ToCaller(call.call_id, "retrieved", now))
            fx.add(ToCaller(call.call_id, "transferred", now, site_id=self.site.id, agent_code=leader))
            fx.add(ToCaller(call.call_id, "connected", now, site_id=self.site.id, agent_code=leader))
        fx.add(ToAgent(leader, "connected", now, call_id=call.call_id))
        fx.add(
            ToAgent(
                leader, "supervision", now, call_id=call.call_id, stage="intercept", other_agent_code=agent
            )
        )
        fx.add(Audit(now, leader, "intercept", agent, call.call_id))

    def _agent_call(self, agent: str) -> Call:
        a = self._agents.agent(agent)
        call = self._calls.get(a.call_id) if a.call_id else None
        if call is None or call.agent_code != agent or call.state not in CONNECTED:
            raise FailedPrecondition("agent-not-on-call", f"agent {agent} is not talking with a caller")
        return call

    def _leader_free(self, leader: str, now: float, fx: Effects) -> None:
        state = self._agents.agents[leader].state
        if state not in fsm.LOGGED_IN_IDLE:
            raise FailedPrecondition("supervisor-busy", f"{leader} is on a call")
        if state == AgentState.READY:
            # No caller must ring at a leader who is listening to someone else's call.
            self._agents.apply(leader, fsm.SetNotReady(REASON_SUPERVISING), now, fx)

    def _end(self, s: Supervising, reason: str, now: float, fx: Effects) -> None:
        self._forget(s)
        call = self._calls.get(s.call_id)
        if call is not None:
            fx.journal(
                call, EventKind.SUPERVISION_ENDED, now, agent_code=s.supervisor,
                data=(("supervisor", s.supervisor), ("agent", s.agent_code), ("reason", reason)),
            )  # fmt: skip
        fx.add(SuperviseMedia(s.call_id, "none", s.supervisor, s.agent_code))
        fx.add(ToAgent(s.supervisor, "supervision", now, call_id=s.call_id, stage="ended", reason=reason))
        if s.mode != "monitor":
            fx.add(
                ToAgent(
                    s.agent_code, "supervision", now, call_id=s.call_id, stage="ended", reason=reason,
                    other_agent_code=s.supervisor,
                )
            )  # fmt: skip

    def _forget(self, s: Supervising) -> None:
        self.by_call.pop(s.call_id, None)
        self.by_supervisor.pop(s.supervisor, None)

    # Forcing an agent's state ---------------------------------------------------------------

    def force_state(self, leader: str, agent: str, ready: bool, reason: str, now: float, fx: Effects) -> None:
        self._ready_supervisor(leader, agent)
        check_reason(ready, reason)
        self._agents.logged_in(agent)
        self.pending_logout.pop(agent, None)
        self._agents.apply(agent, fsm.SetReady() if ready else fsm.SetNotReady(reason), now, fx)
        stage = "ready" if ready else "not-ready"
        fx.add(ToAgent(agent, "forced", now, stage=stage, reason=reason, other_agent_code=leader))
        fx.add(Audit(now, leader, f"force-{stage}", agent, detail=reason))

    def force_logout(self, leader: str, agent: str, now: float, fx: Effects) -> None:
        self._ready_supervisor(leader, agent)
        state = self._agents.logged_in(agent).state
        fx.add(ToAgent(agent, "forced", now, stage="logout", other_agent_code=leader))
        if state in fsm.LOGGED_IN_IDLE:
            self._agents.logout(now, agent, fx)
            fx.add(Audit(now, leader, "force-logout", agent))
            return
        # Busy: no new call rings there; logged out once the call and its wrap-up are over.
        self._agents.apply(agent, fsm.SetNotReady(REASON_FORCED_LOGOUT), now, fx)
        self.pending_logout[agent] = leader
        fx.add(Audit(now, leader, "force-logout", agent, detail="after the call"))

    # Following the calls --------------------------------------------------------------------

    def follow(self, now: float, fx: Effects) -> None:
        """After any operation: supervision ends with the agent's leg (hang-up, transfer, the
        caller leaving) or the supervisor's logout; a pending forced logout happens once the agent
        is free."""
        for s in list(self.by_call.values()):
            call = self._calls.get(s.call_id)
            state = self._agents.agents[s.supervisor].state
            if call is None or call.agent_code != s.agent_code or call.state not in CONNECTED:
                self._end(s, "call-left-agent", now, fx)
            elif state == AgentState.LOGGED_OUT:
                self._end(s, "supervisor-logged-out", now, fx)
            elif state not in fsm.LOGGED_IN_IDLE:
                self._end(s, "supervisor-took-a-call", now, fx)
        for agent, leader in list(self.pending_logout.items()):
            state = self._agents.agents[agent].state
            if state == AgentState.LOGGED_OUT:
                del self.pending_logout[agent]
            elif state in fsm.LOGGED_IN_IDLE:
                del self.pending_logout[agent]
                self._agents.logout(now, agent, fx)
                fx.add(Audit(now, leader, "force-logout", agent, detail="done after the call"))

    @property
    def active(self) -> bool:
        return bool(self.by_call or self.pending_logout)
