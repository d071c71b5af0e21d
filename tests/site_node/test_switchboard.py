"""One city's call control, operation by operation: trunks, IVR, queues, ringing, agents, errors.

The switchboard is pure: time is an argument and every operation returns its effects, so these
tests drive it directly with no network and no clock.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any

import pytest

from routing.agents import REASON_LOGIN, REASON_NO_ANSWER, AgentState
from site_node.callcontrol import CUSTOMER_WAIT_S, Switchboard
from site_node.callcontrol.domain import (
    CallState,
    CustomerInfo,
    Effect,
    EventKind,
    FetchCustomer,
    Journal,
    Outcome,
    RecordedEvent,
    ToAgent,
    ToCaller,
)
from site_node.callcontrol.parts import Parts
from vcc.config import SiteConfig, parse_province
from vcc.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, VccError

SERVICE = "10000"
# Nothing in the switchboard verifies it; it only has to look like an argon2id hash.
FAKE_HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"
AGENT_SKILLS: dict[str, dict[str, int]] = {
    "0101": {"general": 5},
    "0102": {"general": 3, "billing": 7},
    "0201": {"billing": 5},
}


def site_dict(**overrides: Any) -> dict[str, Any]:
    site: dict[str, Any] = {
        "id": "gz",
        "name": "Guangzhou",
        "listen": "127.0.0.1:7101",
        "trunk_groups": [{"id": "pstn", "channels": 5}],
        "boards": [{"id": "ivr", "kind": "ivr", "channels": 4}],
        "skill_groups": [
            {"id": "general", "strategy": "longest_idle"},
            {"id": "billing", "strategy": "most_skilled", "priority": 1},
        ],
        "agents": [
            {"code": code, "password_hash": FAKE_HASH, "skills": skills}
            for code, skills in AGENT_SKILLS.items()
        ],
        "ivr": {
            "choices": [{"digit": "1", "skill_group": "billing"}, {"digit": "2", "skill_group": "general"}],
            "digit_timeout_s": 5,
            "default_skill_group": "general",
        },
        "ring_timeout_s": 10,
        "wrap_up_s": 5,
        "desktop_grace_s": 30,
    }
    site.update(overrides)
    return site


def site_config(**overrides: Any) -> SiteConfig:
    """A validated site config (through the same parser the province file goes through)."""
    province = parse_province(
        {
            "province": {"id": "gd", "name": "Guangdong", "service_number": SERVICE},
            "sites": [site_dict(**overrides)],
        }
    )
    return province.sites[0]


def sequential_ids(prefix: str = "call") -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter)}"


def switchboard(**overrides: Any) -> Switchboard:
    return Switchboard(site_config(**overrides), SERVICE, new_call_id=sequential_ids())


def journal(effects: Iterable[Effect], call_id: str | None = None) -> list[RecordedEvent]:
    return [e.event for e in effects if isinstance(e, Journal) and call_id in (None, e.event.call_id)]


def journal_kinds(effects: Iterable[Effect], call_id: str | None = None) -> list[EventKind]:
    return [e.kind for e in journal(effects, call_id)]


def to_caller(effects: Iterable[Effect], kind: str | None = None) -> list[ToCaller]:
    return [e for e in effects if isinstance(e, ToCaller) and kind in (None, e.kind)]


def to_agent(effects: Iterable[Effect], code: str, kind: str | None = None) -> list[ToAgent]:
    return [e for e in effects if isinstance(e, ToAgent) and e.agent_code == code and kind in (None, e.kind)]


def _value(value: Any) -> Any:
    """A deep copy of `value` as plain, comparable data: what copy.deepcopy would keep, made without
    its memo and reduce machinery (the stateful tests take two snapshots of every refused action).
    A dataclass becomes its type and its fields, which compare as the dataclass's own __eq__ does."""
    if value is None or isinstance(value, str | int | float | bool | Enum):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value), *(_value(getattr(value, f.name)) for f in dataclasses.fields(value)))
    if isinstance(value, list | tuple):
        return (type(value), *(_value(v) for v in value))
    if isinstance(value, dict):
        return (type(value), {k: _value(v) for k, v in value.items()})
    if isinstance(value, set | frozenset):
        return (type(value), frozenset(_value(v) for v in value))
    return copy.deepcopy(value)


def snapshot(sb: Switchboard) -> dict[str, Any]:
    """Everything the switchboard's parts hold, as plain data, for 'bad input changes nothing'
    checks (each part once; callables, such as timer handlers, left out)."""
    seen: set[int] = set()

    def plain(value: Any) -> Any:
        if isinstance(value, Parts):  # the holder of the parts: walked as they are, not copied
            return plain(vars(value))
        if isinstance(value, str | int | float | bool | None) or dataclasses.is_dataclass(value):
            return _value(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if not callable(v)}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if isinstance(value, set | frozenset):
            return _value(value)
        if hasattr(value, "__dict__"):
            if id(value) in seen:
                return f"<{type(value).__name__}>"
            seen.add(id(value))
            return {k: plain(v) for k, v in vars(value).items() if k != "site" and not callable(v)}
        return copy.deepcopy(value)

    state = plain(sb)
    assert isinstance(state, dict)
    return state


