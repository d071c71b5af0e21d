"""Calls served in another city: the site-to-site offer protocol between pure switchboards.

`Wire` stands in for the gRPC streams of site_node/grpc_api/peers.py: one stream per remote leg, a FIFO
queue per direction, delivered when the test says so, and breakable at any moment (each side
then learns on its own). It follows the adapter's rules: the target answers an offer with
reserved or refused; a refusal, a hang-up or a return ends the target's side of the stream; an
"end" from the origin is the origin's last word, after which the target closes its side.
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from routing.agents import AgentState
from site_node.callcontrol import RemoteOfferIn, Switchboard
from site_node.callcontrol.domain import (
    AskRoute,
    CallState,
    Effect,
    EventKind,
    FetchCustomer,
    Journal,
    LegToOrigin,
    LegToTarget,
    OfferRemote,
    Outcome,
    RecordedEvent,
    ToAgent,
    ToCaller,
)
from tools.province.generate import SiteSpec, agent_codes, generate_province
from vcc.config import RoutingConfig, parse_province

SERVICE = "10000"
# Nothing here verifies it; the config only checks that it looks like an argon2id hash.
FAKE_HASH = "$argon2id$v=19$m=19456,t=2,p=1$ZmFrZXNhbHQ$ZmFrZWhhc2hmYWtlaGFzaA"
ANI = "13800000000"
# Target -> origin messages after which the target's side of the stream is over.
TERMINAL = frozenset({"refused", "hung_up", "returned", "closed"})


# The wire ----------------------------------------------------------------------------------


@dataclass
class Leg:
    """One ServeCall stream: the offer, then messages both ways, each direction in order."""

    offer: OfferRemote
    origin: str
    to_target: deque[tuple[str, str]] = field(default_factory=deque)
    to_origin: deque[tuple[str, str]] = field(default_factory=deque)
    # The origin said its last word (end) or heard the target's; nothing more goes to the target.
    origin_done: bool = False
    # The target's side of the stream is over; it reads nothing more.
    target_done: bool = False
    broken: bool = False
    # A broken stream: each side is told on its own, when the test delivers it.
    lost_at_origin: bool = False
    lost_at_target: bool = False

    @property
    def offer_id(self) -> str:
        return self.offer.offer_id

    @property
    def target(self) -> str:
        return self.offer.target_site_id

    @property
    def pending(self) -> bool:
        return bool(self.to_target or self.to_origin or self.lost_at_origin or self.lost_at_target)


class Wire:
    """Switchboards of one province, the streams between them, and everything they emitted."""

    def __init__(self, sites: Mapping[str, Switchboard]) -> None:
        self.sites = dict(sites)
        self.now = 0.0
        self.legs: dict[str, Leg] = {}
        self.asks: list[tuple[str, AskRoute]] = []
        self.journal: dict[tuple[str, str], list[RecordedEvent]] = {}
        self.caller: dict[str, list[ToCaller]] = {}
        self.agent_events: dict[str, list[ToAgent]] = {}
        self.origin_of: dict[str, str] = {}
        # "connected" told to a caller, per remote leg.
        self.connected_on_leg: dict[str, int] = {}
        self._keys = itertools.count(1)

    # Running operations and carrying their effects -----------------------------------------

    def do(self, site_id: str, op: Callable[[Switchboard, float], list[Effect]]) -> list[Effect]:
        effects = op(self.sites[site_id], self.now)
        self.carry(site_id, effects)
        return effects

    def carry(self, site_id: str, effects: Iterable[Effect]) -> None:
        fetches: list[str] = []
        for fx in effects:
            match fx:
                case Journal(event):
                    self._record(event, site_id)
                case ToCaller():
                    assert self.origin_of.get(fx.call_id) == site_id, (
                        f"{site_id} spoke to another city's caller"
                    )
                    self.caller.setdefault(fx.call_id, []).append(fx)
                case ToAgent():
                    self.agent_events.setdefault(fx.agent_code, []).append(fx)
                case FetchCustomer():
                    fetches.append(fx.call_id)
                case AskRoute():
                    self.asks.append((site_id, fx))
                case OfferRemote():
                    assert fx.offer_id not in self.legs, f"offer id {fx.offer_id} reused"
                    leg = self.legs[fx.offer_id] = Leg(fx, site_id)
                    leg.to_target.append(("offer", ""))
                case LegToTarget():
                    leg = self.legs[fx.offer_id]
                    assert leg.origin == site_id
                    if not leg.origin_done:
                        leg.to_target.append((fx.kind, fx.reason))
                        leg.origin_done = fx.kind == "end"
                case LegToOrigin():
                    leg = self.legs[fx.offer_id]
                    assert leg.target == site_id
                    if not leg.target_done:
                        arg = fx.agent_code if fx.kind in ("answer_asked", "hung_up") else fx.reason
                        leg.to_origin.append((fx.kind, arg))
                        leg.target_done = fx.kind in TERMINAL
        for call_id in fetches:
            # No customer record: the call may ring at once.
            self.do(site_id, lambda sb, now, c=call_id: sb.customer_found(now, c, None))  # type: ignore[misc]

    def _record(self, event: RecordedEvent, site_id: str) -> None:
        assert event.site_id == site_id
        history = self.journal.setdefault((event.call_id, site_id), [])
        last = history[-1].seq if history else 0
        assert event.seq == last + 1, f"journal of {event.call_id} at {site_id}: seq {event.seq} after {last}"
        history.append(event)

    # Time --------------------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Let time pass, firing every site's timers in time order."""
        until = self.now + seconds
        while True:
            due = [
                (d, s) for s, sb in self.sites.items() if (d := sb.next_deadline()) is not None and d <= until
            ]
            if not due:
                break
            when, site_id = min(due)
            self.now = max(self.now, when)
            self.do(site_id, lambda sb, now: sb.tick(now))
        self.now = until

    # Callers and agents --------------------------------------------------------------------

    def arrive(self, site_id: str, digit: str = "1") -> str:
        """A caller dials in at `site_id` and picks a menu choice at once."""
        key = f"key-{next(self._keys)}"
        sb = self.sites[site_id]
        call_id, effects = sb.offer(self.now, idempotency_key=key, ani=ANI, dnis=SERVICE)
        self.origin_of[call_id] = site_id
        self.carry(site_id, effects)
        call = sb.calls.get(call_id)
        if call is not None and call.state == CallState.IVR:
            self.do(site_id, lambda sb, now: sb.caller_digits(now, call_id, digit))
        return call_id

    def ready(self, site_id: str, *codes: str) -> None:
        for code in codes:
            if self.sites[site_id].agents[code].state == AgentState.LOGGED_OUT:
                self.do(site_id, lambda sb, now, c=code: sb.login(now, c))  # type: ignore[misc]
            self.do(site_id, lambda sb, now, c=code: sb.set_ready(now, c, True))  # type: ignore[misc]

    def log_in(self, site_id: str, *codes: str) -> None:
        """Logged in but not ready: staffed, nobody to ring."""
        for code in codes:
            self.do(site_id, lambda sb, now, c=code: sb.login(now, c))  # type: ignore[misc]

    # Routing -------------------------------------------------------------------------------

    def take_ask(self, site_id: str, call_id: str) -> AskRoute:
        for i, (s, ask) in enumerate(self.asks):
            if s == site_id and ask.call_id == call_id:
                del self.asks[i]
                return ask
        raise AssertionError(f"no routing question from {site_id} for {call_id}: {self.asks}")

    def route(self, site_id: str, call_id: str, target: str | None, decision_id: str = "d-1") -> list[Effect]:
        self.take_ask(site_id, call_id)
        return self.do(site_id, lambda sb, now: sb.route_decided(now, call_id, target, decision_id))

    def open_leg(self, call_id: str) -> Leg:
        """The newest leg of a call."""
        legs = [leg for leg in self.legs.values() if leg.offer.call_id == call_id]
        assert legs, f"no leg for {call_id}"
        return legs[-1]

    # Delivery ------------------------------------------------------------------------------

    def to_target(self, offer_id: str) -> list[Effect]:
        """Deliver the next origin -> target message of a leg."""
        leg = self.legs[offer_id]
        kind, arg = leg.to_target.popleft()
        sb = self.sites[leg.target]
        if kind == "offer":
            o = leg.offer
            offer = RemoteOfferIn(
                o.offer_id,
                o.call_id,
                leg.origin,
                o.skill_group,
                o.priority,
                o.arrived_at,
                o.ani,
                o.dnis,
                o.attached,
                o.customer,
                o.agent_code,
                o.purpose,
            )
            agent, refusal, effects = sb.serve_remote(self.now, offer)
            self.carry(leg.target, effects)
            if agent is None:
                assert not effects
                leg.to_origin.append(("refused", refusal))
                leg.target_done = True
            else:
                leg.to_origin.append(("reserved", agent))
            return effects
        if leg.target_done:
            return []  # the target stopped reading this stream
        if kind == "confirm":
            return self.do(leg.target, lambda sb, now: sb.remote_answer_confirmed(now, offer_id))
        assert kind == "end", kind
        effects = self.do(leg.target, lambda sb, now: sb.remote_caller_gone(now, offer_id, arg))
        # The origin is done with the leg: the target ends its side of the stream.
        leg.to_origin.append(("closed", ""))
        leg.target_done = True
        return effects

    def to_origin(self, offer_id: str) -> list[Effect]:
        """Deliver the next target -> origin message of a leg."""
        leg = self.legs[offer_id]
        kind, arg = leg.to_origin.popleft()
        sb = self.sites[leg.origin]
        effects: list[Effect]
        if kind == "reserved":
            effects = sb.remote_reserved(self.now, offer_id, arg)
        elif kind == "refused":
            effects = sb.remote_refused(self.now, offer_id, arg)
        elif kind == "answer_asked":
            effects = sb.remote_answer_asked(self.now, offer_id)
            told = sum(1 for fx in effects if isinstance(fx, ToCaller) and fx.kind == "connected")
            self.connected_on_leg[offer_id] = self.connected_on_leg.get(offer_id, 0) + told
        elif kind in ("held", "retrieved"):
            effects = sb.remote_held(self.now, offer_id, kind == "held")
        elif kind == "hung_up":
            effects = sb.remote_hung_up(self.now, offer_id)
        elif kind == "returned":
            effects = sb.remote_returned(self.now, offer_id, arg)
        else:
            assert kind == "closed", kind
            effects = sb.remote_lost(self.now, offer_id, "target-closed")
        self.carry(leg.origin, effects)
        if kind in TERMINAL:
            leg.origin_done = True  # the origin's stream task is over: later words go nowhere
        return effects

    def break_leg(self, offer_id: str) -> None:
        """The stream breaks: messages in flight are lost, each side learns on its own."""
        leg = self.legs[offer_id]
        leg.to_target.clear()
        leg.to_origin.clear()
        leg.broken = leg.lost_at_origin = leg.lost_at_target = True
        leg.origin_done = leg.target_done = True

    def lost_at_origin(self, offer_id: str) -> list[Effect]:
        leg = self.legs[offer_id]
        leg.lost_at_origin = False
        return self.do(leg.origin, lambda sb, now: sb.remote_lost(now, offer_id, "target-lost"))

    def lost_at_target(self, offer_id: str) -> list[Effect]:
        leg = self.legs[offer_id]
        leg.lost_at_target = False
        return self.do(leg.target, lambda sb, now: sb.remote_caller_gone(now, offer_id, "origin-lost"))

    def deliver_one(self, leg: Leg) -> None:
        if leg.to_target:
            self.to_target(leg.offer_id)
        elif leg.to_origin:
            self.to_origin(leg.offer_id)
        elif leg.lost_at_origin:
            self.lost_at_origin(leg.offer_id)
        elif leg.lost_at_target:
            self.lost_at_target(leg.offer_id)

    def deliver_all(self) -> None:
        while busy := [leg for leg in self.legs.values() if leg.pending]:
            self.deliver_one(busy[0])

    @property
    def quiet(self) -> bool:
        return not any(leg.pending for leg in self.legs.values())

    # Reading what happened -------------------------------------------------------------------

    def kinds(self, call_id: str, site_id: str) -> list[EventKind]:
        return [e.kind for e in self.journal.get((call_id, site_id), [])]

    def heard(self, call_id: str) -> list[str]:
        return [t.kind for t in self.caller.get(call_id, [])]


