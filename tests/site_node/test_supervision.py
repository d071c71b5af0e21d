"""Supervision in the call control (SPEC F24, F25): monitor, whisper, barge-in, intercept, forced
states, and who may do them to whom. Pure: driven operation by operation, no clock, no network."""

from __future__ import annotations

from typing import Any

import pytest

from routing.agents import AgentState
from site_node.callcontrol import Switchboard
from site_node.callcontrol.domain import Audit, CallState, Effect, EventKind, SuperviseMedia
from tests.site_node.test_switchboard import (
    AGENT_SKILLS,
    FAKE_HASH,
    SERVICE,
    journal,
    queued_call,
    ready_agents,
    sequential_ids,
    site_config,
    snapshot,
    to_agent,
    to_caller,
)
from vcc.config import ConfigError, parse_province
from vcc.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, VccError

LEADER, ADMIN, OTHER_LEADER = "0900", "0901", "0902"


def people() -> list[dict[str, Any]]:
    agents: list[dict[str, Any]] = [
        {"code": c, "password_hash": FAKE_HASH, "skills": s} for c, s in AGENT_SKILLS.items()
    ]
    return [
        *agents,
        # Leads general: 0101 and 0102 (0102 is also in billing); not 0201 (billing only).
        {"code": LEADER, "password_hash": FAKE_HASH, "skills": {"general": 1}, "role": "group_leader",
         "leads": ["general"]},
        {"code": ADMIN, "password_hash": FAKE_HASH, "skills": {"general": 1}, "role": "administrator"},
        {"code": OTHER_LEADER, "password_hash": FAKE_HASH, "skills": {"billing": 1},
         "role": "group_leader", "leads": ["billing"]},
    ]  # fmt: skip


class Site:
    """A switchboard with the runtime's habit: supervision follows every operation."""

    def __init__(self, **overrides: Any) -> None:
        self.sb = Switchboard(
            site_config(agents=people(), **overrides), SERVICE, new_call_id=sequential_ids()
        )
        self.now = 1.0

    def do(self, effects: list[Effect]) -> list[Effect]:
        if self.sb.supervising:
            effects = effects + self.sb.follow_supervision(self.now)
        return effects

    def talking(self, agent: str = "0101", key: str = "k1", digit: str = "2") -> str:
        """`agent` alone ready, a call to general (digit 2; billing: 1) answered by it."""
        self.do(ready_agents(self.sb, self.now, agent))
        call_id, _ = queued_call(self.sb, self.now, key, digit=digit)
        assert self.sb.agents[agent].call_id == call_id
        self.do(self.sb.answer(self.now, agent, call_id))
        return call_id

    def leader_in(self, code: str = LEADER) -> None:
        self.do(self.sb.login(self.now, code))


def refused(site: Site, action: Any, error: type[VccError], error_id: str) -> None:
    before = snapshot(site.sb)
    with pytest.raises(error) as exc:
        action()
    assert exc.value.error_id == error_id
    assert snapshot(site.sb) == before


def kinds_of(effects: list[Effect], call_id: str) -> list[EventKind]:
    return [e.kind for e in journal(effects, call_id)]


# Roles --------------------------------------------------------------------------------------


def test_config_validates_roles_and_leads() -> None:
    def province(agent: dict[str, Any]) -> None:
        site = site_config().model_dump()
        site["agents"] = [agent]
        parse_province({"province": {"id": "gd", "name": "G"}, "sites": [site]})

    base = {"code": "0900", "password_hash": FAKE_HASH, "skills": {"general": 1}}
    with pytest.raises(ConfigError, match="leads: a group leader leads at least one"):
        province({**base, "role": "group_leader"})
    with pytest.raises(ConfigError, match="only a group_leader or administrator"):
        province({**base, "leads": ["general"]})
    with pytest.raises(ConfigError, match=r"agents\.0\.leads: unknown skill group 'nope'"):
        province({**base, "role": "group_leader", "leads": ["nope"]})
    with pytest.raises(ConfigError, match="role"):
        province({**base, "role": "boss"})
    province({**base, "role": "group_leader", "leads": ["general"]})