def ready_agents(sb: Switchboard, now: float, *codes: str) -> list[Effect]:
    fx: list[Effect] = []
    for code in codes:
        fx += sb.login(now, code)
        fx += sb.set_ready(now, code, True)
    return fx


def offer(
    sb: Switchboard, now: float, key: str, lookup: bool = True, **kwargs: Any
) -> tuple[str, list[Effect]]:
    """Offer a call; with `lookup`, central's customer look-up answers at once (no record)."""
    call_id, fx = sb.offer(
        now, idempotency_key=key, ani=kwargs.pop("ani", "13800000000"), dnis=SERVICE, **kwargs
    )
    if lookup:
        fx += sb.customer_found(now, call_id, None)
    return call_id, fx


def queued_call(sb: Switchboard, now: float, key: str, digit: str = "2") -> tuple[str, list[Effect]]:
    """A call through the IVR into the queue of the group behind `digit`."""
    call_id, fx = offer(sb, now, key)
    fx += sb.caller_digits(now, call_id, digit)
    return call_id, fx


# Arrival, trunks and blocking -------------------------------------------------------------------


def test_arrival_starts_the_ivr_and_looks_the_caller_up() -> None:
    sb = switchboard()
    call_id, fx = offer(sb, 1.0, "k1", ani="13912345678")
    assert call_id == "call-1"
    assert journal_kinds(fx) == [EventKind.ARRIVED, EventKind.IVR_STARTED]
    arrived = journal(fx)[0]
    assert (arrived.seq, arrived.site_id, arrived.ani, arrived.dnis) == (1, "gz", "13912345678", SERVICE)
    assert [c.kind for c in to_caller(fx)] == ["accepted", "prompt"]
    prompt = to_caller(fx, "prompt")[0]
    assert (prompt.choices, prompt.timeout_s) == (("1", "2"), 5.0)
    assert FetchCustomer(call_id, "13912345678") in fx
    assert sb.calls[call_id].state == CallState.IVR
    assert sb.trunks["pstn"].busy == 1
    assert sb.boards["ivr"].busy == 1
    assert sb.counters.offered == 1


def test_blocked_call_is_journaled_ended_and_counted() -> None:
    sb = switchboard(trunk_groups=[{"id": "pstn", "channels": 1}])
    first, _ = offer(sb, 1.0, "k1")
    blocked, fx = offer(sb, 2.0, "k2")
    assert blocked != first
    events = journal(fx)
    assert [(e.kind, e.seq) for e in events] == [(EventKind.BLOCKED, 1), (EventKind.ENDED, 2)]
    assert all(e.call_id == blocked for e in events)
    assert events[1].outcome == Outcome.BLOCKED
    ended = to_caller(fx)
    assert len(ended) == 1
    assert (ended[0].call_id, ended[0].kind, ended[0].outcome, ended[0].reason) == (
        blocked,
        "ended",
        Outcome.BLOCKED,
        "no-trunk-channel",
    )
    assert not any(isinstance(e, FetchCustomer) for e in fx)
    assert blocked not in sb.calls
    assert (sb.counters.offered, sb.counters.blocked) == (2, 1)
    assert (sb.trunks["pstn"].busy, sb.trunks["pstn"].refused) == (1, 1)
    assert sb.ended_outcome("k2") == (blocked, Outcome.BLOCKED)
    assert sb.call_for_key("k2") == blocked
    assert sb.call_for_key("k1") == first


def test_named_trunk_group_blocks_even_when_another_has_room() -> None:
    sb = switchboard(trunk_groups=[{"id": "pstn", "channels": 1}, {"id": "backup", "channels": 3}])
    offer(sb, 1.0, "k1", trunk_group="pstn")
    _, fx = offer(sb, 1.0, "k2", trunk_group="pstn")
    assert journal_kinds(fx) == [EventKind.BLOCKED, EventKind.ENDED]
    # Without a group the site uses any free channel.
    call_id, fx = offer(sb, 1.0, "k3")
    assert sb.calls[call_id].trunk_group == "backup"
    assert to_caller(fx, "accepted")[0].trunk_group == "backup"


def test_trunk_channel_is_released_when_the_call_ends() -> None:
    sb = switchboard(trunk_groups=[{"id": "pstn", "channels": 1}])
    call_id, _ = offer(sb, 1.0, "k1")
    sb.caller_hang_up(2.0, call_id)
    assert sb.trunks["pstn"].busy == 0
    assert sb.boards["ivr"].busy == 0
    _, fx = offer(sb, 3.0, "k2")
    assert journal_kinds(fx)[0] == EventKind.ARRIVED


# IVR -------------------------------------------------------------------------------------------