def province(
    site_ids: Iterable[str] = ("gz", "sz"),
    *,
    agents: int = 2,
    tie_channels: int = 2,
    trunk_channels: int = 10,
    ring_timeout_s: float = 5.0,
    wrap_up_s: float = 5.0,
    routing: RoutingConfig | None = None,
    ties: Mapping[tuple[str, str], int] | None = None,
) -> tuple[Wire, dict[str, list[str]]]:
    """A wire between switchboards built from one generated province; and each site's agent codes.

    `ties` overrides the tie channels of one direction: (site, peer) -> channels.
    """
    ids = list(site_ids)
    specs = [
        SiteSpec(
            s,
            s,
            trunk_channels,
            agents={"general": agents},
            tie_channels=tie_channels,
            listen=f"127.0.0.1:{7100 + i}",
        )
        for i, s in enumerate(ids)
    ]
    raw = generate_province(
        specs,
        service_number=SERVICE,
        etcd_endpoint="127.0.0.1:2379",
        central_listen="127.0.0.1:7000",
        database_url="sqlite+aiosqlite:///unused.db",
        password_hash=FAKE_HASH,
        ring_timeout_s=ring_timeout_s,
        wrap_up_s=wrap_up_s,
        outbox_dir=Path("/nonexistent"),
    )
    for (site_id, peer), channels in (ties or {}).items():
        site = next(s for s in raw["sites"] if s["id"] == site_id)
        next(t for t in site["tie_trunks"] if t["peer"] == peer)["channels"] = channels
    config = parse_province(raw)
    routing = routing or RoutingConfig(mode="overflow", overflow_after_s=10, offer_timeout_s=1)
    sites = {site.id: Switchboard(site, SERVICE, call_ids(site.id), routing=routing) for site in config.sites}
    return Wire(sites), {s: agent_codes(raw, s) for s in ids}


