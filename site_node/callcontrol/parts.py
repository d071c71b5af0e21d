"""The call control's parts, built in dependency order and handed what each needs (constructor
injection, no cycles). The sides (`sides/`) take requests to them; the facade (switchboard.py)
composes the sides."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from routing.acd import Acd
from site_node.callcontrol.agents import Agents
from site_node.callcontrol.calls import CallBook
from site_node.callcontrol.connected import ConnectedCalls
from site_node.callcontrol.consults import Consults
from site_node.callcontrol.counters import SiteCounters
from site_node.callcontrol.dialler import Dialler
from site_node.callcontrol.directory import Directory
from site_node.callcontrol.domain import CallState, Outcome, ToAgent
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.flow_calls import FlowBook, FlowCalls
from site_node.callcontrol.flow_ends import FlowEnds
from site_node.callcontrol.guests import GuestCalls
from site_node.callcontrol.ivr import Ivr
from site_node.callcontrol.leaving import Leaving
from site_node.callcontrol.legs_out import RemoteLegs
from site_node.callcontrol.queues import Queues
from site_node.callcontrol.resources import Resources
from site_node.callcontrol.ringing import Ringing
from site_node.callcontrol.screen_pop import ScreenPop
from site_node.callcontrol.supervision import Supervision
from site_node.callcontrol.timers import Timers
from site_node.callcontrol.transfers import Transfers
from site_node.callcontrol.trunk import TrunkSide
from site_node.callcontrol.voicemail_desk import VoicemailDesk
from vcc.config import RoutingConfig, SiteConfig


@dataclass
class Parts:
    counters: SiteCounters
    timers: Timers
    book: CallBook
    resources: Resources
    acd: Acd
    desk: Agents
    ringing: Ringing
    queues: Queues
    trunk: TrunkSide
    flows: FlowCalls
    dialler: Dialler
    ivr: Ivr
    screen_pop: ScreenPop
    connected: ConnectedCalls
    legs: RemoteLegs
    leaving: Leaving
    guests: GuestCalls
    consults: Consults
    transfers: Transfers
    supervision: Supervision
    directory: Directory


def build_parts(
    site: SiteConfig,
    service_number: str,
    routing: RoutingConfig,
    new_call_id: Callable[[], str],
    new_offer_id: Callable[[], str],
    agent_sites: Mapping[str, str] | None,
    site_groups: Mapping[str, frozenset[str]] | None,
    flow_book: FlowBook | None,
) -> Parts:
    counters = SiteCounters()
    timers = Timers()
    book = CallBook(site.id)
    resources = Resources(site)
    acd = Acd({g.id: (g.strategy, g.priority) for g in site.skill_groups})
    desk = Agents(site, acd, timers)
    ringing = Ringing(site, desk, timers, counters)
    queues = Queues(site, acd, book, desk, ringing)
    trunk = TrunkSide(
        site.id, service_number, book, resources, counters, new_call_id,
        catalog_number=lambda n: flow_book is not None and flow_book.for_number(n) is not None,
    )  # fmt: skip
    groups = frozenset(g.id for g in site.skill_groups)
    voicemail = VoicemailDesk(resources, desk)
    dialler = Dialler(groups, acd, desk, timers)
    default_group = site.ivr.default_skill_group
    ends = FlowEnds(groups, default_group, resources, queues, trunk, desk, voicemail, dialler)
    flows = FlowCalls(groups, default_group, book, resources, queues, trunk, timers, voicemail, ends)
    ivr = Ivr(site, book, resources, queues, timers, counters, flows, flow_book)
    screen_pop = ScreenPop(book, queues, timers)
    connected = ConnectedCalls(site, desk, queues, ringing, ivr, trunk, counters)
    legs = RemoteLegs(site.id, routing, book, resources, queues, trunk, timers, counters, new_offer_id)
    leaving = Leaving(site.id, routing, book, queues, legs, timers, desk.staffed, new_offer_id)
    guests = GuestCalls(site.id, book, resources, desk, queues, ringing, connected, counters)
    consults = Consults(site, book, desk, queues, ringing, connected, legs, timers, counters, resources)
    directory = Directory(
        site.id,
        agent_sites or {a.code: site.id for a in site.agents},
        site_groups or {site.id: groups},
    )
    transfers = Transfers(
        site.id, directory, resources, desk, queues, ringing, ivr, connected, legs, guests, consults
    )
    supervision = Supervision(site, book, desk, connected)
    return Parts(
        counters, timers, book, resources, acd, desk, ringing, queues, trunk, flows, dialler, ivr, screen_pop,
        connected, legs, leaving, guests, consults, transfers, supervision, directory,
    )  # fmt: skip


def site_stopping(parts: Parts, now: float, fx: Effects) -> None:
    """The site is stopping: consultations end, guest calls go back to their origins, legs in
    other cities end, and every call of our trunks ends (failed unless answered), its record
    kept."""
    calls = parts.book.live
    for call in list(calls.values()):
        if call.consult is not None:
            reason = "site-stopping" if call.consult.offer_id else "site-shutdown"
            parts.consults.end_leg(call, now, fx, reason)
    for call in list(calls.values()):
        if call.guest_of:
            parts.guests.site_stopping(call, now, fx)
        elif call.remote is not None:
            parts.legs.site_stopping(call, fx)
    for call in list(calls.values()):
        if call.state == CallState.QUEUED:
            parts.queues.leave(call)
        elif call.state == CallState.IVR:
            parts.ivr.release(call)
        code = call.agent_code
        # An agent may wait for a caller in the IVR (a temporary transfer, F9).
        if call.state in (CallState.RINGING, CallState.TALKING, CallState.HELD, CallState.IVR) and code:
            fx.add(ToAgent(code, "ended", now, call_id=call.call_id, reason="site-shutdown"))
            parts.desk.site_stopping(code)
        outcome = Outcome.ANSWERED if call.answered_at is not None else Outcome.FAILED
        parts.trunk.end(call, outcome, "site-shutdown", now, fx)
