"""The offer protocol under random traffic: two or three cities, callers and agents in each,
central's answers, messages delivered in any order that keeps each stream's own order, streams
that break, timers that run out. After every step the province must agree with itself: no call
queued twice or connected twice, no caller dropped because a leg failed, tie channels counted.
"""

from __future__ import annotations

import itertools
from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from routing.agents import ON_CALL, AgentState
from site_node.callcontrol import Switchboard
from site_node.callcontrol.domain import Call, CallState, EventKind, Outcome
from tests.site_node.test_remote_legs import Leg, Wire, province
from vcc.config import RoutingConfig

SITES = ("gz", "sz", "fs")
AGENT_CALL_STATE = {
    AgentState.RINGING: CallState.RINGING,
    AgentState.TALKING: CallState.TALKING,
    AgentState.HELD: CallState.HELD,
}
LEG_STATE = {"ringing": CallState.RINGING, "talking": CallState.TALKING, "held": CallState.HELD}
pick = st.integers(min_value=0, max_value=1000)


class OfferProtocolMachine(RuleBasedStateMachine):
    wire: Wire

    @initialize(
        sites=st.sampled_from([2, 3]),
        mode=st.sampled_from(["overflow", "pooled"]),
        tie_channels=st.sampled_from([1, 2]),
        wrap_up_s=st.sampled_from([0.0, 2.0]),
        # Agents of the other cities on a break from the start (the rest are ready, so that
        # offers find someone).
        on_break=st.sets(st.integers(min_value=3, max_value=8), max_size=2),
    )
    def start(self, sites: int, mode: str, tie_channels: int, wrap_up_s: float, on_break: set[int]) -> None:
        routing = RoutingConfig(mode=mode, overflow_after_s=2, offer_timeout_s=1, reroute_interval_s=1)  # type: ignore[arg-type]
        self.wire, codes = province(
            SITES[:sites],
            agents=3,
            tie_channels=tie_channels,
            trunk_channels=4,
            ring_timeout_s=6.0,
            wrap_up_s=wrap_up_s,
            routing=routing,
        )
        self.agents = [(site, code) for site in self.wire.sites for code in codes[site]]
        for i, (site, code) in enumerate(self.agents):
            if site != "gz" and i not in on_break:
                self.wire.ready(site, code)
            else:
                self.wire.log_in(site, code)
        # Calls whose caller hung up, and calls an agent hung up: the only ways a call may end.
        self.caller_left: set[str] = set()
        self.agent_left: set[str] = set()

    # Helpers ---------------------------------------------------------------------------------

    def live_origin_calls(self) -> list[tuple[str, Call]]:
        return [(s, c) for s, sb in self.wire.sites.items() for c in sb.calls.values() if not c.guest_of]

    def agents_in(self, *states: AgentState, guests_first: bool = False) -> list[tuple[str, str]]:
        """Agents in these states; with guests_first, those serving another city's call if any."""
        sites = self.wire.sites
        found = [(s, code) for s, code in self.agents if sites[s].agents[code].state in states]
        if guests_first:
            guests = [(s, code) for s, code in found if self.serves_guest(s, code)]
            return guests or found
        return found

    def serves_guest(self, site: str, code: str) -> bool:
        sb = self.wire.sites[site]
        call = sb.calls.get(sb.agents[code].call_id)
        return call is not None and bool(call.guest_of)

    def pending_legs(self) -> list[Leg]:
        return [leg for leg in self.wire.legs.values() if leg.to_target or leg.to_origin]

    def breakable_legs(self) -> list[Leg]:
        return [
            leg
            for leg in self.wire.legs.values()
            if not leg.broken
            and (leg.to_target or leg.to_origin or not (leg.origin_done and leg.target_done))
        ]

    def noticed_legs(self) -> list[Leg]:
        return [leg for leg in self.wire.legs.values() if leg.lost_at_origin or leg.lost_at_target]

    # Callers and central ---------------------------------------------------------------------

    # Most callers dial in the first city, whose agents start on a break: its calls move.
    @rule(site=st.sampled_from(["gz", "gz", "gz", *SITES]), digit=st.sampled_from(["1", "9"]))
    def caller_dials(self, site: str, digit: str) -> None:
        if site in self.wire.sites:
            self.wire.arrive(site, digit)

    @precondition(lambda self: self.live_origin_calls())
    @rule(i=pick, patient=st.integers(min_value=0, max_value=2))
    def caller_hangs_up(self, i: int, patient: int) -> None:
        if patient:
            return  # most callers hold on: calls live long enough to be moved and served
        calls = self.live_origin_calls()
        site, call = calls[i % len(calls)]
        self.caller_left.add(call.call_id)
        self.wire.do(site, lambda sb, now: sb.caller_hang_up(now, call.call_id))

    @precondition(lambda self: self.wire.asks)
    @rule(i=pick, choice=st.integers(min_value=0, max_value=3))
    def central_answers(self, i: int, choice: int) -> None:
        """Stay (0), or go to another city (mostly)."""
        site, ask = self.wire.asks.pop(i % len(self.wire.asks))
        others = [s for s in self.wire.sites if s != site]
        target = others[(choice - 1) % len(others)] if choice else None
        self.wire.do(site, lambda sb, now: sb.route_decided(now, ask.call_id, target, f"d-{i}"))

    @rule(origin=st.sampled_from(SITES), to=st.sampled_from(SITES))
    def central_pulls(self, origin: str, to: str) -> None:
        """Pooled: an agent is free at `to`; its longest-waiting call anywhere is pulled there."""
        if origin in self.wire.sites and to in self.wire.sites:
            self.wire.do(origin, lambda sb, now: sb.pull_call(now, "general", to, "pull"))

    # The wire ------------------------------------------------------------------------------

    @precondition(lambda self: self.pending_legs())
    @rule(i=pick, to_target=st.booleans())
    def deliver(self, i: int, to_target: bool) -> None:
        legs = self.pending_legs()
        leg = legs[i % len(legs)]
        if (to_target and leg.to_target) or not leg.to_origin:
            self.wire.to_target(leg.offer_id)
        else:
            self.wire.to_origin(leg.offer_id)

    @precondition(lambda self: self.pending_legs())
    @rule(i=pick)
    def one_stream_catches_up(self, i: int) -> None:
        legs = self.pending_legs()
        leg = legs[i % len(legs)]
        while leg.to_target or leg.to_origin:
            self.wire.to_target(leg.offer_id) if leg.to_target else self.wire.to_origin(leg.offer_id)

    @precondition(lambda self: self.breakable_legs())
    @rule(i=pick)
    def stream_breaks(self, i: int) -> None:
        legs = self.breakable_legs()
        self.wire.break_leg(legs[i % len(legs)].offer_id)

    @precondition(lambda self: self.noticed_legs())
    @rule(i=pick, origin_first=st.booleans())
    def side_learns_of_break(self, i: int, origin_first: bool) -> None:
        legs = self.noticed_legs()
        leg = legs[i % len(legs)]
        if (origin_first and leg.lost_at_origin) or not leg.lost_at_target:
            self.wire.lost_at_origin(leg.offer_id)
        else:
            self.wire.lost_at_target(leg.offer_id)

    @rule()
    def everything_delivered(self) -> None:
        self.wire.deliver_all()
        self.quiet_province_agrees()

    @rule(seconds=st.sampled_from([0.0, 0.5, 1.0, 2.5, 4.0]))
    def time_passes(self, seconds: float) -> None:
        self.wire.advance(seconds)

    # Agents --------------------------------------------------------------------------------

    @precondition(lambda self: self.agents_in(AgentState.NOT_READY, AgentState.WRAP_UP))
    @rule(i=pick)
    def agent_gets_ready(self, i: int) -> None:
        agents = self.agents_in(AgentState.NOT_READY, AgentState.WRAP_UP)
        site, code = agents[i % len(agents)]
        if self.wire.sites[site].agents[code].state == AgentState.WRAP_UP:
            self.wire.do(site, lambda sb, now: sb.end_wrap_up(now, code, True))
        else:
            self.wire.do(site, lambda sb, now: sb.set_ready(now, code, True))

    @precondition(lambda self: self.agents_in(AgentState.READY))
    @rule(i=pick)
    def agent_takes_a_break(self, i: int) -> None:
        agents = self.agents_in(AgentState.READY)
        site, code = agents[i % len(agents)]
        self.wire.do(site, lambda sb, now: sb.set_ready(now, code, False, "break"))

    @precondition(lambda self: self.agents_in(AgentState.RINGING))
    @rule(i=pick, guests_first=st.booleans())
    def agent_answers(self, i: int, guests_first: bool) -> None:
        agents = self.agents_in(AgentState.RINGING, guests_first=guests_first)
        site, code = agents[i % len(agents)]
        call_id = self.wire.sites[site].agents[code].call_id
        self.wire.do(site, lambda sb, now: sb.answer(now, code, call_id))

    @precondition(lambda self: self.agents_in(AgentState.TALKING, AgentState.HELD))
    @rule(i=pick, hang_up=st.booleans(), guests_first=st.booleans())
    def agent_hangs_up_or_holds(self, i: int, hang_up: bool, guests_first: bool) -> None:
        agents = self.agents_in(AgentState.TALKING, AgentState.HELD, guests_first=guests_first)
        site, code = agents[i % len(agents)]
        agent = self.wire.sites[site].agents[code]
        if hang_up:
            self.agent_left.add(agent.call_id)
            self.wire.do(site, lambda sb, now: sb.agent_hang_up(now, code, agent.call_id))
        else:
            hold = agent.state == AgentState.TALKING
            self.wire.do(site, lambda sb, now: sb.hold(now, code, agent.call_id, hold))

    # Invariants ----------------------------------------------------------------------------

    @invariant()
    def a_call_is_queued_at_its_origin_only_while_no_leg_is_open(self) -> None:
        queued_at: Counter[str] = Counter()
        for site, sb in self.wire.sites.items():
            for call_id in list(sb.acd._queued):
                queued_at[call_id] += 1
                call = sb.calls[call_id]
                assert not call.guest_of, f"guest {call_id} queued at {site}"
                assert call.remote is None, f"{call_id} queued at {site} with a leg open"
                assert call.state == CallState.QUEUED
            for call in sb.calls.values():
                if not call.guest_of and call.state == CallState.QUEUED and not call.parked:
                    assert (sb.acd.queued(call.call_id) is None) == (call.remote is not None)
        assert all(n == 1 for n in queued_at.values()), queued_at

    @invariant()
    def never_connected_twice(self) -> None:
        unaware = {  # a target that has not learned yet that its stream broke
            (leg.target, leg.offer.call_id) for leg in self.wire.legs.values() if leg.lost_at_target
        }
        talking: Counter[str] = Counter()
        for site, code in self.agents_in(AgentState.TALKING, AgentState.HELD):
            call_id = self.wire.sites[site].agents[code].call_id
            if (site, call_id) not in unaware:
                talking[call_id] += 1
        assert all(n == 1 for n in talking.values()), talking
        assert all(n <= 1 for n in self.wire.connected_on_leg.values()), self.wire.connected_on_leg
        for call_id, heard in self.wire.caller.items():
            kinds = [t.kind for t in heard]
            assert kinds.count("ended") <= 1 and (not kinds or "ended" not in kinds[:-1]), (call_id, kinds)
            connected = [k for k in kinds if k in ("connected", "queued")]
            assert all(not (a == b == "connected") for a, b in itertools.pairwise(connected)), (
                call_id,
                kinds,
            )

    @invariant()
    def agents_and_their_calls_agree(self) -> None:
        for site, sb in self.wire.sites.items():
            for code, agent in sb.agents.items():
                if agent.state in ON_CALL:
                    call = sb.calls.get(agent.call_id)
                    assert call is not None, (site, code, agent)
                    assert call.agent_code == code and call.state == AGENT_CALL_STATE[agent.state], (
                        call,
                        agent,
                    )
            for call in sb.calls.values():
                if call.guest_of:
                    assert call.state in AGENT_CALL_STATE.values()
                    assert sb.agents[call.agent_code].call_id == call.call_id

    @invariant()
    def nobody_is_dropped_because_a_leg_failed(self) -> None:
        wire = self.wire
        for call_id, origin in wire.origin_of.items():
            ended = [e for e in wire.journal.get((call_id, origin), []) if e.kind == EventKind.ENDED]
            heard_end = [t for t in wire.caller.get(call_id, []) if t.kind == "ended"]
            if call_id in wire.sites[origin].calls:
                assert not ended and not heard_end
                continue
            assert len(ended) == 1 and len(heard_end) == 1, (call_id, ended, heard_end)
            outcome = ended[0].outcome
            assert outcome == heard_end[0].outcome
            if outcome == Outcome.ABANDONED:
                assert call_id in self.caller_left, f"{call_id} abandoned though its caller stayed"
            elif outcome == Outcome.ANSWERED:
                assert call_id in self.caller_left | self.agent_left, f"{call_id} ended on its own"
            else:
                assert outcome == Outcome.BLOCKED and len(wire.journal[(call_id, origin)]) == 2

    @invariant()
    def tie_channels_busy_equal_open_legs(self) -> None:
        for site, sb in self.wire.sites.items():
            calls = sb.calls.values()
            for peer, pool in sb.ties.items():
                out = sum(1 for c in calls if c.remote is not None and c.remote.target_site_id == peer)
                guests = sum(1 for c in calls if c.guest_of == peer)
                assert pool.busy == out + guests, (site, peer, pool.busy, out, guests)
                # A call is served elsewhere or a guest here, never both.
                assert not [c for c in calls if c.remote is not None and c.guest_of]

    @invariant()
    def quiet_province_agrees(self) -> None:
        if not self.wire.quiet:
            return
        sites = self.wire.sites
        for target, sb in sites.items():
            for guest in (c for c in sb.calls.values() if c.guest_of):
                home = sites[guest.guest_of].calls.get(guest.call_id)
                leg = home.remote if home is not None else None
                assert home is not None and leg is not None, f"orphan guest {guest}"
                assert leg.offer_id == guest.offer_id, f"guest {guest} of a closed leg"
                assert leg.target_site_id == target and leg.agent_code == guest.agent_code
                assert LEG_STATE[leg.state] == guest.state == home.state, (leg, guest)
        for origin, call in self.live_origin_calls():
            if call.remote is not None:
                found = sites[call.remote.target_site_id].calls.get(call.call_id)
                assert found is not None and found.offer_id == call.remote.offer_id, (origin, call)

    def teardown(self) -> None:
        """Everyone hangs up: every site ends empty, every channel free, every agent off calls."""
        wire = getattr(self, "wire", None)
        if wire is None:
            return
        wire.deliver_all()
        for site, call in self.live_origin_calls():
            self.caller_left.add(call.call_id)
            wire.do(site, lambda sb, now, c=call.call_id: sb.caller_hang_up(now, c))
        wire.deliver_all()
        for site, sb in wire.sites.items():
            assert not sb.calls, (site, sb.calls)
            assert sb.acd.total_waiting == 0
            assert all(p.busy == 0 for p in (*sb.ties.values(), *sb.trunks.values(), *sb.boards.values()))
            assert not any(a.state in ON_CALL for a in sb.agents.values()), sb.agents
            assert served(sb) == (0, 0)
        self.nobody_is_dropped_because_a_leg_failed()


def served(sb: Switchboard) -> tuple[int, int]:
    return sb.served_elsewhere, sb.served_for_others


OfferProtocolMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestOfferProtocolMachine = OfferProtocolMachine.TestCase
