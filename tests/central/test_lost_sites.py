"""A call left open at a city that is down: central marks it (never an outcome of its own), and an
operator's closure of a city lost for good ends it once, SITE_LOST, audited; the city's events
that come after are kept and end nothing again. The fold and the marks are pure; the closure runs
on the real store (SQLite, and PostgreSQL where marked) and on a real grpc.aio server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from central import convert, validation
from central.audit import AuditLog
from central.grpc_api import SERVICE_NAME, CentralService
from central.lost_sites import (
    AUDIT_ACTION,
    LostSites,
    MembershipUnknown,
    SiteUp,
    open_at_down_site,
)
from central.membership_view import MembershipView
from central.records import CENTRAL_SITE, CallEvent, CallState, Outcome, fold, is_closure
from central.store import Store
from tests.central.factories import T0, answered_call, ev
from tests.central.province import province
from tools.simulation.invariants import final_events
from vcc import rpc
from vcc.call_events import EventKind
from vcc.errors import from_rpc_error
from vcc.v1 import central_pb2, central_pb2_grpc, common_pb2, site_admin_pb2

K = EventKind
UP = site_admin_pb2.SiteSummary()


def offered_elsewhere(call_id: str = "c1") -> list[CallEvent]:
    """Entered at gz, queued, offered to sz, ringing there: gz (its caller's city) then dies."""
    return [
        ev(K.ARRIVED, 0.0, 1, call_id=call_id, ani="13800000009", dnis="10000"),
        ev(K.QUEUED, 0.5, 2, call_id=call_id, skill="general"),
        ev(K.ROUTED, 1.0, 3, call_id=call_id, data={"target": "sz"}),
        ev(K.RINGING, 1.2, 1, call_id=call_id, site="sz", agent="0201", skill="general"),
    ]


def late_end(call_id: str = "c1", seq: int = 4) -> CallEvent:
    """What gz's restart journals for a call its last run left up (site_node/records/open_items.py)."""
    return ev(K.ENDED, 900.0, seq, call_id=call_id, data={"reason": "site-restarted", "reached": "routed"})


def closure_of(call_id: str = "c1", at: float = 1.2 + 1e-6) -> CallEvent:
    return ev(K.ENDED, at, 1, call_id=call_id, site=CENTRAL_SITE, outcome=Outcome.SITE_LOST)


def view(gz_up: bool) -> MembershipView:
    v = MembershipView([("gz", "Guangzhou"), ("sz", "Shenzhen")])
    v.reset({"gz": UP, "sz": UP}, T0)
    if not gz_up:
        v.delete("gz", "lease expired", T0 + 5.0)
    return v


# -- the fold (pure) ----------------------------------------------------------------------------


def test_an_open_call_of_a_dead_city_stays_open_without_an_outcome() -> None:
    record = fold(offered_elsewhere())
    assert record.state is CallState.RINGING and record.outcome is Outcome.UNSPECIFIED
    assert record.ended_at is None


def test_a_closure_ends_the_call_site_lost_and_the_citys_late_end_ends_nothing_again() -> None:
    closed = fold([*offered_elsewhere(), closure_of()])
    assert (closed.state, closed.outcome) == (CallState.ENDED, Outcome.SITE_LOST)
    assert closed.ended_at == pytest.approx(T0 + 1.2 + 1e-6)
    # Central's closure is no leg of the journey.
    assert [leg.site_id for leg in closed.legs] == ["gz", "sz"]
    later = fold([*offered_elsewhere(), closure_of(), late_end()])
    assert (later.state, later.outcome, later.ended_at) == (closed.state, closed.outcome, closed.ended_at)
    assert later.event_count == closed.event_count + 1  # kept in the journey
    # The broken way (no closure rule): the late end would have ended it a second time, with
    # another outcome and end; and without the closure, the city's own end is the end.
    alone = fold([*offered_elsewhere(), late_end()])
    assert alone.outcome is not Outcome.SITE_LOST and alone.ended_at == pytest.approx(T0 + 900.0)


def test_only_centrals_own_event_is_a_closure_and_a_site_may_not_send_one() -> None:
    forged = ev(K.ENDED, 2.0, 5, outcome=Outcome.SITE_LOST)
    assert not is_closure(forged) and is_closure(closure_of())
    request = central_pb2.IngestCallEventsRequest(site_id="gz", events=[convert.event_to_proto(forged)])
    with pytest.raises(Exception) as info:
        validation.check_ingest(request, ["gz", "sz"])
    assert getattr(info.value, "error_id", "") == "bad-outcome"


# -- which calls are open at a down city (pure) -------------------------------------------------


def test_open_at_down_site_names_the_down_city_and_since_when() -> None:
    record = fold(offered_elsewhere())
    down = open_at_down_site(record, view(gz_up=False).sites())
    assert down is not None and (down.site_id, down.down_since) == ("gz", T0 + 5.0)
    # The city up, or the call ended: nothing to mark.
    assert open_at_down_site(record, view(gz_up=True).sites()) is None
    assert open_at_down_site(fold(answered_call()), view(gz_up=False).sites()) is None


def test_membership_keeps_since_when_a_site_is_down_and_whether_etcd_said_so() -> None:
    v = view(gz_up=False)
    v.delete("gz", "key deleted", T0 + 9.0)  # a second notice does not move it
    assert (v.site("gz").down_since, v.site("gz").down_in_etcd) == (T0 + 5.0, True)
    v.all_down("etcd unreachable", T0 + 20.0)
    # Central lost sight of etcd: nobody knows whether sz lives (and gz's time is kept).
    assert (v.site("gz").down_since, v.site("gz").down_in_etcd) == (T0 + 5.0, False)
    assert (v.site("sz").down_since, v.site("sz").down_in_etcd) == (T0 + 20.0, False)
    v.reset({"sz": UP}, T0 + 30.0)
    assert v.site("gz").down_in_etcd and v.site("gz").down_since == T0 + 5.0
    assert v.site("sz").up and v.site("sz").down_since is None


# -- the closure on the real store --------------------------------------------------------------


@pytest.fixture
def audit_log(engine: AsyncEngine) -> AuditLog:
    return AuditLog(engine)


async def stocked(store: Store) -> None:
    await store.ingest("gz", [e for e in offered_elsewhere("c1") if e.site_id == "gz"])
    await store.ingest("sz", [e for e in offered_elsewhere("c1") if e.site_id == "sz"])
    await store.ingest("gz", answered_call("c2"))
    # Open at sz, which is up: not gz's to close.
    await store.ingest(
        "sz", [ev(K.ARRIVED, 2.0, 1, call_id="c3", site="sz"), ev(K.QUEUED, 2.1, 2, call_id="c3", site="sz")]
    )


async def test_closing_a_lost_city_ends_its_open_calls_once_and_is_audited(
    store: Store, audit_log: AuditLog
) -> None:
    await stocked(store)
    membership = view(gz_up=False)
    lost = LostSites(store, membership.sites, audit_log.record, clock=lambda: T0 + 3600.0)
    assert await lost.open_call_ids("gz") == ["c1"]
    closed, since = await lost.close("gz", "tool/cli", "ipv4:127.0.0.1", "decommissioned, ticket 42")
    assert (closed, since) == (["c1"], T0 + 5.0)
    record = await store.get_call("c1")
    assert record is not None and (record.state, record.outcome) == (CallState.ENDED, Outcome.SITE_LOST)
    closure = next(e for e in record.events if is_closure(e))
    assert closure.data["closed_by"] == "tool/cli" and closure.data["site"] == "gz"
    assert float(closure.data["closed_at"]) == T0 + 3600.0
    # The other calls are untouched: c2 ended by gz itself, c3 open at sz (up).
    c2, c3 = await store.get_call("c2"), await store.get_call("c3")
    assert c2 is not None and c2.outcome is Outcome.ANSWERED
    assert c3 is not None and c3.state is not CallState.ENDED
    # Asked again: nothing left to close.
    assert (await lost.close("gz", "tool/cli", "", ""))[0] == []
    entries = [e for e in await audit_log.list() if e.action == AUDIT_ACTION]
    assert [(e.outcome, e.target, e.detail["calls"]) for e in entries] == [
        ("ok", "site gz", "0"),
        ("ok", "site gz", "1"),
    ]
    assert entries[1].detail["note"] == "decommissioned, ticket 42"

    # gz comes back after all and ships the end its restart journaled: kept, ends nothing again.
    await store.ingest("gz", [late_end("c1")])
    again = await store.get_call("c1")
    assert again is not None and (again.outcome, again.ended_at) == (Outcome.SITE_LOST, record.ended_at)
    assert any(e.data.get("reason") == "site-restarted" for e in again.events)
    assert await store.count_calls() == 3
    as_proto = convert.record_to_proto(again, [])
    assert len(final_events(as_proto)) == 1


async def test_closing_is_refused_while_the_city_is_up_or_unknown_and_changes_nothing(
    store: Store, audit_log: AuditLog
) -> None:
    await stocked(store)
    membership = view(gz_up=True)
    lost = LostSites(store, membership.sites, audit_log.record)
    with pytest.raises(SiteUp) as up:
        await lost.close("gz", "tool/cli", "", "")
    assert up.value.error_id == "site-up"
    membership.all_down("etcd unreachable", T0 + 10.0)
    with pytest.raises(MembershipUnknown):
        await lost.close("gz", "tool/cli", "", "")
    record = await store.get_call("c1")
    assert record is not None and record.state is CallState.RINGING
    refused = [e.detail["reason"] for e in await audit_log.list() if e.action == AUDIT_ACTION]
    assert sorted(refused) == ["membership-unknown", "site-up"]


# -- over gRPC ----------------------------------------------------------------------------------


@dataclass
class Central:
    stub: central_pb2_grpc.CentralServiceAsyncStub
    store: Store
    view: MembershipView


@pytest.fixture
async def central(store: Store, audit_log: AuditLog) -> AsyncIterator[Central]:
    config = province()
    await store.sync_province(config)
    membership = view(gz_up=True)
    lost = LostSites(store, membership.sites, audit_log.record)
    server = rpc.Server([SERVICE_NAME])
    service = CentralService(
        store, config.province.id, [s.id for s in config.sites], membership.sites, lost=lost
    )
    central_pb2_grpc.add_CentralServiceServicer_to_server(service, server.grpc)
    port = await server.start("127.0.0.1:0")
    async with rpc.channel(f"127.0.0.1:{port}") as channel:
        yield Central(central_pb2_grpc.CentralServiceStub(channel), store, membership)
    await server.stop(0)


async def refused(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value.code(), from_rpc_error(info.value).error_id


async def test_the_records_api_marks_open_calls_of_a_down_city_and_the_close_ends_them(
    central: Central,
) -> None:
    await stocked(central.store)
    stub = central.stub
    close = central_pb2.CloseLostSiteCallsRequest(site_id="gz", reason="gone")
    # Up: no mark, and the close is refused with a clear error.
    record = (await stub.GetCallRecord(central_pb2.GetCallRecordRequest(call_id="c1"), timeout=5)).record
    assert not record.HasField("open_at_down_site")
    assert await refused(stub.CloseLostSiteCalls(close, timeout=5)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "site-up",
    )
    bad = central_pb2.CloseLostSiteCallsRequest(site_id="nowhere")
    assert (await refused(stub.CloseLostSiteCalls(bad, timeout=5)))[1] == "unknown-site"

    central.view.delete("gz", "lease expired", T0 + 5.0)
    listed = (await stub.ListCallRecords(central_pb2.ListCallRecordsRequest(page_size=10), timeout=5)).records
    marks = {r.call_id: r.open_at_down_site for r in listed if r.HasField("open_at_down_site")}
    assert list(marks) == ["c1"]  # c2 ended, c3 is open at sz, which is up
    still_open = central_pb2.ListCallRecordsRequest(page_size=10, open_only=True)
    assert [r.call_id for r in (await stub.ListCallRecords(still_open, timeout=5)).records] == ["c1", "c3"]
    assert (marks["c1"].site_id, rpc.unix_s(marks["c1"].down_since)) == ("gz", T0 + 5.0)
    assert listed[0].state == common_pb2.CALL_STATE_RINGING  # never an outcome central invents
    assert listed[0].outcome == common_pb2.CALL_OUTCOME_UNSPECIFIED

    too_long = central_pb2.CloseLostSiteCallsRequest(site_id="gz", reason="x" * 201)
    assert await refused(stub.CloseLostSiteCalls(too_long, timeout=5)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "bad-reason",
    )
    assert (await central.store.get_call("c1")).state is CallState.RINGING  # type: ignore[union-attr]
    reply = await stub.CloseLostSiteCalls(close, timeout=5)
    assert list(reply.call_ids) == ["c1"] and rpc.unix_s(reply.down_since) == T0 + 5.0
    record = (await stub.GetCallRecord(central_pb2.GetCallRecordRequest(call_id="c1"), timeout=5)).record
    assert (record.state, record.outcome) == (common_pb2.CALL_STATE_ENDED, common_pb2.CALL_OUTCOME_SITE_LOST)
    assert not record.HasField("open_at_down_site")
    assert len(final_events(record)) == 1


def test_a_closed_lost_call_counts_as_failed_in_the_figures_and_an_open_one_in_progress() -> None:
    from central.stats.intervals import StatsPolicy, call_figures, facts

    open_facts = facts(fold(offered_elsewhere()))
    closed_facts = facts(fold([*offered_elsewhere(), closure_of()]))
    assert open_facts is not None and closed_facts is not None
    assert (
        call_figures(open_facts, StatsPolicy()).in_progress,
        call_figures(open_facts, StatsPolicy()).failed,
    ) == (1, 0)
    assert (
        call_figures(closed_facts, StatsPolicy()).in_progress,
        call_figures(closed_facts, StatsPolicy()).failed,
    ) == (0, 1)


async def test_a_call_known_only_from_the_far_city_is_held_by_the_origin_it_names(
    store: Store, audit_log: AuditLog
) -> None:
    """gz killed before its outbox shipped anything: central has only sz's RINGING, which names gz
    as the call's origin; the call is gz's to end (else it would sit open, unmarked, under sz)."""
    ringing = ev(
        K.RINGING, 1.2, 1, call_id="c7", site="sz", agent="0201", data={"origin": "gz", "offer_id": "o1"}
    )
    assert fold([ringing]).entry_site_id == "gz"
    assert fold([ev(K.QUEUED, 1.0, 1, call_id="c7", site="sz")]).entry_site_id == "sz"  # nothing named
    await store.ingest("sz", [ringing])
    membership = view(gz_up=False)
    lost = LostSites(store, membership.sites, audit_log.record)
    record = await store.get_call("c7")
    assert record is not None and lost.down(record) is not None
    assert (await lost.close("gz", "tool/cli", "", ""))[0] == ["c7"]
