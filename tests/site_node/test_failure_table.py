"""The failure contract: what happens to a call in every state when a site or central fails.

The contract (docs/RELIABILITY.md has it as a table, with where each row is tested):

- its own site dies: a call whose trunk is on that site is lost with it (lost_on_failed_site),
  whatever its state; a call in wrap-up had ended and its record is in the outbox, shipped when
  the site restarts; a call of that site served elsewhere is ended by the serving site
  ("origin-lost": its agent goes to wrap-up, or back to READY while it was only ringing).
- the site serving it for another city dies (offered, ringing, answer asked, talking, held
  there): the call goes back to its origin's queue with its original arrival time, that site
  excluded; the caller is never dropped and is answered once.
- the central leader dies: a queued call's routing question is answered "stay", it asks again
  later and is served at home meanwhile; calls in the IVR, ringing, talking, held, in wrap-up or
  served at another city go on untouched (the legs run site to site); records wait in the outbox.

"Its own site dies" for a local call cannot be shown on a pure switchboard (the switchboard is
the thing that dies): tests/chaos/test_chaos.py kills a site process under load and checks that
only that site's calls are lost (lost_on_failed_site), none elsewhere, and that every call that
ended has exactly one record at central. The durable outbox is tested in test_outbox.py, the
shipper against an absent central in test_shipper.py and tests/integration (central outage).

Here each row that can be is driven on pure switchboards: a site dying is seen by the other one as
its stream breaking (`remote_lost` at the origin, `remote_caller_gone(.., "origin-lost")` at the
target); the central leader dying is seen as a routing question answered "stay" (site_node/
central_link.py answers so when RouteCall fails) and as no central message at all.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from routing.agents import AgentState
from site_node.callcontrol.domain import CallState, EventKind, Outcome
from tests.site_node.test_remote_legs import Leg, Wire, overflowed, province, queued_at

# The stage of a call served at another city, in the order it gets there.
REMOTE_STAGES = ("offering", "ringing", "answer-asked", "talking", "held")


def _remote_call(stage: str) -> tuple[Wire, str, Leg, str, dict[str, list[str]]]:
    """A gz call served at sz, brought to `stage`; (wire, call id, leg, sz agent, agent codes)."""
    wire, codes = province()
    wire.log_in("gz", *codes["gz"])  # staffed, nobody ready: the call waits and overflows
    agent = codes["sz"][0]
    wire.ready("sz", agent)
    call = wire.arrive("gz")
    wire.advance(0.0)
    leg = overflowed(wire, call)
    if stage == "offering":
        return wire, call, leg, agent, codes
    wire.to_target(leg.offer_id)  # sz reserves and rings
    wire.to_origin(leg.offer_id)  # gz hears "reserved"
    if stage == "ringing":
        return wire, call, leg, agent, codes
    wire.do("sz", lambda sb, now: sb.answer(now, agent, call))
    if stage == "answer-asked":
        return wire, call, leg, agent, codes
    wire.deliver_all()
    if stage == "held":
        wire.do("sz", lambda sb, now: sb.hold(now, agent, call, True))
        wire.deliver_all()
    return wire, call, leg, agent, codes


# -- the site serving it for another city dies: the origin sees the leg's stream break ---------------


@pytest.mark.parametrize("stage", REMOTE_STAGES)
def test_serving_site_dies_the_caller_goes_back_to_the_origins_queue(stage: str) -> None:
    wire, call, leg, _, codes = _remote_call(stage)
    gz = wire.sites["gz"]
    arrived = gz.calls[call].arrived_at
    wire.advance(0.5)  # inside the offer timeout (1 s): the break, not the timer, ends the leg

    wire.break_leg(leg.offer_id)
    wire.lost_at_origin(leg.offer_id)  # sz is dead: only gz learns anything

    assert queued_at(wire, "gz", call), "the caller was dropped"
    assert gz.calls[call].arrived_at == arrived, "lost its place: arrival time changed"
    assert "ended" not in wire.heard(call)
    assert gz.ties["sz"].busy == 0 and gz.served_elsewhere == 0
    assert "sz" in gz.calls[call].excluded, "would be offered to the dead site again"
    kind = EventKind.ROUTE_FAILED if stage == "offering" else EventKind.RETURNED
    last = [e for e in wire.journal[(call, "gz")] if e.kind == kind][-1]
    assert dict(last.data) == {"target": "sz", "reason": "target-lost"}
    # Served at home as soon as an agent is free there, answered once.
    wire.ready("gz", codes["gz"][0])
    assert gz.calls[call].state == CallState.RINGING and gz.calls[call].remote is None
    wire.do("gz", lambda sb, now: sb.answer(now, codes["gz"][0], call))
    wire.do("gz", lambda sb, now: sb.agent_hang_up(now, codes["gz"][0], call))
    assert wire.caller[call][-1].outcome == Outcome.ANSWERED
    assert [t.kind for t in wire.caller[call]].count("ended") == 1


def test_serving_site_dies_during_wrap_up_changes_nothing() -> None:
    wire, call, leg, agent, _ = _remote_call("talking")
    wire.do("sz", lambda sb, now: sb.agent_hang_up(now, agent, call))
    wire.deliver_all()
    assert wire.sites["sz"].agents[agent].state == AgentState.WRAP_UP
    ended = [t for t in wire.caller[call] if t.kind == "ended"]
    # The call has ended at its origin; a stream that breaks now finds nothing to undo.
    assert wire.sites["gz"].remote_lost(wire.now, leg.offer_id) == []
    assert [t for t in wire.caller[call] if t.kind == "ended"] == ended
    assert call not in wire.sites["gz"].calls


def test_serving_site_dies_local_calls_of_the_origin_are_untouched() -> None:
    wire, _, leg, _, codes = _remote_call("talking")
    gz = wire.sites["gz"]
    # A local call talking at gz, another one queued behind it.
    talking_agent = codes["gz"][1]
    wire.ready("gz", talking_agent)
    local = wire.arrive("gz")
    wire.do("gz", lambda sb, now: sb.answer(now, talking_agent, local))
    waiting = wire.arrive("gz")
    before = {c: gz.calls[c].state for c in (local, waiting)}

    wire.break_leg(leg.offer_id)
    wire.lost_at_origin(leg.offer_id)

    assert {c: gz.calls[c].state for c in (local, waiting)} == before
    assert gz.agents[talking_agent].state == AgentState.TALKING


# -- the origin dies: the site serving its call sees the leg's stream break -------------------------


@pytest.mark.parametrize("stage", ["ringing", "answer-asked", "talking", "held"])
def test_origin_dies_the_serving_site_frees_its_agent(stage: str) -> None:
    wire, call, leg, agent, _ = _remote_call(stage)
    sz = wire.sites["sz"]
    wire.break_leg(leg.offer_id)
    wire.lost_at_target(leg.offer_id)  # gz is dead: only sz learns anything

    assert call not in sz.calls and sz.ties["gz"].busy == 0 and sz.served_for_others == 0
    if stage in ("talking", "held"):
        assert sz.agents[agent].state == AgentState.WRAP_UP
        hung = [e for e in wire.journal[(call, "sz")] if e.kind == EventKind.CALLER_HUNG_UP]
        assert dict(hung[-1].data) == {"reason": "origin-lost"}
    else:
        # Never connected: the offer is withdrawn and the agent is free again at once.
        assert sz.agents[agent].state == AgentState.READY
        assert any(e.kind == "withdrawn" for e in wire.agent_events[agent])
    # sz's agent takes the next call of its own city.
    if stage not in ("talking", "held"):
        local = wire.arrive("sz")
        assert sz.calls[local].state == CallState.RINGING and sz.calls[local].agent_code == agent


# -- the central leader dies: routing answers "stay", nothing else depends on it --------------------


def test_central_dies_a_queued_call_stays_asks_again_and_is_served_at_home() -> None:
    wire, codes = province()
    gz = wire.sites["gz"]
    wire.log_in("gz", *codes["gz"])
    call = wire.arrive("gz")
    wire.advance(10.0)
    wire.route("gz", call, None)  # central_link's answer when RouteCall fails
    assert queued_at(wire, "gz", call) and gz.calls[call].remote is None
    assert wire.heard(call)[-1] == "queued" and "ended" not in wire.heard(call)
    wire.advance(gz.routing.reroute_interval_s)
    wire.take_ask("gz", call)  # it asks again: a new leader answers it
    wire.ready("gz", codes["gz"][0])
    assert gz.calls[call].state == CallState.RINGING


def _local_stage(wire: Wire, codes: dict[str, list[str]], stage: str) -> tuple[str, str]:
    agent = codes["gz"][0]
    if stage == "ivr":
        call, effects = wire.sites["gz"].offer(
            wire.now, idempotency_key="k-ivr", ani="13800000001", dnis="10000"
        )
        wire.origin_of[call] = "gz"
        wire.carry("gz", effects)
        wire.ready("gz", agent)
        return call, agent
    wire.ready("gz", agent)
    call = wire.arrive("gz")
    if stage == "ringing":
        return call, agent
    wire.do("gz", lambda sb, now: sb.answer(now, agent, call))
    if stage == "held":
        wire.do("gz", lambda sb, now: sb.hold(now, agent, call, True))
    if stage == "wrap-up":
        wire.do("gz", lambda sb, now: sb.agent_hang_up(now, agent, call))
    return call, agent


FINISH: dict[str, Callable[[Wire, str, str], object]] = {
    "ivr": lambda w, c, a: w.do("gz", lambda sb, now: sb.caller_digits(now, c, "1")),
    "ringing": lambda w, c, a: w.do("gz", lambda sb, now: sb.answer(now, a, c)),
    "talking": lambda w, c, a: w.do("gz", lambda sb, now: sb.agent_hang_up(now, a, c)),
    "held": lambda w, c, a: w.do("gz", lambda sb, now: sb.hold(now, a, c, False)),
    "wrap-up": lambda w, c, a: None,
}


@pytest.mark.parametrize("stage", list(FINISH))
def test_central_dies_local_calls_go_on_and_end_with_their_records_journaled(stage: str) -> None:
    """Nothing in a local call waits for central: every step runs, and the journal (the outbox's
    input) holds the whole call, to be shipped when a central is back."""
    wire, codes = province(routing=None)
    call, agent = _local_stage(wire, codes, stage)
    gz = wire.sites["gz"]
    FINISH[stage](wire, call, agent)  # the next step, with no central anywhere
    if call in gz.calls and gz.calls[call].state != CallState.ENDED:
        if gz.calls[call].state == CallState.RINGING:
            wire.do("gz", lambda sb, now: sb.answer(now, gz.calls[call].agent_code, call))
        code = gz.calls[call].agent_code
        if gz.calls[call].state in (CallState.TALKING, CallState.HELD):
            if gz.calls[call].state == CallState.HELD:
                wire.do("gz", lambda sb, now: sb.hold(now, code, call, False))
            wire.do("gz", lambda sb, now: sb.agent_hang_up(now, code, call))
    assert call not in gz.calls or gz.calls[call].state == CallState.ENDED
    assert wire.kinds(call, "gz")[-1] == EventKind.ENDED
    assert wire.caller[call][-1].outcome == Outcome.ANSWERED
    wire.advance(10.0)  # wrap-up ends on the site's own timer
    assert gz.agents[agent].state == AgentState.READY


def test_central_dies_a_call_served_at_another_city_goes_on_site_to_site() -> None:
    wire, call, _, agent, _ = _remote_call("talking")
    wire.advance(30.0)  # no central message at all while it talks
    wire.do("sz", lambda sb, now: sb.agent_hang_up(now, agent, call))
    wire.deliver_all()
    assert wire.caller[call][-1].outcome == Outcome.ANSWERED
    assert wire.kinds(call, "gz")[-1] == EventKind.ENDED
    assert wire.kinds(call, "sz")[-1] == EventKind.AGENT_HUNG_UP