def call_ids(site_id: str) -> Callable[[], str]:
    """Readable call ids that say where the call came in."""
    counter = itertools.count(1)
    return lambda: f"{site_id}-call-{next(counter)}"


# Examples ----------------------------------------------------------------------------------


def queued_at(wire: Wire, site_id: str, call_id: str) -> bool:
    return wire.sites[site_id].acd.queued(call_id) is not None


def busy_ties(wire: Wire) -> dict[tuple[str, str], int]:
    return {(s, peer): pool.busy for s, sb in wire.sites.items() for peer, pool in sb.ties.items()}


def overflowed(wire: Wire, call_id: str, target: str = "sz") -> Leg:
    """The call asked to leave gz and was sent to `target`; the offer is on the wire."""
    wire.advance(10.0)
    ask = wire.take_ask("gz", call_id)
    wire.asks.append(("gz", ask))
    wire.route("gz", call_id, target)
    return wire.open_leg(call_id)


def offered_to_a_ready_agent() -> tuple[Wire, dict[str, list[str]], str, str, Leg]:
    """gz staffed but nobody ready, one agent ready at sz: a call at gz sent there, its offer on the
    wire. (wire, each site's agent codes, the sz agent, the call, its leg)."""
    wire, codes = province()
    wire.log_in("gz", *codes["gz"])
    agent = codes["sz"][0]
    wire.ready("sz", agent)
    call = wire.arrive("gz")
    wire.advance(0.0)
    return wire, codes, agent, call, overflowed(wire, call)