def test_team_is_the_agents_of_the_groups_a_leader_leads() -> None:
    sb = Site().sb
    assert sb.team(LEADER) == ["0101", "0102"]
    assert sb.team(OTHER_LEADER) == ["0102", "0201"]
    assert sb.team(ADMIN) == ["0101", "0102", "0201", LEADER, OTHER_LEADER]
    with pytest.raises(PermissionDenied) as exc:
        sb.team("0101")
    assert exc.value.error_id == "not-a-supervisor"


def test_an_agent_and_a_leader_of_another_group_are_refused_with_no_change() -> None:
    site = Site()
    site.talking("0201", "k1", digit="1")
    site.leader_in()
    site.do(site.sb.login(site.now, "0101"))
    sb, now = site.sb, site.now
    refused(site, lambda: sb.supervise(now, "0101", "0201", "monitor"), PermissionDenied, "not-a-supervisor")
    refused(
        site, lambda: sb.force_state(now, "0101", "0201", False, "x"), PermissionDenied, "not-a-supervisor"
    )
    refused(site, lambda: sb.supervise(now, LEADER, "0201", "monitor"), PermissionDenied, "not-your-team")
    refused(site, lambda: sb.intercept(now, LEADER, "0201"), PermissionDenied, "not-your-team")
    refused(site, lambda: sb.force_logout(now, LEADER, "0201"), PermissionDenied, "not-your-team")
    refused(site, lambda: sb.force_state(now, LEADER, LEADER, True), PermissionDenied, "not-your-team")
    refused(site, lambda: sb.force_state(now, LEADER, "9999", True), NotFound, "unknown-agent")


def test_bad_requests_change_nothing() -> None:
    site = Site()
    site.talking()
    sb, now = site.sb, site.now
    # The leader is not logged in yet.
    refused(site, lambda: sb.supervise(now, LEADER, "0101", "monitor"), FailedPrecondition, "not-logged-in")
    site.leader_in()
    refused(
        site, lambda: sb.supervise(now, LEADER, "0101", "listen"), InvalidArgument, "bad-supervision-mode"
    )
    refused(
        site, lambda: sb.supervise(now, LEADER, "0102", "monitor"), FailedPrecondition, "agent-not-on-call"
    )
    refused(site, lambda: sb.force_state(now, LEADER, "0102", False, ""), InvalidArgument, "reason-required")
    refused(site, lambda: sb.force_state(now, LEADER, "0102", True), FailedPrecondition, "not-logged-in")
    refused(site, lambda: sb.leave_supervision(now, LEADER), FailedPrecondition, "not-supervising")


# Monitor, whisper, barge-in ----------------------------------------------------------------


