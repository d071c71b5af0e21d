"""A three-way conference takes a channel of the site's conference board (issue 10, item 5): none
free, the conference is refused and nothing changes; the channel comes back when the conference
ends (completed or cancelled). Pure: the switchboard driven operation by operation."""

from __future__ import annotations

import pytest

from routing.agents import AgentState
from site_node.callcontrol import Switchboard
from site_node.callcontrol.directory import TransferTarget
from site_node.callcontrol.domain import ToAgent
from tests.site_node.test_switchboard import (
    FAKE_HASH,
    SERVICE,
    queued_call,
    ready_agents,
    sequential_ids,
    site_config,
    snapshot,
)
from vcc.errors import FailedPrecondition

AGENTS = ("0101", "0102", "0103", "0104")


def board_site() -> Switchboard:
    site = site_config(
        agents=[{"code": c, "password_hash": FAKE_HASH, "skills": {"general": 5}} for c in AGENTS],
        boards=[
            {"id": "ivr", "kind": "ivr", "channels": 4},
            {"id": "conf", "kind": "conference", "channels": 1},
        ],
    )
    return Switchboard(site, SERVICE, new_call_id=sequential_ids())


def consulting(sb: Switchboard, now: float, key: str, agent: str, other: str) -> str:
    """A call answered by `agent`, who consults `other` (here), who answers."""
    call_id, _ = queued_call(sb, now, key)
    assert sb.calls[call_id].agent_code == agent  # rung at the agent made ready first
    sb.answer(now, agent, call_id)
    sb.transfer(now, agent, call_id, TransferTarget(agent_code=other), blind=False)
    sb.answer(now, other, call_id)
    return call_id


def busy(sb: Switchboard) -> int:
    return sb.resources.boards["conf"].busy


def test_a_conference_takes_a_board_channel_and_a_full_board_refuses_the_next() -> None:
    sb = board_site()
    ready_agents(sb, 1.0, "0101", "0102")
    first = consulting(sb, 2.0, "k1", "0101", "0102")
    sb.conference(3.0, "0101", first)
    assert busy(sb) == 1 and sb.calls[first].consult is not None and sb.calls[first].consult.conference
    ready_agents(sb, 4.0, "0103", "0104")
    second = consulting(sb, 5.0, "k2", "0103", "0104")
    before = (sb.calls[second].state, sb.calls[second].consult)
    with pytest.raises(FailedPrecondition) as refused:
        sb.conference(6.0, "0103", second)
    assert refused.value.error_id == "no-conference-channel"
    # Nothing changed: the caller still held, the consultation as it was, the board still full.
    assert (sb.calls[second].state, sb.calls[second].consult) == before
    assert not sb.calls[second].consult.conference and busy(sb) == 1  # type: ignore[union-attr]
    # The first conference completes: its channel is free, and the second may conference now.
    sb.complete_transfer(7.0, "0101", first)
    assert busy(sb) == 0
    sb.conference(8.0, "0103", second)
    assert busy(sb) == 1
    sb.cancel_transfer(9.0, "0103", second)
    assert busy(sb) == 0


def test_a_consulted_colleagues_unreachable_phone_fails_the_consultation_at_once() -> None:
    """The colleague's phone refuses (or never answers): the consultation fails as on its ring
    timeout (the serving agent has the caller back, the colleague turns not ready); a phone lost
    once the colleague talks changes nothing (the colleague leaves by hanging up)."""
    sb = board_site()
    ready_agents(sb, 1.0, "0101", "0102")
    call_id, _ = queued_call(sb, 2.0, "k1")
    sb.answer(2.0, "0101", call_id)
    sb.transfer(3.0, "0101", call_id, TransferTarget(agent_code="0102"), blind=False)
    fx = sb.phone_unreachable(4.0, "0102", call_id)
    stages = [e.stage for e in fx if isinstance(e, ToAgent) and e.kind == "transfer"]
    assert stages == ["consult-failed"], fx
    assert any(isinstance(e, ToAgent) and e.agent_code == "0102" and e.kind == "withdrawn" for e in fx)
    assert sb.calls[call_id].consult is None and sb.counters.ring_no_answer == 1
    assert sb.agents["0102"].state == AgentState.NOT_READY
    # Consulted again, answered: an unreachable report now changes nothing.
    sb.set_ready(5.0, "0102", True)
    sb.transfer(6.0, "0101", call_id, TransferTarget(agent_code="0102"), blind=False)
    sb.answer(7.0, "0102", call_id)
    before = snapshot(sb)
    assert sb.phone_unreachable(8.0, "0102", call_id) == []
    assert snapshot(sb) == before