def test_an_overflowed_call_is_served_in_another_city_end_to_end() -> None:
    wire, codes = province()
    gz, sz = wire.sites["gz"], wire.sites["sz"]
    wire.log_in("gz", *codes["gz"])  # staffed but nobody ready: the caller waits
    agent = codes["sz"][0]
    wire.ready("sz", agent)
    call = wire.arrive("gz")
    assert queued_at(wire, "gz", call)

    wire.advance(9.5)
    assert not wire.asks, "asked before waiting overflow_after_s"
    wire.advance(0.5)
    ask = wire.take_ask("gz", call)
    assert (ask.skill_group, ask.waited_s, ask.exclude) == ("general", 10.0, ())
    wire.asks.append(("gz", ask))

    effects = wire.route("gz", call, "sz", decision_id="dec-7")
    offer = next(fx for fx in effects if isinstance(fx, OfferRemote))
    # Unpredictable offer ids (issue 11): 128 random bits, not a counter another city could guess.
    assert re.fullmatch(r"[0-9a-f]{32}", offer.offer_id), offer.offer_id
    assert (offer.call_id, offer.target_site_id, offer.decision_id, offer.arrived_at) == (
        call,
        "sz",
        "dec-7",
        0.0,
    )
    assert not queued_at(wire, "gz", call)
    assert gz.ties["sz"].busy == 1 and gz.calls[call].remote is not None

    wire.to_target(offer.offer_id)  # sz reserves and rings its agent
    assert sz.agents[agent].state == AgentState.RINGING and sz.ties["gz"].busy == 1
    assert sz.calls[call].guest_of == "gz"
    offered = [e for e in wire.agent_events[agent] if e.kind == "offered"]
    assert offered[-1].call_id == call and offered[-1].entry_site_id == "gz"
    wire.to_origin(offer.offer_id)  # reserved
    ringing = wire.caller[call][-1]
    assert (ringing.kind, ringing.site_id, ringing.agent_code) == ("ringing", "sz", agent)

    asked = wire.do("sz", lambda sb, now: sb.answer(now, agent, call))
    assert asked == [LegToOrigin(offer.offer_id, "answer_asked", agent_code=agent)]
    assert sz.agents[agent].state == AgentState.RINGING, "connected before the origin confirmed"
    assert "connected" not in wire.heard(call)
    confirm = wire.to_origin(offer.offer_id)
    assert LegToTarget(offer.offer_id, "confirm") in confirm
    assert wire.caller[call][-1].kind == "connected" and gz.calls[call].state == CallState.TALKING
    wire.to_target(offer.offer_id)
    assert sz.agents[agent].state == AgentState.TALKING

    wire.advance(30.0)
    wire.do("sz", lambda sb, now: sb.agent_hang_up(now, agent, call))
    assert sz.agents[agent].state == AgentState.WRAP_UP
    wire.deliver_all()

    assert call not in gz.calls and call not in sz.calls
    ended = wire.caller[call][-1]
    assert (ended.kind, ended.outcome) == ("ended", Outcome.ANSWERED)
    assert busy_ties(wire) == {("gz", "sz"): 0, ("sz", "gz"): 0}
    gz_kinds = wire.kinds(call, "gz")
    assert EventKind.ROUTED in gz_kinds and gz_kinds[-1] == EventKind.ENDED
    routed = next(e for e in wire.journal[(call, "gz")] if e.kind == EventKind.ROUTED)
    assert (
        dict(routed.data).items()
        >= {"target": "sz", "decision_id": "dec-7", "offer_id": offer.offer_id}.items()
    )
    assert wire.kinds(call, "sz") == [EventKind.RINGING, EventKind.ANSWERED, EventKind.AGENT_HUNG_UP]
    assert gz.served_elsewhere == 0 and sz.served_for_others == 0
    assert wire.connected_on_leg == {offer.offer_id: 1}