def test_monitor_whisper_barge_each_journaled_with_media_and_the_agent_told_when_heard() -> None:
    site = Site()
    call_id = site.talking()
    site.leader_in()
    sb = site.sb
    fx = site.do(sb.supervise(site.now, LEADER, "0101", "monitor"))
    [event] = journal(fx, call_id)
    assert (event.kind, event.agent_code) == (EventKind.SUPERVISED, LEADER)
    assert dict(event.data) == {"supervisor": LEADER, "agent": "0101", "mode": "monitor", "from": ""}
    assert SuperviseMedia(call_id, "monitor", LEADER, "0101") in fx
    assert [e.stage for e in to_agent(fx, LEADER, "supervision")] == ["monitor"]
    assert to_agent(fx, "0101", "supervision") == []  # a silent monitor is not announced
    assert [a.action for a in fx if isinstance(a, Audit)] == ["monitor"]

    fx = site.do(sb.supervise(site.now, LEADER, "0101", "whisper"))
    assert dict(journal(fx, call_id)[0].data)["from"] == "monitor"
    assert SuperviseMedia(call_id, "whisper", LEADER, "0101") in fx
    assert [e.stage for e in to_agent(fx, "0101", "supervision")] == ["whisper"]
    # The caller hears nothing of it: no progress on the caller's side.
    assert to_caller(fx) == []

    fx = site.do(sb.supervise(site.now, LEADER, "0101", "barge"))
    assert dict(journal(fx, call_id)[0].data)["mode"] == "barge"
    assert SuperviseMedia(call_id, "barge", LEADER, "0101") in fx
    # The same mode again changes nothing.
    assert site.do(sb.supervise(site.now, LEADER, "0101", "barge")) == []

    fx = site.do(sb.leave_supervision(site.now, LEADER))
    assert kinds_of(fx, call_id) == [EventKind.SUPERVISION_ENDED]
    assert SuperviseMedia(call_id, "none", LEADER, "0101") in fx
    assert [e.stage for e in to_agent(fx, "0101", "supervision")] == ["ended"]
    # The call itself never changed hands.
    assert (sb.calls[call_id].agent_code, sb.calls[call_id].state) == ("0101", CallState.TALKING)


def test_one_supervisor_per_call_and_one_call_per_supervisor() -> None:
    site = Site()
    site.talking("0101", "k1")
    site.talking("0102", "k2")
    site.leader_in()
    site.leader_in(ADMIN)
    sb, now = site.sb, site.now
    site.do(sb.supervise(now, LEADER, "0101", "monitor"))
    refused(
        site, lambda: sb.supervise(now, ADMIN, "0101", "monitor"), FailedPrecondition, "already-supervised"
    )
    refused(
        site,
        lambda: sb.supervise(now, LEADER, "0102", "monitor"),
        FailedPrecondition,
        "supervising-another-call",
    )


def test_a_ready_leader_is_set_not_ready_while_supervising() -> None:
    site = Site()
    call_id = site.talking()
    site.leader_in()
    site.do(site.sb.set_ready(site.now, LEADER, True))
    site.do(site.sb.supervise(site.now, LEADER, "0101", "monitor"))
    leader = site.sb.agents[LEADER]
    assert (leader.state, leader.reason) == (AgentState.NOT_READY, "supervising")
    # A new general call does not ring at the leader.
    other, _ = queued_call(site.sb, site.now, "k2", digit="2")
    assert site.sb.calls[other].state == CallState.QUEUED
    assert site.sb.calls[call_id].agent_code == "0101"


def test_supervision_ends_with_the_agents_leg() -> None:
    site = Site()
    call_id = site.talking()
    site.leader_in()
    site.do(site.sb.supervise(site.now, LEADER, "0101", "whisper"))
    fx = site.do(site.sb.agent_hang_up(site.now, "0101", call_id))
    assert SuperviseMedia(call_id, "none", LEADER, "0101") in fx
    assert [(e.stage, e.reason) for e in to_agent(fx, LEADER, "supervision")] == [
        ("ended", "call-left-agent")
    ]
    assert not site.sb.supervising
    # The call ended first: nothing is journaled after its end.
    assert kinds_of(fx, call_id)[-1] == EventKind.ENDED


