"""Central's pushed overflow targets at the origin (pure switchboards on the test wire): a due
call goes at once to a fresh target and is reported; a stale, used-up or refusing target falls
back to asking central; the target city's refusal is the authority over its agents."""

from __future__ import annotations

from collections.abc import Iterable

from site_node.callcontrol.domain import CallState, Effect, OfferRemote, ReportRoute
from site_node.callcontrol.pushed_targets import PushedTarget, PushedTargets
from tests.site_node.test_remote_legs import Wire, province, queued_at


def reporting(wire: Wire) -> list[ReportRoute]:
    """Every ReportRoute the switchboards emit from now on."""
    reports: list[ReportRoute] = []
    carry = wire.carry

    def carry_and_keep(site_id: str, effects: Iterable[Effect]) -> None:
        effects = list(effects)
        reports.extend(fx for fx in effects if isinstance(fx, ReportRoute))
        carry(site_id, effects)

    wire.carry = carry_and_keep  # type: ignore[method-assign]
    return reports


def push(wire: Wire, site_id: str, epoch: int, *targets: PushedTarget) -> None:
    wire.do(site_id, lambda sb, now: sb.overflow_targets(now, epoch, targets))


def test_a_due_call_goes_at_once_to_a_fresh_pushed_target_and_is_reported() -> None:
    wire, codes = province()
    reports = reporting(wire)
    wire.log_in("gz", *codes["gz"])
    wire.ready("sz", codes["sz"][0])
    call = wire.arrive("gz")
    wire.advance(9.0)
    push(wire, "gz", 7, PushedTarget("general", "sz", 1, 0.2))
    wire.advance(1.0)
    assert not wire.asks, "central was asked although a fresh target was pushed"
    leg = wire.open_leg(call)
    assert (leg.target, leg.offer.purpose) == ("sz", "overflow")
    assert [(r.call_id, r.target_site_id, r.epoch, r.waited_s, r.decision_id) for r in reports] == [
        (call, "sz", 7, 10.0, leg.offer.decision_id)
    ]
    wire.deliver_all()
    assert wire.heard(call)[-1] == "ringing"
    assert wire.sites["gz"].calls[call].state == CallState.RINGING


def test_a_stale_pushed_target_is_not_used() -> None:
    """Freshness: central saw the target's state 0.5 s old, the limit is 2 s: usable for 1.5 s
    after the push arrived; a target already older than the limit is not kept at all."""
    wire, codes = province()
    reports = reporting(wire)
    wire.log_in("gz", *codes["gz"])
    wire.ready("sz", codes["sz"][0])
    call = wire.arrive("gz")
    wire.advance(8.0)
    push(wire, "gz", 1, PushedTarget("general", "sz", 1, 0.5))
    wire.advance(2.0)  # due now, 2 s after the push: 0.5 + 2 > 2
    assert not reports
    ask = wire.take_ask("gz", call)
    assert ask.exclude == ()
    assert wire.sites["gz"].parts.leaving.targets.expired == 1

    book = PushedTargets(max_state_age_s=2.0)
    book.update(100.0, 3, [PushedTarget("general", "sz", 4, 2.5), PushedTarget("general", "fs", 0, 0.1)])
    assert book.targets("general") == [], "beyond the limit already, or nobody ready: not kept"


def test_a_target_takes_no_more_calls_than_it_had_ready_agents() -> None:
    wire, codes = province(agents=3)
    reports = reporting(wire)
    wire.log_in("gz", *codes["gz"])
    wire.ready("sz", codes["sz"][0])
    first, second = wire.arrive("gz"), wire.arrive("gz")
    wire.advance(9.5)
    push(wire, "gz", 2, PushedTarget("general", "sz", 1, 0.0))
    wire.advance(0.5)
    assert [r.call_id for r in reports] == [first]
    assert wire.take_ask("gz", second).exclude == ()


def test_a_stale_target_that_refuses_puts_the_call_back_and_central_is_asked() -> None:
    """The pushed target had a ready agent when central looked; by the offer it has none: it
    refuses, the call is back in its queue (arrival time kept) and asks central, sz excluded."""
    wire, codes = province()
    reports = reporting(wire)
    wire.log_in("gz", *codes["gz"])
    wire.log_in("sz", codes["sz"][0])  # logged in, not ready: nobody to reserve
    call = wire.arrive("gz")
    wire.advance(9.5)
    push(wire, "gz", 5, PushedTarget("general", "sz", 1, 0.0))
    wire.advance(0.5)
    assert len(reports) == 1
    leg = wire.open_leg(call)
    wire.deliver_all()
    assert leg.target_done and "ringing" not in wire.heard(call)
    assert queued_at(wire, "gz", call)
    assert wire.sites["gz"].calls[call].arrived_at == 0.0
    wire.advance(0.0)
    ask = wire.take_ask("gz", call)
    assert ask.exclude == ("sz",)
    # Central then says stay: the call is still ours, served at home when an agent is ready.
    wire.asks.append(("gz", ask))
    wire.route("gz", call, None)
    wire.ready("gz", codes["gz"][0])
    assert wire.heard(call)[-1] == "ringing"
    assert not [fx for fx in wire.legs.values() if fx.offer.call_id == call and not fx.target_done]
    assert all(isinstance(leg.offer, OfferRemote) for leg in wire.legs.values())


def test_a_new_push_replaces_the_old_one_and_an_empty_one_clears_it() -> None:
    book = PushedTargets(max_state_age_s=2.0)
    book.update(0.0, 1, [PushedTarget("general", "sz", 2, 0.0), PushedTarget("general", "fs", 1, 0.0)])
    assert book.pick(0.5, "general", excluded={"sz"}) == ("fs", 1)
    assert book.pick(0.5, "general", excluded={"sz"}) is None, "fs's one agent is used"
    book.update(1.0, 2, [PushedTarget("billing", "fs", 1, 0.0)])
    assert book.pick(1.0, "general", excluded=()) is None
    assert book.pick(1.0, "billing", excluded=()) == ("fs", 2)
    book.update(1.5, 3, ())
    assert book.pick(1.5, "billing", excluded=()) is None