def test_a_call_from_a_city_with_nobody_logged_in_asks_at_once() -> None:
    wire, _ = province()
    call = wire.arrive("gz")
    assert not wire.asks
    wire.advance(0.0)  # the question is a timer due now: asked on the next turn of the loop
    assert wire.take_ask("gz", call).waited_s == 0.0


def test_a_refused_call_is_back_in_its_queue_ahead_of_later_callers() -> None:
    wire, codes = province()
    gz = wire.sites["gz"]
    wire.log_in("gz", *codes["gz"])
    first = wire.arrive("gz")
    leg = overflowed(wire, first)  # nobody ready at sz
    later = wire.arrive("gz")
    wire.deliver_all()

    assert wire.sites["sz"].calls == {}
    assert queued_at(wire, "gz", first) and gz.acd.queued(first).arrived_at == 0.0  # type: ignore[union-attr]
    assert gz.acd.position(first) == 1 and gz.acd.position(later) == 2
    failed = [e for e in wire.journal[(first, "gz")] if e.kind == EventKind.ROUTE_FAILED]
    assert dict(failed[-1].data) == {"target": "sz", "reason": "no-agent"}
    assert wire.heard(first)[-1] == "queued"
    assert busy_ties(wire) == {("gz", "sz"): 0, ("sz", "gz"): 0}
    assert leg.offer_id not in wire.connected_on_leg
    # The next question leaves out the site that refused.
    wire.advance(0.0)
    assert wire.take_ask("gz", first).exclude == ("sz",)

    wire.ready("gz", codes["gz"][0])
    assert gz.calls[first].state == CallState.RINGING
    assert gz.calls[later].state == CallState.QUEUED


def test_a_refused_call_tries_a_third_city() -> None:
    wire, codes = province(("gz", "sz", "fs"))
    wire.log_in("gz", *codes["gz"])
    wire.ready("fs", codes["fs"][0])
    call = wire.arrive("gz")
    overflowed(wire, call, "sz")
    wire.deliver_all()
    wire.advance(0.0)
    assert wire.take_ask("gz", call).exclude == ("sz",)
    wire.do("gz", lambda sb, now: sb.route_decided(now, call, "fs", "d-2"))
    wire.deliver_all()
    assert wire.sites["fs"].calls[call].agent_code == codes["fs"][0]
    assert wire.caller[call][-1].site_id == "fs"


@pytest.mark.parametrize("offer_arrives", ["before the timeout", "after the timeout"])
def test_an_offer_that_times_out_is_withdrawn_and_the_late_reservation_ended(offer_arrives: str) -> None:
    wire, _, agent, call, leg = offered_to_a_ready_agent()
    gz, sz = wire.sites["gz"], wire.sites["sz"]
    if offer_arrives == "before the timeout":
        wire.to_target(leg.offer_id)  # reserved, but the answer is slow

    wire.advance(1.0)  # offer_timeout_s
    assert queued_at(wire, "gz", call) and gz.calls[call].remote is None
    assert gz.ties["sz"].busy == 0
    failed = [e for e in wire.journal[(call, "gz")] if e.kind == EventKind.ROUTE_FAILED]
    assert dict(failed[-1].data)["reason"] == "offer-timeout"
    assert ("end", "offer-timeout") in leg.to_target

    if offer_arrives == "after the timeout":
        wire.to_target(leg.offer_id)  # the offer was slow: sz reserves anyway
    assert sz.agents[agent].state == AgentState.RINGING
    reply = wire.to_origin(leg.offer_id)  # reserved, too late
    assert reply == [LegToTarget(leg.offer_id, "end", "offer-withdrawn")]
    assert wire.heard(call).count("ringing") == 0
    wire.deliver_all()
    assert sz.agents[agent].state == AgentState.READY and sz.acd.is_ready(agent)
    assert wire.agent_events[agent][-1].kind in ("withdrawn", "state")
    assert call not in sz.calls and busy_ties(wire) == {("gz", "sz"): 0, ("sz", "gz"): 0}
    assert queued_at(wire, "gz", call) and gz.calls[call].arrived_at == 0.0