# Intercept ----------------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["", "barge", "held"])
def test_intercept_hands_the_caller_to_the_leader_and_the_agent_to_wrap_up(first: str) -> None:
    site = Site()
    call_id = site.talking()
    site.leader_in()
    sb = site.sb
    if first == "barge":
        site.do(sb.supervise(site.now, LEADER, "0101", "barge"))
    elif first == "held":
        site.do(sb.hold(site.now, "0101", call_id, True))
    fx = site.do(sb.intercept(site.now, LEADER, "0101"))
    assert kinds_of(fx, call_id) == [EventKind.INTERCEPTED]
    assert dict(journal(fx, call_id)[0].data) == {"supervisor": LEADER, "agent": "0101"}
    assert SuperviseMedia(call_id, "intercept", LEADER, "0101") in fx
    call = sb.calls[call_id]
    assert (call.agent_code, call.state) == (LEADER, CallState.TALKING)
    assert (sb.agents[LEADER].state, sb.agents[LEADER].call_id) == (AgentState.TALKING, call_id)
    assert sb.agents["0101"].state == AgentState.WRAP_UP
    assert [e.reason for e in to_agent(fx, "0101", "ended")] == ["intercepted"]
    assert [c.kind for c in to_caller(fx)][-2:] == ["transferred", "connected"]
    assert to_caller(fx, "connected")[0].agent_code == LEADER
    assert not sb.supervising
    # The leader ends the call like any agent.
    fx = site.do(sb.agent_hang_up(site.now, LEADER, call_id))
    assert kinds_of(fx, call_id)[-1] == EventKind.ENDED
    assert sb.agents[LEADER].state == AgentState.WRAP_UP


def test_intercept_needs_a_free_leader_and_a_call_of_our_own() -> None:
    site = Site()
    site.talking("0101", "k1")
    site.talking("0102", "k2")
    site.leader_in()
    sb, now = site.sb, site.now
    site.do(sb.intercept(now, LEADER, "0101"))
    refused(site, lambda: sb.intercept(now, LEADER, "0102"), FailedPrecondition, "supervisor-busy")


# Forced states ------------------------------------------------------------------------------


def test_force_ready_and_not_ready_of_an_idle_agent() -> None:
    site = Site()
    site.leader_in()
    sb = site.sb
    site.do(sb.login(site.now, "0101"))
    fx = site.do(sb.force_state(site.now, LEADER, "0101", True))
    assert sb.agents["0101"].state == AgentState.READY
    assert [(e.stage, e.other_agent_code) for e in to_agent(fx, "0101", "forced")] == [("ready", LEADER)]
    assert [e.kind for e in to_agent(fx, "0101")] == ["state", "forced"]
    fx = site.do(sb.force_state(site.now, LEADER, "0101", False, "meeting"))
    assert (sb.agents["0101"].state, sb.agents["0101"].reason) == (AgentState.NOT_READY, "meeting")
    audit = [a for a in fx if isinstance(a, Audit)]
    assert [(a.actor, a.action, a.target, a.detail) for a in audit] == [
        (LEADER, "force-not-ready", "0101", "meeting")
    ]


def test_force_not_ready_of_a_busy_agent_applies_after_the_call() -> None:
    site = Site(wrap_up_s=0)
    call_id = site.talking()
    site.leader_in()
    site.do(site.sb.force_state(site.now, LEADER, "0101", False, "meeting"))
    assert site.sb.agents["0101"].state == AgentState.TALKING
    site.do(site.sb.agent_hang_up(site.now, "0101", call_id))
    assert (site.sb.agents["0101"].state, site.sb.agents["0101"].reason) == (AgentState.NOT_READY, "meeting")


def test_force_logout_now_or_after_the_call_and_wrap_up() -> None:
    site = Site()
    site.leader_in()
    sb = site.sb
    site.do(sb.login(site.now, "0102"))
    site.do(sb.force_logout(site.now, LEADER, "0102"))
    assert sb.agents["0102"].state == AgentState.LOGGED_OUT

    call_id = site.talking()
    fx = site.do(sb.force_logout(site.now, LEADER, "0101"))
    assert [e.stage for e in to_agent(fx, "0101", "forced")] == ["logout"]
    assert sb.agents["0101"].state == AgentState.TALKING
    site.do(sb.agent_hang_up(site.now, "0101", call_id))
    assert sb.agents["0101"].state == AgentState.WRAP_UP
    site.now += 10.0
    fx = site.do(sb.tick(site.now))
    assert sb.agents["0101"].state == AgentState.LOGGED_OUT
    assert [a.detail for a in fx if isinstance(a, Audit)] == ["done after the call"]
    assert not sb.supervising