def test_digit_choice_queues_in_its_group() -> None:
    sb = switchboard()
    call_id, _ = offer(sb, 1.0, "k1")
    fx = sb.caller_digits(2.0, call_id, "1")
    assert journal_kinds(fx) == [EventKind.DIGITS, EventKind.QUEUED]
    queued = journal(fx)[1]
    assert (queued.skill_group, queued.data) == ("billing", ())
    caller = to_caller(fx, "queued")[0]
    assert (caller.skill_group, caller.position) == ("billing", 1)
    # Nobody is logged in for billing: the wait is unknown.
    assert caller.expected_wait_s == -1.0
    assert sb.boards["ivr"].busy == 0
    assert sb.calls[call_id].attached["ivr_choice"] == "1"


def test_ivr_timeout_goes_to_the_default_group() -> None:
    sb = switchboard()
    call_id, _ = offer(sb, 1.0, "k1")
    assert journal(sb.tick(5.9)) == []
    fx = sb.tick(6.0)
    assert journal_kinds(fx) == [EventKind.QUEUED]
    assert journal(fx)[0].skill_group == "general"
    assert journal(fx)[0].data == (("reason", "no-digit"),)
    assert sb.calls[call_id].state == CallState.QUEUED
    assert sb.boards["ivr"].busy == 0


def test_wrong_digit_goes_to_the_default_group() -> None:
    sb = switchboard()
    call_id, _ = offer(sb, 1.0, "k1")
    fx = sb.caller_digits(2.0, call_id, "9")
    assert journal_kinds(fx) == [EventKind.DIGITS, EventKind.QUEUED]
    assert journal(fx)[1].skill_group == "general"
    assert journal(fx)[1].data == (("reason", "unknown-choice"),)
    # The IVR timer of a call that left the IVR does nothing.
    assert sb.tick(100.0) == []
    assert sb.calls[call_id].state == CallState.QUEUED


def test_ivr_ports_exhausted_bypasses_the_ivr() -> None:
    sb = switchboard(boards=[{"id": "ivr", "kind": "ivr", "channels": 1}])
    offer(sb, 1.0, "k1")
    call_id, fx = offer(sb, 1.0, "k2")
    assert journal_kinds(fx) == [EventKind.ARRIVED, EventKind.QUEUED]
    assert journal(fx)[1].skill_group == "general"
    assert journal(fx)[1].data == (("reason", "ivr-ports-busy"),)
    assert sb.calls[call_id].state == CallState.QUEUED
    assert sb.counters.ivr_bypassed == 1
    assert sb.boards["ivr"].refused == 1


def test_site_without_ivr_board_has_unlimited_virtual_ports() -> None:
    sb = switchboard(boards=[])
    ids = [offer(sb, 1.0, f"k{i}")[0] for i in range(5)]
    assert all(sb.calls[c].state == CallState.IVR for c in ids)
    assert sb.counters.ivr_bypassed == 0


def test_digits_outside_the_menu_are_recorded_and_ignored() -> None:
    sb = switchboard()
    call_id, _ = queued_call(sb, 1.0, "k1")
    fx = sb.caller_digits(2.0, call_id, "1")
    assert journal_kinds(fx) == [EventKind.DIGITS]
    assert journal(fx)[0].data == (("digits", "1"), ("ignored", "true"))
    assert sb.calls[call_id].skill_group == "general"


# Screen pop: a queued call waits briefly for its customer record ---------------------------------

CUSTOMER = CustomerInfo("cust-1", "Chen Jing", "13800000000", level="gold")


def test_call_waits_for_its_customer_record_before_ringing() -> None:
    sb = switchboard(boards=[])
    ready_agents(sb, 0.0, "0101")
    call_id, fx = offer(sb, 1.0, "k1", lookup=False)
    fx = sb.caller_digits(1.2, call_id, "2")
    assert journal_kinds(fx) == [EventKind.DIGITS, EventKind.QUEUED]
    assert sb.calls[call_id].state == CallState.QUEUED
    assert sb.agents["0101"].state == AgentState.READY
    fx = sb.customer_found(1.3, call_id, CUSTOMER)
    assert journal_kinds(fx) == [EventKind.RINGING]
    assert to_agent(fx, "0101", "offered")[0].customer == CUSTOMER


def test_call_rings_without_its_record_when_the_look_up_is_slow() -> None:
    sb = switchboard(boards=[{"id": "ivr", "kind": "ivr", "channels": 1}])
    ready_agents(sb, 0.0, "0101")
    offer(sb, 1.0, "k0")
    call_id, fx = offer(sb, 1.0, "k1", lookup=False)  # no IVR port: straight to the queue
    assert sb.calls[call_id].state == CallState.QUEUED
    assert journal_kinds(sb.tick(1.0 + CUSTOMER_WAIT_S - 0.1)) == []
    fx = sb.tick(1.0 + CUSTOMER_WAIT_S)
    assert journal_kinds(fx) == [EventKind.RINGING]
    assert to_agent(fx, "0101", "offered")[0].customer is None
    # A late answer changes nothing.
    assert sb.customer_found(1.5 + CUSTOMER_WAIT_S, call_id, CUSTOMER) == []
    assert sb.calls[call_id].customer is None