def test_ring_no_answer_at_the_target_returns_the_call_to_its_origin() -> None:
    wire, _, agent, call, leg = offered_to_a_ready_agent()
    gz, sz = wire.sites["gz"], wire.sites["sz"]
    wire.deliver_all()
    assert wire.heard(call)[-1] == "ringing"

    wire.advance(5.0)  # sz's ring_timeout_s
    assert sz.agents[agent].state == AgentState.NOT_READY and call not in sz.calls
    assert sz.ties["gz"].busy == 0
    assert list(leg.to_origin) == [("returned", "ring-no-answer")]
    assert wire.kinds(call, "sz") == [EventKind.RINGING, EventKind.RING_NO_ANSWER]
    wire.deliver_all()
    assert queued_at(wire, "gz", call) and gz.acd.queued(call).arrived_at == 0.0  # type: ignore[union-attr]
    returned = [e for e in wire.journal[(call, "gz")] if e.kind == EventKind.RETURNED]
    assert dict(returned[-1].data) == {"target": "sz", "reason": "ring-no-answer"}
    assert wire.heard(call)[-1] == "queued" and "ended" not in wire.heard(call)
    assert busy_ties(wire) == {("gz", "sz"): 0, ("sz", "gz"): 0}


def test_a_caller_who_hangs_up_while_the_target_rings_frees_the_target_agent() -> None:
    wire, _, agent, call, leg = offered_to_a_ready_agent()
    gz, sz = wire.sites["gz"], wire.sites["sz"]
    wire.deliver_all()
    assert sz.agents[agent].state == AgentState.RINGING

    wire.do("gz", lambda sb, now: sb.caller_hang_up(now, call))
    ended = wire.caller[call][-1]
    assert (ended.kind, ended.outcome) == ("ended", Outcome.ABANDONED)
    assert list(leg.to_target) == [("end", "caller-hung-up")]
    assert wire.kinds(call, "gz")[-2:] == [EventKind.ABANDONED, EventKind.ENDED]
    # The agent answers just before the news arrives: the origin does not confirm a gone leg.
    wire.do("sz", lambda sb, now: sb.answer(now, agent, call))
    wire.deliver_all()
    assert sz.agents[agent].state == AgentState.READY and sz.acd.is_ready(agent)
    withdrawn = [e for e in wire.agent_events[agent] if e.kind == "withdrawn"]
    assert withdrawn[-1].reason == "caller-hung-up"
    assert call not in gz.calls and call not in sz.calls
    assert busy_ties(wire) == {("gz", "sz"): 0, ("sz", "gz"): 0}
    assert wire.heard(call).count("ended") == 1 and "connected" not in wire.heard(call)


def test_a_late_answer_is_ended_by_the_origin_and_never_connects() -> None:
    wire, _, agent, call, leg = offered_to_a_ready_agent()
    sz = wire.sites["sz"]
    wire.deliver_all()
    wire.do("gz", lambda sb, now: sb.caller_hang_up(now, call))
    wire.do("sz", lambda sb, now: sb.answer(now, agent, call))
    # The answer crosses the caller's hang-up on the wire; the origin refuses it.
    reply = wire.to_origin(leg.offer_id)
    assert reply == [LegToTarget(leg.offer_id, "end", "leg-not-current")]
    wire.deliver_all()
    assert sz.agents[agent].state == AgentState.READY
    assert wire.connected_on_leg == {leg.offer_id: 0} and "connected" not in wire.heard(call)
    assert EventKind.ANSWERED not in wire.kinds(call, "sz")


def test_a_stream_that_breaks_mid_call_requeues_the_caller_and_frees_the_agent() -> None:
    wire, codes, agent, call, leg = offered_to_a_ready_agent()
    gz, sz = wire.sites["gz"], wire.sites["sz"]
    wire.deliver_all()
    wire.do("sz", lambda sb, now: sb.answer(now, agent, call))
    wire.deliver_all()
    assert sz.agents[agent].state == AgentState.TALKING and gz.served_elsewhere == 1
    wire.advance(20.0)

    wire.break_leg(leg.offer_id)
    wire.lost_at_origin(leg.offer_id)
    assert queued_at(wire, "gz", call) and gz.calls[call].arrived_at == 0.0
    assert wire.heard(call)[-2:] == ["connected", "queued"] and "ended" not in wire.heard(call)
    returned = [e for e in wire.journal[(call, "gz")] if e.kind == EventKind.RETURNED]
    assert dict(returned[-1].data) == {"target": "sz", "reason": "target-lost"}
    assert gz.ties["sz"].busy == 0 and gz.served_elsewhere == 0
    assert sz.agents[agent].state == AgentState.TALKING, "sz has not heard yet"

    wire.lost_at_target(leg.offer_id)
    assert sz.agents[agent].state == AgentState.WRAP_UP
    hung = [e for e in wire.journal[(call, "sz")] if e.kind == EventKind.CALLER_HUNG_UP]
    assert dict(hung[-1].data) == {"reason": "origin-lost"}
    assert call not in sz.calls and sz.ties["gz"].busy == 0 and sz.served_for_others == 0
    # Nobody was dropped: the caller is served at home as soon as someone is free.
    wire.ready("gz", codes["gz"][0])
    assert gz.calls[call].state == CallState.RINGING


def test_a_stream_that_breaks_before_the_offer_arrives_requeues_the_call() -> None:
    wire, _, _, call, leg = offered_to_a_ready_agent()
    gz = wire.sites["gz"]
    wire.break_leg(leg.offer_id)
    wire.deliver_all()
    assert queued_at(wire, "gz", call)
    failed = [e for e in wire.journal[(call, "gz")] if e.kind == EventKind.ROUTE_FAILED]
    assert dict(failed[-1].data)["reason"] == "target-lost"
    assert wire.sites["sz"].calls == {} and busy_ties(wire) == {("gz", "sz"): 0, ("sz", "gz"): 0}
    assert gz.calls[call].state == CallState.QUEUED


def test_hold_at_the_target_is_heard_by_the_caller_at_the_origin() -> None:
    wire, codes = province()
    gz = wire.sites["gz"]
    agent = codes["sz"][0]
    wire.ready("sz", agent)
    call = wire.arrive("gz")  # nobody staffed at gz: asks at once
    wire.advance(0.0)
    wire.route("gz", call, "sz")
    wire.deliver_all()
    wire.do("sz", lambda sb, now: sb.answer(now, agent, call))
    wire.deliver_all()
    wire.do("sz", lambda sb, now: sb.hold(now, agent, call, True))
    wire.deliver_all()
    assert gz.calls[call].state == CallState.HELD and wire.heard(call)[-1] == "held"
    wire.do("sz", lambda sb, now: sb.hold(now, agent, call, False))
    wire.deliver_all()
    assert gz.calls[call].state == CallState.TALKING and wire.heard(call)[-1] == "retrieved"
    wire.do("gz", lambda sb, now: sb.caller_hang_up(now, call))
    wire.deliver_all()
    assert wire.caller[call][-1].outcome == Outcome.ANSWERED
    assert wire.kinds(call, "sz")[-1] == EventKind.CALLER_HUNG_UP
    assert wire.sites["sz"].agents[agent].state == AgentState.WRAP_UP


def test_no_free_tie_channel_means_no_move() -> None:
    wire, codes = province(tie_channels=0)
    gz = wire.sites["gz"]
    wire.ready("sz", codes["sz"][0])
    call = wire.arrive("gz")
    wire.advance(0.0)
    effects = wire.route("gz", call, "sz")
    assert not [fx for fx in effects if isinstance(fx, OfferRemote)] and not wire.legs
    assert queued_at(wire, "gz", call) and gz.calls[call].remote is None
    failed = [e for e in wire.journal[(call, "gz")] if e.kind == EventKind.ROUTE_FAILED]
    assert dict(failed[-1].data) == {"target": "sz", "reason": "no-tie-channel"}
    assert gz.ties["sz"].refused == 1
    wire.advance(0.0)
    assert wire.take_ask("gz", call).exclude == ("sz",)


def test_busy_tie_channels_stop_the_second_move() -> None:
    wire, codes = province(tie_channels=1)
    wire.ready("sz", *codes["sz"])
    first, second = wire.arrive("gz"), wire.arrive("gz")
    wire.advance(0.0)
    wire.route("gz", first, "sz")
    wire.route("gz", second, "sz")
    assert [leg.offer.call_id for leg in wire.legs.values()] == [first]
    assert queued_at(wire, "gz", second)