def test_a_waiting_call_keeps_its_place_while_its_record_loads() -> None:
    sb = switchboard(boards=[])
    first, _ = offer(sb, 1.0, "k1", lookup=False)
    second, _ = offer(sb, 1.1, "k2")
    sb.caller_digits(2.0, second, "2")
    sb.caller_digits(2.1, first, "2")
    sb.customer_found(2.2, first, None)
    assert sb.acd.position(first) == 1
    assert sb.acd.position(second) == 2


def test_caller_abandons_while_the_record_loads() -> None:
    sb = switchboard(boards=[])
    ready_agents(sb, 0.0, "0101")
    call_id, _ = offer(sb, 1.0, "k1", lookup=False)
    sb.caller_digits(1.1, call_id, "2")
    fx = sb.caller_hang_up(1.2, call_id)
    assert journal_kinds(fx) == [EventKind.ABANDONED, EventKind.ENDED]
    assert sb.customer_found(1.3, call_id, CUSTOMER) == []
    assert journal_kinds(sb.tick(10.0)) == []
    assert sb.acd.total_waiting == 0
    assert sb.agents["0101"].state == AgentState.READY


# Ringing, answering, wrap-up -------------------------------------------------------------------


def test_a_call_from_arrival_to_wrap_up() -> None:
    sb = switchboard()
    ready_agents(sb, 0.0, "0201")
    call_id, fx = queued_call(sb, 1.0, "k1", digit="1")
    assert journal_kinds(fx, call_id)[-1] == EventKind.RINGING
    offered = to_agent(fx, "0201", "offered")[0]
    assert (offered.call_id, offered.skill_group, offered.ring_timeout_s, offered.entry_site_id) == (
        call_id,
        "billing",
        10.0,
        "gz",
    )
    assert sb.agents["0201"].state == AgentState.RINGING
    fx = sb.answer(3.0, "0201", call_id)
    assert journal_kinds(fx) == [EventKind.ANSWERED]
    assert to_caller(fx)[0].kind == "connected"
    fx = sb.hold(4.0, "0201", call_id, True)
    assert (journal_kinds(fx), sb.calls[call_id].state, sb.agents["0201"].state) == (
        [EventKind.HELD],
        CallState.HELD,
        AgentState.HELD,
    )
    fx = sb.hold(5.0, "0201", call_id, False)
    assert (journal_kinds(fx), sb.calls[call_id].state) == ([EventKind.RETRIEVED], CallState.TALKING)
    fx = sb.agent_hang_up(9.0, "0201", call_id)
    assert journal_kinds(fx) == [EventKind.AGENT_HUNG_UP, EventKind.ENDED]
    ended = journal(fx)[-1]
    assert (ended.outcome, ended.agent_code, ended.skill_group) == (Outcome.ANSWERED, "0201", "billing")
    assert to_agent(fx, "0201", "ended")[0].wrap_up_s == 5.0
    assert sb.agents["0201"].state == AgentState.WRAP_UP
    assert call_id not in sb.calls
    assert sb.counters.answered == 1
    fx = sb.tick(14.0)
    assert sb.agents["0201"].state == AgentState.READY
    assert to_agent(fx, "0201", "state")