def test_a_target_without_a_free_tie_channel_refuses_and_keeps_its_agent_ready() -> None:
    wire, codes = province(ties={("sz", "gz"): 0})
    sz = wire.sites["sz"]
    agent = codes["sz"][0]
    wire.ready("sz", agent)
    call = wire.arrive("gz")
    wire.advance(0.0)
    leg = wire.open_leg(call) if wire.route("gz", call, "sz") else None
    assert leg is not None
    wire.deliver_all()
    assert sz.agents[agent].state == AgentState.READY and sz.acd.is_ready(agent)
    failed = [e for e in wire.journal[(call, "gz")] if e.kind == EventKind.ROUTE_FAILED]
    assert dict(failed[-1].data)["reason"] == "no-tie-channel"
    assert queued_at(wire, "gz", call)
    # The reserved agent is not lost to the ACD: a local call still reaches them.
    local = wire.arrive("sz")
    assert sz.calls[local].agent_code == agent


def test_pooled_pull_takes_the_longest_waiting_call() -> None:
    wire, codes = province(routing=RoutingConfig(mode="pooled", offer_timeout_s=1))
    gz = wire.sites["gz"]
    wire.log_in("gz", *codes["gz"])
    first = wire.arrive("gz")
    wire.advance(2.0)
    second = wire.arrive("gz")
    wire.advance(0.0)
    assert {ask.call_id for _, ask in wire.asks} == {first, second}, "pooled calls ask at once"
    wire.ready("sz", codes["sz"][0])

    effects = wire.do("gz", lambda sb, now: sb.pull_call(now, "general", "sz", "pull-1"))
    offer = next(fx for fx in effects if isinstance(fx, OfferRemote))
    assert (offer.call_id, offer.purpose, offer.decision_id) == (first, "pooled", "pull-1")
    assert gz.acd.head("general") == second
    wire.deliver_all()
    assert wire.sites["sz"].calls[first].agent_code == codes["sz"][0]
    # Nothing to pull for an unknown group or for ourselves.
    assert gz.pull_call(wire.now, "vip", "sz") == []
    assert gz.pull_call(wire.now, "general", "gz") == []


def test_a_call_is_never_a_guest_twice_at_the_same_city() -> None:
    # The old leg's end is still on its way when the call is offered to the same city again.
    wire, codes = province(routing=RoutingConfig(mode="pooled", offer_timeout_s=1))
    sz = wire.sites["sz"]
    wire.ready("sz", *codes["sz"])
    call = wire.arrive("gz")
    wire.advance(0.0)
    old = wire.open_leg(call) if wire.route("gz", call, "sz") else None
    assert old is not None
    wire.to_target(old.offer_id)
    wire.advance(1.0)  # times out at gz; the end is not delivered yet
    wire.do("gz", lambda sb, now: sb.pull_call(now, "general", "sz"))
    new = wire.open_leg(call)
    assert new.offer_id != old.offer_id
    wire.to_target(new.offer_id)
    assert list(new.to_origin) == [("refused", "call-already-here")]
    wire.deliver_all()
    assert sz.calls == {} and queued_at(wire, "gz", call)
    assert busy_ties(wire) == {("gz", "sz"): 0, ("sz", "gz"): 0}


# Regressions of bugs found by these tests ------------------------------------------------------


def test_a_call_that_rang_locally_while_central_decided_asks_again() -> None:
    wire, codes = province()
    gz = wire.sites["gz"]
    agent = codes["gz"][0]
    wire.log_in("gz", *codes["gz"])
    call = wire.arrive("gz")
    wire.advance(10.0)
    wire.take_ask("gz", call)  # the question is with central
    wire.ready("gz", agent)  # meanwhile a local agent frees up: the call rings here
    assert gz.calls[call].state == CallState.RINGING
    assert wire.do("gz", lambda sb, now: sb.route_decided(now, call, "sz", "d-1")) == []
    wire.advance(5.0)  # ring no answer: back in the queue, long past overflow_after_s
    assert queued_at(wire, "gz", call)
    wire.advance(5.0)
    assert [ask for s, ask in wire.asks if ask.call_id == call], "the call never asks to leave again"


def test_an_answer_in_flight_is_not_undone_by_the_ring_timeout() -> None:
    wire, codes = province()
    sz = wire.sites["sz"]
    agent = codes["sz"][0]
    wire.ready("sz", agent)
    call = wire.arrive("gz")
    wire.advance(0.0)
    leg = wire.open_leg(call) if wire.route("gz", call, "sz") else None
    assert leg is not None
    wire.deliver_all()
    wire.advance(4.9)
    wire.do("sz", lambda sb, now: sb.answer(now, agent, call))  # just in time
    wire.advance(0.2)  # the confirm is still on the wire when sz's ring timer fires
    wire.deliver_all()
    assert wire.heard(call).count("connected") == 1
    assert sz.agents[agent].state == AgentState.TALKING, wire.heard(call)
    assert wire.heard(call)[-1] == "connected"