def test_journal_seq_numbers_of_a_call_have_no_gaps() -> None:
    sb = switchboard()
    ready_agents(sb, 0.0, "0101")
    call_id, fx = queued_call(sb, 1.0, "k1")
    fx += sb.tick(11.0)  # ring no answer, requeued
    fx += sb.set_ready(12.0, "0101", True)
    fx += sb.tick(13.0)
    fx += sb.caller_hang_up(14.0, call_id)
    seqs = [e.seq for e in journal(fx, call_id)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert journal_kinds(fx, call_id)[-1] == EventKind.ENDED


def test_ring_no_answer_reroutes_to_the_next_agent() -> None:
    sb = switchboard()
    ready_agents(sb, 0.0, "0101")
    ready_agents(sb, 1.0, "0102")
    call_id, fx = queued_call(sb, 2.0, "k1", digit="2")
    # Longest idle first.
    assert sb.calls[call_id].agent_code == "0101"
    fx = sb.tick(12.0)
    assert journal_kinds(fx) == [EventKind.RING_NO_ANSWER, EventKind.QUEUED, EventKind.RINGING]
    assert journal(fx)[1].data == (("reason", "ring-no-answer"),)
    first = sb.agents["0101"]
    assert (first.state, first.reason) == (AgentState.NOT_READY, REASON_NO_ANSWER)
    withdrawn = to_agent(fx, "0101", "withdrawn")
    assert withdrawn and withdrawn[0].reason == "no-answer"
    assert sb.calls[call_id].agent_code == "0102"
    assert sb.agents["0102"].call_id == call_id
    assert sb.counters.ring_no_answer == 1
    # The second agent's ring timer runs from the re-offer.
    assert sb.next_deadline() == 22.0


def test_ring_no_answer_keeps_the_call_ahead_of_later_arrivals() -> None:
    sb = switchboard()
    ready_agents(sb, 0.0, "0101")
    first, _ = queued_call(sb, 1.0, "k1")
    later, _ = queued_call(sb, 2.0, "k2")
    sb.tick(11.0)  # 0101 did not answer: both calls wait
    assert sb.calls[first].state == CallState.QUEUED
    assert sb.acd.position(first) == 1
    assert sb.acd.position(later) == 2
    fx = ready_agents(sb, 12.0, "0102")
    assert to_agent(fx, "0102", "offered")[0].call_id == first


def test_caller_hangs_up_while_ringing_keeps_agent_idle_order() -> None:
    sb = switchboard()
    ready_agents(sb, 0.0, "0101")
    ready_agents(sb, 1.0, "0102")
    call_id, _ = queued_call(sb, 2.0, "k1")
    fx = sb.caller_hang_up(3.0, call_id)
    assert journal_kinds(fx) == [EventKind.ABANDONED, EventKind.ENDED]
    assert to_agent(fx, "0101", "withdrawn")
    agent = sb.agents["0101"]
    assert (agent.state, agent.idle_since) == (AgentState.READY, 0.0)
    assert sb.counters.abandoned == 1
    # Still first in line: the next call goes to the same agent.
    nxt, _ = queued_call(sb, 4.0, "k2")
    assert sb.calls[nxt].agent_code == "0101"
    # The old ring timer does nothing to the new call.
    assert journal_kinds(sb.tick(12.5)) == []
    assert sb.calls[nxt].state == CallState.RINGING


@pytest.mark.parametrize("state", ["ivr", "queued"])
def test_caller_abandons_before_ringing(state: str) -> None:
    sb = switchboard()
    call_id, _ = offer(sb, 1.0, "k1")
    if state == "queued":
        sb.caller_digits(1.5, call_id, "2")
    fx = sb.caller_hang_up(2.0, call_id)
    assert journal_kinds(fx) == [EventKind.ABANDONED, EventKind.ENDED]
    assert journal(fx)[-1].outcome == Outcome.ABANDONED
    assert to_caller(fx, "ended")[0].outcome == Outcome.ABANDONED
    assert sb.acd.total_waiting == 0
    assert sb.boards["ivr"].busy == 0
    assert sb.ended_outcome("k1") == (call_id, Outcome.ABANDONED)


def test_caller_hangs_up_while_talking() -> None:
    sb = switchboard()
    ready_agents(sb, 0.0, "0101")
    call_id, _ = queued_call(sb, 1.0, "k1")
    sb.answer(2.0, "0101", call_id)
    fx = sb.caller_hang_up(10.0, call_id)
    assert journal_kinds(fx) == [EventKind.CALLER_HUNG_UP, EventKind.ENDED]
    assert journal(fx)[-1].outcome == Outcome.ANSWERED
    assert to_agent(fx, "0101", "ended")
    assert sb.agents["0101"].state == AgentState.WRAP_UP
    assert (sb.counters.answered, sb.counters.abandoned) == (1, 0)


def test_wrap_up_zero_takes_the_next_call_at_once() -> None:
    sb = switchboard(wrap_up_s=0)
    ready_agents(sb, 0.0, "0101")
    first, _ = queued_call(sb, 1.0, "k1")
    second, _ = queued_call(sb, 2.0, "k2")
    sb.answer(3.0, "0101", first)
    fx = sb.agent_hang_up(4.0, "0101", first)
    assert journal_kinds(fx, second) == [EventKind.RINGING]
    assert sb.agents["0101"].call_id == second


def test_not_ready_while_talking_applies_after_wrap_up() -> None:
    sb = switchboard()
    ready_agents(sb, 0.0, "0101")
    call_id, _ = queued_call(sb, 1.0, "k1")
    sb.answer(2.0, "0101", call_id)
    assert sb.set_ready(3.0, "0101", False, "lunch") == []
    sb.agent_hang_up(4.0, "0101", call_id)
    queued_call(sb, 5.0, "k2")
    sb.tick(9.0)
    agent = sb.agents["0101"]
    assert (agent.state, agent.reason) == (AgentState.NOT_READY, "lunch")
    assert sb.acd.waiting("general") == 1


def test_agent_ends_wrap_up_early_and_takes_a_call() -> None:
    sb = switchboard()
    ready_agents(sb, 0.0, "0101")
    first, _ = queued_call(sb, 1.0, "k1")
    sb.answer(2.0, "0101", first)
    sb.agent_hang_up(3.0, "0101", first)
    second, _ = queued_call(sb, 3.5, "k2")
    assert sb.calls[second].state == CallState.QUEUED
    fx = sb.end_wrap_up(4.0, "0101", True)
    assert journal_kinds(fx, second) == [EventKind.RINGING]
    # The wrap-up timer of the first call must not disturb the second.
    sb.tick(8.0)
    assert sb.agents["0101"].state == AgentState.RINGING


def test_end_wrap_up_not_ready_needs_a_reason() -> None:
    sb = switchboard()
    ready_agents(sb, 0.0, "0101")
    call_id, _ = queued_call(sb, 1.0, "k1")
    sb.answer(2.0, "0101", call_id)
    sb.agent_hang_up(3.0, "0101", call_id)
    with pytest.raises(InvalidArgument):
        sb.end_wrap_up(4.0, "0101", False)
    sb.end_wrap_up(4.0, "0101", False, "paperwork")
    assert (sb.agents["0101"].state, sb.agents["0101"].reason) == (AgentState.NOT_READY, "paperwork")


def test_login_is_not_ready_and_logout_leaves_routing() -> None:
    sb = switchboard()
    fx = sb.login(0.0, "0101")
    assert (sb.agents["0101"].state, sb.agents["0101"].reason) == (AgentState.NOT_READY, REASON_LOGIN)
    assert to_agent(fx, "0101", "state")
    sb.set_ready(1.0, "0101", True)
    assert sb.acd.is_ready("0101")
    sb.logout(2.0, "0101")
    assert sb.agents["0101"].state == AgentState.LOGGED_OUT
    assert not sb.acd.is_ready("0101")
    call_id, _ = queued_call(sb, 3.0, "k1")
    assert sb.calls[call_id].state == CallState.QUEUED


def test_expected_wait_counts_staffed_agents() -> None:
    sb = switchboard()
    sb.login(0.0, "0101")
    sb.login(0.0, "0102")
    _, fx = queued_call(sb, 1.0, "k1")
    _, fx = queued_call(sb, 1.0, "k2")
    caller = to_caller(fx, "queued")[0]
    assert caller.position == 2
    assert caller.expected_wait_s == pytest.approx(2 * sb.queues.mean_handle_s["general"] / 2)


def test_shutdown_ends_every_call_with_its_record() -> None:
    sb = switchboard()
    ready_agents(sb, 0.0, "0101")
    talking, _ = queued_call(sb, 1.0, "k1")
    sb.answer(2.0, "0101", talking)
    waiting, _ = queued_call(sb, 3.0, "k2")
    in_ivr, _ = offer(sb, 4.0, "k3")
    fx = sb.shutdown(5.0)
    outcomes = {e.call_id: e.outcome for e in journal(fx) if e.kind == EventKind.ENDED}
    assert outcomes == {talking: Outcome.ANSWERED, waiting: Outcome.FAILED, in_ivr: Outcome.FAILED}
    assert sb.calls == {}
    assert sb.trunks["pstn"].busy == 0
    assert sb.boards["ivr"].busy == 0
    assert sb.counters.failed == 2
    assert sb.agents["0101"].state == AgentState.NOT_READY


# Desktops ----------------------------------------------------------------------------------------


def test_desktop_grace_logs_out_an_idle_agent_whose_desktop_left() -> None:
    sb = switchboard()
    ready_agents(sb, 0.0, "0101")
    sb.desktop_attached("0101")
    sb.desktop_detached(10.0, "0101")
    sb.tick(39.0)
    assert sb.agents["0101"].state == AgentState.READY
    fx = sb.tick(40.0)
    assert sb.agents["0101"].state == AgentState.LOGGED_OUT
    assert to_agent(fx, "0101", "state")
    assert not sb.acd.is_ready("0101")


def test_desktop_back_within_grace_keeps_the_agent() -> None:
    sb = switchboard()
    ready_agents(sb, 0.0, "0101")
    sb.desktop_attached("0101")
    sb.desktop_attached("0101")
    sb.desktop_detached(10.0, "0101")  # one of two desktops left: nothing to do
    assert sb.next_deadline() is None
    sb.desktop_detached(11.0, "0101")
    sb.desktop_attached("0101")
    sb.tick(100.0)
    assert sb.agents["0101"].state == AgentState.READY


def test_desktop_grace_waits_for_a_busy_agent() -> None:
    sb = switchboard()
    ready_agents(sb, 0.0, "0101")
    call_id, _ = queued_call(sb, 1.0, "k1")
    sb.answer(2.0, "0101", call_id)
    sb.desktop_detached(3.0, "0101")
    sb.tick(33.0)
    assert sb.agents["0101"].state == AgentState.TALKING
    sb.caller_hang_up(40.0, call_id)
    sb.tick(45.0)  # wrap-up over: ready, but nobody at the desk
    assert sb.agents["0101"].state == AgentState.READY
    sb.tick(63.0)
    assert sb.agents["0101"].state == AgentState.LOGGED_OUT


def test_desktop_grace_counts_from_the_last_detach() -> None:
    sb = switchboard()
    ready_agents(sb, 0.0, "0101")
    sb.desktop_attached("0101")
    sb.desktop_detached(0.0, "0101")  # grace until 30
    sb.desktop_attached("0101")  # back at once
    sb.desktop_detached(20.0, "0101")  # gone again: grace until 50
    sb.tick(30.0)
    assert sb.agents["0101"].state == AgentState.READY
    sb.tick(50.0)
    assert sb.agents["0101"].state == AgentState.LOGGED_OUT


def test_an_earlier_sessions_absence_does_not_log_out_the_next_login() -> None:
    sb = switchboard()
    ready_agents(sb, 0.0, "0101")
    sb.desktop_attached("0101")
    sb.desktop_detached(10.0, "0101")  # grace until 40, for this session
    sb.logout(11.0, "0101")
    sb.login(12.0, "0101")  # a new session (a web desk, say) that has not attached yet
    sb.tick(41.0)
    assert sb.agents["0101"].state != AgentState.LOGGED_OUT


# Errors: refused, and nothing changed ---------------------------------------------------------------


def busy_switchboard() -> tuple[Switchboard, dict[str, str]]:
    """A site with a call in each state, so an error has plenty it could wrongly touch."""
    sb = switchboard()
    ready_agents(sb, 0.0, "0101", "0102")
    talking, _ = queued_call(sb, 1.0, "k-talk")
    sb.answer(1.5, "0101", talking)
    ringing, _ = queued_call(sb, 2.0, "k-ring")
    queued, _ = queued_call(sb, 3.0, "k-queue")
    in_ivr, _ = offer(sb, 4.0, "k-ivr")
    ended, _ = offer(sb, 4.0, "k-ended")
    sb.caller_hang_up(4.5, ended)
    assert sb.calls[talking].state == CallState.TALKING
    assert sb.calls[ringing].state == CallState.RINGING
    assert sb.calls[queued].state == CallState.QUEUED
    return sb, {"talking": talking, "ringing": ringing, "queued": queued, "ivr": in_ivr, "ended": ended}


def offer_with(**kwargs: Any) -> Callable[[Switchboard, dict[str, str]], object]:
    args: dict[str, Any] = {"idempotency_key": "k-new", "ani": "13800000000", "dnis": SERVICE} | kwargs
    return lambda sb, c: sb.offer(5.0, **args)


BAD_REQUESTS: list[tuple[str, type[VccError], str, Callable[[Switchboard, dict[str, str]], object]]] = [
    # Unknown agents and calls.
    ("login unknown agent", NotFound, "unknown-agent", lambda sb, c: sb.login(5.0, "9999")),
    ("ready unknown agent", NotFound, "unknown-agent", lambda sb, c: sb.set_ready(5.0, "9999", True)),
    ("answer unknown call", NotFound, "unknown-call", lambda sb, c: sb.answer(5.0, "0102", "nope")),
    ("answer ended call", NotFound, "unknown-call", lambda sb, c: sb.answer(5.0, "0102", c["ended"])),
    ("hang up unknown call", NotFound, "unknown-call", lambda sb, c: sb.caller_hang_up(5.0, "nope")),
    ("caller gone twice", NotFound, "unknown-call", lambda sb, c: sb.caller_hang_up(5.0, c["ended"])),
    ("digits unknown call", NotFound, "unknown-call", lambda sb, c: sb.caller_digits(5.0, "nope", "1")),
    ("unknown trunk group", NotFound, "unknown-trunk-group", offer_with(trunk_group="nope")),
    # Bad values.
    ("empty ani", InvalidArgument, "bad-ani", offer_with(ani="")),
    ("letters in ani", InvalidArgument, "bad-ani", offer_with(ani="1380abc")),
    ("ani too long", InvalidArgument, "bad-ani", offer_with(ani="1" * 33)),
    ("wrong dnis", InvalidArgument, "unknown-dnis", offer_with(dnis="10086")),
    ("empty dnis", InvalidArgument, "unknown-dnis", offer_with(dnis="")),
    ("empty key", InvalidArgument, "bad-idempotency-key", offer_with(idempotency_key="")),
    ("key too long", InvalidArgument, "bad-idempotency-key", offer_with(idempotency_key="k" * 129)),
    ("call id not ascii", InvalidArgument, "bad-call-id", offer_with(call_id="呼叫")),
    ("call id too long", InvalidArgument, "bad-call-id", offer_with(call_id="c" * 65)),
    (
        "too many attached",
        InvalidArgument,
        "attached-data-too-large",
        offer_with(attached={f"k{i}": "v" for i in range(65)}),
    ),
    ("attached too big", InvalidArgument, "attached-data-too-large", offer_with(attached={"k": "v" * 8192})),
    ("empty digits", InvalidArgument, "bad-digits", lambda sb, c: sb.caller_digits(5.0, c["ivr"], "")),
    ("letter digits", InvalidArgument, "bad-digits", lambda sb, c: sb.caller_digits(5.0, c["ivr"], "1a")),
    (
        "too many digits",
        InvalidArgument,
        "bad-digits",
        lambda sb, c: sb.caller_digits(5.0, c["ivr"], "1" * 33),
    ),
    (
        "not ready without reason",
        InvalidArgument,
        "reason-required",
        lambda sb, c: sb.set_ready(5.0, "0101", False),
    ),
    (
        "reason too long",
        InvalidArgument,
        "bad-reason-code",
        lambda sb, c: sb.set_ready(5.0, "0101", False, "x" * 65),
    ),
    # Reused identities.
    ("reused live key", AlreadyExists, "offer-key-reused", offer_with(idempotency_key="k-ivr")),
    ("reused ended key", AlreadyExists, "offer-key-reused", offer_with(idempotency_key="k-ended")),
    (
        "reused live call id",
        AlreadyExists,
        "call-exists",
        lambda sb, c: sb.offer(5.0, idempotency_key="k-new", ani="1", dnis=SERVICE, call_id=c["queued"]),
    ),
    ("duplicate login", AlreadyExists, "already-logged-in", lambda sb, c: sb.login(5.0, "0101")),
    # Wrong state.
    (
        "ready while logged out",
        FailedPrecondition,
        "not-logged-in",
        lambda sb, c: sb.set_ready(5.0, "0201", True),
    ),
    (
        "answer while talking",
        FailedPrecondition,
        "call-not-ringing",
        lambda sb, c: sb.answer(5.0, "0101", c["talking"]),
    ),
    (
        "answer another agent's call",
        FailedPrecondition,
        "not-your-call",
        lambda sb, c: sb.answer(5.0, "0101", c["ringing"]),
    ),
    (
        "answer a queued call",
        FailedPrecondition,
        "not-your-call",
        lambda sb, c: sb.answer(5.0, "0101", c["queued"]),
    ),
    (
        "hold a ringing call",
        FailedPrecondition,
        "wrong-call-state",
        lambda sb, c: sb.hold(5.0, "0102", c["ringing"], True),
    ),
    (
        "retrieve a call not held",
        FailedPrecondition,
        "wrong-call-state",
        lambda sb, c: sb.hold(5.0, "0101", c["talking"], False),
    ),
    (
        "hang up a ringing call",
        FailedPrecondition,
        "call-not-connected",
        lambda sb, c: sb.agent_hang_up(5.0, "0102", c["ringing"]),
    ),
    ("logout while talking", FailedPrecondition, "agent-busy", lambda sb, c: sb.logout(5.0, "0101")),
    ("logout while ringing", FailedPrecondition, "agent-busy", lambda sb, c: sb.logout(5.0, "0102")),
    (
        "end wrap-up when not in wrap-up",
        FailedPrecondition,
        "wrong-agent-state",
        lambda sb, c: sb.end_wrap_up(5.0, "0102", True),
    ),
]


@pytest.mark.parametrize(
    ("error", "error_id", "request_"), [r[1:] for r in BAD_REQUESTS], ids=[r[0] for r in BAD_REQUESTS]
)
def test_bad_request_is_refused_and_changes_nothing(
    error: type[VccError], error_id: str, request_: Callable[[Switchboard, dict[str, str]], object]
) -> None:
    sb, calls = busy_switchboard()
    before = snapshot(sb)
    with pytest.raises(error) as info:
        request_(sb, calls)
    assert info.value.error_id == error_id
    assert snapshot(sb) == before


@pytest.mark.parametrize("code", ["0101", "0102", "0201"])
def test_wrong_state_actions_of_a_logged_out_agent(code: str) -> None:
    sb = switchboard()
    call_id, _ = queued_call(sb, 1.0, "k1")
    before = snapshot(sb)
    for action in (
        lambda: sb.set_ready(2.0, code, True),
        lambda: sb.end_wrap_up(2.0, code, True),
        lambda: sb.answer(2.0, code, call_id),
        lambda: sb.hold(2.0, code, call_id, True),
        lambda: sb.agent_hang_up(2.0, code, call_id),
        lambda: sb.logout(2.0, code),
    ):
        with pytest.raises(FailedPrecondition):
            action()
        assert snapshot(sb) == before


def test_reused_offer_key_points_at_the_first_call() -> None:
    sb = switchboard()
    call_id, _ = offer(sb, 1.0, "k1")
    with pytest.raises(AlreadyExists):
        offer(sb, 2.0, "k1")
    assert sb.call_for_key("k1") == call_id
    assert sb.ended_outcome("k1") is None
    assert sb.counters.offered == 1
    sb.caller_hang_up(3.0, call_id)
    with pytest.raises(AlreadyExists):
        offer(sb, 4.0, "k1")
    assert sb.call_for_key("k1") == call_id
    assert sb.ended_outcome("k1") == (call_id, Outcome.ABANDONED)
    assert sb.call_for_key("never") is None


def test_pre_routed_call_keeps_its_id() -> None:
    sb = switchboard()
    call_id, fx = offer(sb, 1.0, "k1", call_id="central-minted-1", attached={"customer": "42"})
    assert call_id == "central-minted-1"
    assert sb.calls[call_id].attached == {"customer": "42"}
    assert journal(fx)[0].call_id == call_id


def test_a_call_coming_back_to_the_site_never_reuses_journal_numbers() -> None:
    sb = switchboard()
    first_visit: list[Effect] = []
    call_id, fx = offer(sb, 1.0, "leg-1", call_id="central-minted-1")
    first_visit += fx + sb.caller_hang_up(2.0, call_id)
    try:
        # The same call offered again (say, transferred back from another city) under a new key.
        _, second_visit = offer(sb, 3.0, "leg-2", call_id="central-minted-1")
    except AlreadyExists:
        return  # refusing it is a fine answer too
    # The outbox keeps one record per (call_id, site_id, seq): numbers go on where they stopped.
    assert next(e.seq for e in journal(second_visit)) == max(e.seq for e in journal(first_visit)) + 1
