"""The global router over gRPC on a real server: state streams, RouteCall, pulls, pre-routing,
the directory and the decision history; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from central import convert
from central.db.engine import create_engine
from central.db.migrate import upgrade
from central.grpc_api import SERVICE_NAME, CentralService
from central.live_state import LiveState
from central.membership_view import MembershipView
from central.records import EventKind
from central.router import Router
from central.store import Store
from tests.central.factories import answered_call, ev
from tests.central.province import province_data, site
from tests.helpers import eventually
from vcc import rpc
from vcc.config import ProvinceConfig, parse_province
from vcc.errors import from_rpc_error
from vcc.rpc import timestamp
from vcc.v1 import central_pb2, central_pb2_grpc, site_admin_pb2

DEADLINE = rpc.DEFAULT_DEADLINE_S
STREAM_DEADLINE = 60.0


def config(mode: str, database_url: str) -> ProvinceConfig:
    data = province_data(database_url=database_url)
    data["routing"] = {"mode": mode, "overflow_after_s": 10.0, "max_state_age_s": 30.0}
    data["sites"] = [
        site("gz", "Guangzhou", "127.0.0.1:7101", [("0101", {"general": 5}), ("0102", {"billing": 9})]),
        site("sz", "Shenzhen", "127.0.0.1:7102", [("0201", {"general": 3, "billing": 4})]),
        site("fs", "Foshan", "127.0.0.1:7103", [("0301", {"general": 1})]),
    ]
    for s in data["sites"]:
        s["tie_trunks"] = [{"peer": p, "channels": 4} for p in ("gz", "sz", "fs") if p != s["id"]]
    return parse_province(data)


@dataclass
class Central:
    stub: central_pb2_grpc.CentralServiceAsyncStub
    router: Router
    view: MembershipView
    engine: AsyncEngine

    async def stored_decisions(self) -> int:
        await self.router.decisions.flush()
        async with self.engine.connect() as conn:
            return int((await conn.execute(sa.text("select count(*) from routing_decisions"))).scalar_one())


@contextlib.asynccontextmanager
async def serve(database_url: str, mode: str) -> AsyncIterator[Central]:
    await upgrade(database_url)
    engine = create_engine(database_url)
    store = Store(engine)
    cfg = config(mode, database_url)
    await store.sync_province(cfg)
    view = MembershipView((s.id, s.name) for s in cfg.sites)
    live = LiveState(((s.id, s.name) for s in cfg.sites), view.sites, cfg.routing.max_state_age_s)
    router = Router(cfg.routing, live, store, cfg.sites)
    task = asyncio.create_task(router.run())
    server = rpc.Server([SERVICE_NAME])
    central_pb2_grpc.add_CentralServiceServicer_to_server(
        CentralService(store, cfg.province.id, [s.id for s in cfg.sites], view.sites, router), server.grpc
    )
    port = await server.start("127.0.0.1:0")
    channel = rpc.channel(f"127.0.0.1:{port}")
    try:
        yield Central(central_pb2_grpc.CentralServiceStub(channel), router, view, engine)
    finally:
        # Each step bounded: a teardown once waited the test's whole 300 s (on a busy machine,
        # beside a cluster), and a stuck step must not hide the test's own verdict.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(channel.close(), 5.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.stop(0), 5.0)
        task.cancel()
        await asyncio.wait({task}, timeout=10.0)
        await engine.dispose()


@pytest.fixture
async def overflow(database_url: str) -> AsyncIterator[Central]:
    async with serve(database_url, "overflow") as central:
        yield central


@pytest.fixture
async def pooled(database_url: str) -> AsyncIterator[Central]:
    async with serve(database_url, "pooled") as central:
        yield central


def state(
    site_id: str,
    *,
    ready: int = 0,
    logged_in: int = 3,
    waiting: int = 0,
    oldest: float = 0.0,
    idle: float = 0.0,
    ewt: float = 0.0,
    ties: dict[str, int] | None = None,
    trunk_busy: int = 0,
    agent_states: dict[str, str] | None = None,
) -> site_admin_pb2.SiteSummary:
    resources = [site_admin_pb2.ResourceUsage(id="pstn", kind="trunk", busy=trunk_busy, total=30)]
    resources += [
        site_admin_pb2.ResourceUsage(id=f"tie:{peer}", kind="tie", busy=4 - free, total=4)
        for peer, free in (ties or {}).items()
    ]
    return site_admin_pb2.SiteSummary(
        site_id=site_id,
        name=site_id.upper(),
        address=f"10.0.0.{len(site_id)}:{7000 + ord(site_id[0])}",
        resources=resources,
        agent_states=agent_states or {},
        skill_groups=[
            site_admin_pb2.SkillGroupSummary(
                skill_group="general",
                calls_waiting=waiting,
                oldest_wait_s=oldest,
                agents_ready=ready,
                agents_logged_in=logged_in,
                longest_idle_s=idle,
                expected_wait_s=ewt,
            )
        ],
    )


class SiteStream:
    """A site's side of StreamSiteState."""

    def __init__(self, central: Central) -> None:
        self.call: Any = central.stub.StreamSiteState(timeout=STREAM_DEADLINE)
        self.seq = 0

    async def send(self, summary: site_admin_pb2.SiteSummary) -> None:
        self.seq += 1
        await self.call.write(central_pb2.StreamSiteStateRequest(seq=self.seq, state=summary))

    async def command(self, kind: str) -> central_pb2.StreamSiteStateResponse:
        """The next command of that kind central sends (others, e.g. pushed targets, skipped)."""

        async def read() -> central_pb2.StreamSiteStateResponse:
            while True:
                reply = await self.call.read()
                assert reply is not grpc.aio.EOF, "stream ended"
                if reply.WhichOneof("command") == kind:
                    return reply  # type: ignore[no-any-return]

        return await asyncio.wait_for(read(), 15.0)

    async def close(self) -> None:
        # Bounded: this side never reads central's pushes, and a stream whose pushes nobody reads
        # may not take the half-close at once (a teardown waited 300 s once).
        with contextlib.suppress(grpc.aio.AioRpcError, TimeoutError):
            await asyncio.wait_for(self.call.done_writing(), 5.0)
        self.call.cancel()


@contextlib.asynccontextmanager
async def streaming(
    central: Central, *states: site_admin_pb2.SiteSummary
) -> AsyncIterator[dict[str, SiteStream]]:
    streams: dict[str, SiteStream] = {}
    try:
        for s in states:
            streams[s.site_id] = SiteStream(central)
            await streams[s.site_id].send(s)

        async def all_in() -> bool:
            now_states = {x.site_id: x for x in central.router.live.sites(0.0)}
            return all(now_states[sid].streaming and now_states[sid].summary is not None for sid in streams)

        await eventually(all_in, what="states received")
        yield streams
    finally:
        for s in streams.values():
            await s.close()


async def expect_error(call: Any, code: grpc.StatusCode, error_id: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    assert from_rpc_error(info.value).error_id == error_id


def route(
    call_id: str = "c1", site_id: str = "gz", waited: float = 12.0, **kw: Any
) -> central_pb2.RouteCallRequest:
    return central_pb2.RouteCallRequest(
        call_id=call_id, site_id=site_id, skill_group=kw.pop("skill_group", "general"), waited_s=waited, **kw
    )


# ---- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "code", "error_id"),
    [
        (route(site_id="xx"), grpc.StatusCode.NOT_FOUND, "unknown-site"),
        (route(site_id=""), grpc.StatusCode.INVALID_ARGUMENT, "missing-site-id"),
        (route(call_id=""), grpc.StatusCode.INVALID_ARGUMENT, "bad-call-id"),
        (route(call_id="x" * 129), grpc.StatusCode.INVALID_ARGUMENT, "bad-call-id"),
        (route(skill_group=""), grpc.StatusCode.INVALID_ARGUMENT, "missing-skill-group"),
        (route(skill_group="nope"), grpc.StatusCode.NOT_FOUND, "unknown-skill-group"),
        (route(waited=-1.0), grpc.StatusCode.INVALID_ARGUMENT, "bad-waited"),
        (route(waited=float("nan")), grpc.StatusCode.INVALID_ARGUMENT, "bad-waited"),
        (route(waited=float("inf")), grpc.StatusCode.INVALID_ARGUMENT, "bad-waited"),
        (route(priority=10), grpc.StatusCode.INVALID_ARGUMENT, "bad-priority"),
        (route(exclude_site_ids=["sz"] * 65), grpc.StatusCode.INVALID_ARGUMENT, "bad-exclude"),
    ],
)
async def test_route_call_refuses_bad_input_and_stores_nothing(
    overflow: Central, request_: central_pb2.RouteCallRequest, code: grpc.StatusCode, error_id: str
) -> None:
    await expect_error(overflow.stub.RouteCall(request_, timeout=DEADLINE), code, error_id)
    assert await overflow.stored_decisions() == 0


@pytest.mark.parametrize(
    ("request_", "code", "error_id"),
    [
        (central_pb2.PreRouteCallRequest(home_site_id="xx"), grpc.StatusCode.NOT_FOUND, "unknown-site"),
        (central_pb2.PreRouteCallRequest(), grpc.StatusCode.INVALID_ARGUMENT, "missing-site-id"),
        (
            central_pb2.PreRouteCallRequest(home_site_id="gz", ani="12ab"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "bad-phone",
        ),
        (
            central_pb2.PreRouteCallRequest(home_site_id="gz", dnis="1" * 21),
            grpc.StatusCode.INVALID_ARGUMENT,
            "bad-phone",
        ),
    ],
)
async def test_pre_route_refuses_bad_input(
    overflow: Central, request_: central_pb2.PreRouteCallRequest, code: grpc.StatusCode, error_id: str
) -> None:
    await expect_error(overflow.stub.PreRouteCall(request_, timeout=DEADLINE), code, error_id)
    assert await overflow.stored_decisions() == 0


async def test_other_bad_requests(overflow: Central) -> None:
    await expect_error(
        overflow.stub.ListAgents(central_pb2.ListAgentsRequest(site_id="xx"), timeout=DEADLINE),
        grpc.StatusCode.NOT_FOUND,
        "unknown-site",
    )
    await expect_error(
        overflow.stub.ListRoutingDecisions(central_pb2.ListRoutingDecisionsRequest(), timeout=DEADLINE),
        grpc.StatusCode.INVALID_ARGUMENT,
        "bad-call-id",
    )


@pytest.mark.parametrize(
    ("first", "second", "code", "error_id"),
    [
        (state("xx"), None, grpc.StatusCode.NOT_FOUND, "unknown-site"),
        (site_admin_pb2.SiteSummary(), None, grpc.StatusCode.INVALID_ARGUMENT, "missing-site-id"),
        (state("gz"), state("sz"), grpc.StatusCode.INVALID_ARGUMENT, "site-mismatch"),
    ],
)
async def test_state_stream_refuses_unknown_or_changing_sites(
    overflow: Central,
    first: site_admin_pb2.SiteSummary,
    second: site_admin_pb2.SiteSummary | None,
    code: grpc.StatusCode,
    error_id: str,
) -> None:
    stream = SiteStream(overflow)
    await stream.send(first)
    if second is not None:
        await stream.send(second)
    await stream.call.done_writing()
    # Central may have pushed ready targets after the first message: the status comes after them.
    with contextlib.suppress(grpc.aio.AioRpcError):
        while await stream.call.read() is not grpc.aio.EOF:
            pass
    assert await stream.call.code() == code
    metadata = await stream.call.trailing_metadata()
    assert dict(metadata or ()).get("vcc-error-id") == error_id
    sz = overflow.router.live.site("sz", 0.0)
    assert not sz.streaming and sz.summary is None


# ---- overflow -------------------------------------------------------------------------------


async def test_overflow_picks_the_lowest_expected_wait_and_records_the_move(overflow: Central) -> None:
    gz = state("gz", waiting=2, oldest=12.0, ewt=20.0, ties={"sz": 2, "fs": 1})
    sz = state("sz", ready=1, ewt=2.0)
    fs = state("fs", ready=2, ewt=0.5)
    async with streaming(overflow, gz, sz, fs):
        reply = await overflow.stub.RouteCall(route("c1", waited=12.0), timeout=DEADLINE)
        d = reply.decision
        assert (d.call_id, d.origin_site_id, d.target_site_id, d.mode, d.skill_group) == (
            "c1",
            "gz",
            "fs",
            "overflow",
            "general",
        )
        assert "fs has the lowest expected wait" in d.reason
        by_site = {c.site_id: c for c in d.candidates}
        assert (by_site["fs"].note, by_site["fs"].free_tie_channels, by_site["fs"].ready_agents) == (
            "chosen",
            1,
            2,
        )
        assert by_site["sz"].note.startswith("lost to fs")
        assert by_site["gz"].note == "origin"

        # Excluded after a refusal: the other site.
        again = await overflow.stub.RouteCall(
            route("c1", waited=13.0, exclude_site_ids=["fs"]), timeout=DEADLINE
        )
        assert again.decision.target_site_id == "sz"

        # A call that has not waited long enough stays; its periodic re-asks are not stored.
        for waited in (1.0, 2.0, 3.0):
            stay = await overflow.stub.RouteCall(route("c2", waited=waited), timeout=DEADLINE)
            assert stay.decision.target_site_id == ""

    assert await overflow.stored_decisions() == 3
    listed = await overflow.stub.ListRoutingDecisions(
        central_pb2.ListRoutingDecisionsRequest(call_id="c1"), timeout=DEADLINE
    )
    assert [x.target_site_id for x in listed.decisions] == ["fs", "sz"]
    assert listed.decisions[0] == d
    c2 = await overflow.stub.ListRoutingDecisions(
        central_pb2.ListRoutingDecisionsRequest(call_id="c2"), timeout=DEADLINE
    )
    assert [(x.target_site_id, x.candidates[1].note) for x in c2.decisions] == [("", "not needed")]

    # The decisions are part of the call's history at central.
    await overflow.stub.IngestCallEvents(
        central_pb2.IngestCallEventsRequest(
            site_id="gz", events=[convert.event_to_proto(e) for e in answered_call("c1")]
        ),
        timeout=DEADLINE,
    )
    record = (
        await overflow.stub.GetCallRecord(central_pb2.GetCallRecordRequest(call_id="c1"), timeout=DEADLINE)
    ).record
    assert [x.target_site_id for x in record.decisions] == ["fs", "sz"]
    listing = await overflow.stub.ListCallRecords(
        central_pb2.ListCallRecordsRequest(with_events=True), timeout=DEADLINE
    )
    assert [x.target_site_id for x in listing.records[0].decisions] == ["fs", "sz"]
    bare = await overflow.stub.ListCallRecords(central_pb2.ListCallRecordsRequest(), timeout=DEADLINE)
    assert len(bare.records[0].decisions) == 0


async def test_a_site_that_closed_its_stream_is_not_a_target(overflow: Central) -> None:
    async with streaming(overflow, state("gz", logged_in=0, ties={"sz": 2}), state("sz", ready=1)) as streams:
        reply = await overflow.stub.RouteCall(route("c1", waited=0.0), timeout=DEADLINE)
        assert reply.decision.target_site_id == "sz"
        await streams["sz"].close()

        async def sz_down() -> bool:
            return not overflow.router.live.site("sz", 0.0).streaming

        await eventually(sz_down, what="sz stream closed")
        reply = await overflow.stub.RouteCall(route("c1", waited=0.0), timeout=DEADLINE)
        assert reply.decision.target_site_id == ""
        assert {c.site_id: c.note for c in reply.decision.candidates}["sz"] == "down"


# ---- pooled ---------------------------------------------------------------------------------


async def test_pooled_sends_a_pull_to_the_origin_with_the_oldest_call(pooled: Central) -> None:
    gz = state("gz", waiting=2, oldest=5.0, ties={"sz": 2})
    fs = state("fs", waiting=1, oldest=1.0, ties={"sz": 2})
    sz = state("sz", ready=1, idle=7.0)
    # The free agent at sz shows up after gz and fs: central tells gz (the oldest call) to offer it.
    async with streaming(pooled, gz, fs) as streams, streaming(pooled, sz):
        reply = await streams["gz"].command("pull_call")
        pull = reply.pull_call
        assert (pull.skill_group, pull.to_site_id) == ("general", "sz")
        d = pull.decision
        assert (d.origin_site_id, d.target_site_id, d.mode, d.call_id) == ("gz", "sz", "pooled", "")
        assert "waited 5.0s" in d.reason

        # The same target state does not make the same pull twice.
        await streams["gz"].send(gz)
        await eventually(lambda: _seq_seen(pooled, "gz", 2), what="gz state 2")
        assert await pooled.router.pull_round() == 0

        # A call routed at once in pooled mode goes to the free agent too.
        routed = await pooled.stub.RouteCall(route("p1", site_id="fs", waited=0.5), timeout=DEADLINE)
        assert routed.decision.target_site_id == "sz"

    # The pull's decision is recorded; the site names it in its ROUTED event to link it to the call.
    assert await pooled.stored_decisions() == 2
    events = [
        *answered_call("p9")[:4],
        ev(EventKind.TRANSFERRED, 5.0, 5, call_id="p9", data={"to": "sz", "decision_id": d.decision_id}),
    ]
    await pooled.stub.IngestCallEvents(
        central_pb2.IngestCallEventsRequest(site_id="gz", events=[convert.event_to_proto(e) for e in events]),
        timeout=DEADLINE,
    )
    record = (
        await pooled.stub.GetCallRecord(central_pb2.GetCallRecordRequest(call_id="p9"), timeout=DEADLINE)
    ).record
    assert [(x.decision_id, x.call_id, x.target_site_id) for x in record.decisions] == [
        (d.decision_id, "p9", "sz")
    ]
    listed = await pooled.stub.ListRoutingDecisions(
        central_pb2.ListRoutingDecisionsRequest(call_id="p9"), timeout=DEADLINE
    )
    assert [x.decision_id for x in listed.decisions] == [d.decision_id]


async def _seq_seen(central: Central, site_id: str, seq: int) -> bool:
    return central.router.live.site(site_id, 0.0).seq >= seq


# ---- pre-routing ----------------------------------------------------------------------------


async def test_pre_route_around_a_down_home_site(overflow: Central) -> None:
    async with streaming(overflow, state("sz", ready=1, ewt=3.0), state("fs", ready=1, ewt=1.0)):
        reply = await overflow.stub.PreRouteCall(
            central_pb2.PreRouteCallRequest(home_site_id="gz", ani="13800000001", dnis="10000"),
            timeout=DEADLINE,
        )
        assert reply.site_id == "fs"
        assert reply.address == state("fs").address
        assert reply.decision.mode == "pre-route"
        assert {c.site_id: c.note for c in reply.decision.candidates}["gz"] == "down"
    assert await overflow.stored_decisions() == 1


async def test_pre_route_home_site_up(overflow: Central) -> None:
    async with streaming(overflow, state("gz"), state("fs", ewt=0.0)):
        reply = await overflow.stub.PreRouteCall(
            central_pb2.PreRouteCallRequest(home_site_id="gz"), timeout=DEADLINE
        )
        assert (reply.site_id, reply.address) == ("gz", state("gz").address)


async def test_pre_route_everything_down_is_busy(overflow: Central) -> None:
    async with streaming(overflow, state("sz", trunk_busy=30)):
        reply = await overflow.stub.PreRouteCall(
            central_pb2.PreRouteCallRequest(home_site_id="gz"), timeout=DEADLINE
        )
    assert (reply.site_id, reply.address) == ("", "")
    assert reply.decision.target_site_id == ""
    assert reply.decision.reason.startswith("busy")
    assert {c.site_id: c.note for c in reply.decision.candidates} == {
        "gz": "down",
        "sz": "no-trunk-channel",
        "fs": "down",
    }


# ---- the directory --------------------------------------------------------------------------


async def test_list_agents_with_presence(overflow: Central) -> None:
    async with streaming(overflow, state("gz", agent_states={"0101": "READY", "0102": "NOT_READY"})):
        reply = await overflow.stub.ListAgents(central_pb2.ListAgentsRequest(), timeout=DEADLINE)
        got = {
            (a.agent_code, a.site_id, a.state, a.name, tuple(sorted(a.skills.items()))) for a in reply.agents
        }
        assert got == {
            ("0101", "gz", "READY", "Agent 0101", (("general", 5),)),
            ("0102", "gz", "NOT_READY", "Agent 0102", (("billing", 9),)),
            ("0201", "sz", "LOGGED_OUT", "Agent 0201", (("billing", 4), ("general", 3))),
            ("0301", "fs", "LOGGED_OUT", "Agent 0301", (("general", 1),)),
        }
        only = await overflow.stub.ListAgents(central_pb2.ListAgentsRequest(site_id="sz"), timeout=DEADLINE)
        assert [a.agent_code for a in only.agents] == ["0201"]


# ---- pushed overflow targets and change-driven presence ------------------------------------


def routed(decision_id: str, call_id: str, target: str = "sz", epoch: int = 1) -> central_pb2.RoutedOnTarget:
    return central_pb2.RoutedOnTarget(
        decision_id=decision_id,
        call_id=call_id,
        skill_group="general",
        target_site_id=target,
        epoch=epoch,
        waited_s=12.5,
        at=timestamp(1_700_000_000.0),
    )


async def test_central_pushes_ready_targets_and_records_what_the_site_did_with_them(
    overflow: Central,
) -> None:
    gz = state("gz", waiting=1, oldest=3.0, ties={"sz": 2, "fs": 2})
    sz = state("sz", ready=2, ewt=1.0)
    fs = state("fs", ready=1, ewt=4.0)
    async with streaming(overflow, sz, fs) as others, streaming(overflow, gz) as streams:
        # Wait until central saw all three, then read gz's newest push: sz first (lower wait).
        stream = streams["gz"]
        while True:
            push = (await stream.command("overflow_targets")).overflow_targets
            if len(push.targets) == 2:
                break
        assert [(t.skill_group, t.site_id, t.ready_agents, t.free_tie_channels) for t in push.targets] == [
            ("general", "sz", 2, 2),
            ("general", "fs", 1, 2),
        ]
        assert all(0.0 <= t.state_age_s <= 2.0 for t in push.targets)

        # gz offered a call to sz on it and says so: central records it and acknowledges.
        stream.seq += 1
        await stream.call.write(
            central_pb2.StreamSiteStateRequest(
                seq=stream.seq, state=gz, routed=[routed("dec-a", "call-a", epoch=push.epoch)]
            )
        )
        ack = (await stream.command("routed_recorded")).routed_recorded
        assert list(ack.decision_ids) == ["dec-a"]
        # Sent again (the ack was lost with a stream, say): still one decision.
        stream.seq += 1
        bad = routed("dec-b", "call-b", target="xx")
        await stream.call.write(
            central_pb2.StreamSiteStateRequest(
                seq=stream.seq, state=gz, routed=[routed("dec-a", "call-a", epoch=push.epoch), bad]
            )
        )
        ack = (await stream.command("routed_recorded")).routed_recorded
        assert list(ack.decision_ids) == ["dec-a", "dec-b"], "a malformed one is acknowledged, not kept"
        assert overflow.router.refused_reports == 1
        del others

    listed = await overflow.stub.ListRoutingDecisions(
        central_pb2.ListRoutingDecisionsRequest(call_id="call-a"), timeout=DEADLINE
    )
    assert len(listed.decisions) == 1
    d = listed.decisions[0]
    assert (d.decision_id, d.origin_site_id, d.target_site_id, d.mode) == ("dec-a", "gz", "sz", "overflow")
    assert "pushed" in d.reason and "waited 12.5s" in d.reason
    assert {c.site_id: c.note for c in d.candidates}["sz"] == "chosen"
    none = await overflow.stub.ListRoutingDecisions(
        central_pb2.ListRoutingDecisionsRequest(call_id="call-b"), timeout=DEADLINE
    )
    assert not none.decisions
    await overflow.router.decisions.flush()
    assert await overflow.stored_decisions() == 1


async def test_a_stale_target_is_not_pushed(overflow: Central) -> None:
    gz = state("gz", waiting=1, ties={"sz": 2})
    async with streaming(overflow, state("sz", ready=2)), streaming(overflow, gz) as streams:
        push = (await streams["gz"].command("overflow_targets")).overflow_targets
        assert [t.site_id for t in push.targets] == ["sz"]
        # sz goes silent beyond the freshness limit (30 s here): the next push has no target.
        ages = {"sz": 31.0}
        real = overflow.router.live.sites

        def aged(now: float) -> list[Any]:
            return [s if s.site_id not in ages else replace(s, age_s=ages[s.site_id]) for s in real(now)]

        overflow.router.live.sites = aged  # type: ignore[method-assign]
        overflow.router.live.changed.set()
        while push.targets:
            push = (await streams["gz"].command("overflow_targets")).overflow_targets


async def test_a_gap_in_presence_deltas_is_detected_and_resynced(overflow: Central) -> None:
    """A broken stream: a delta arrives after a missing message. Central keeps the presence it
    had, asks for a whole one, and applies nothing partial until it comes."""
    full = central_pb2.PRESENCE_UPDATE_FULL
    delta = central_pb2.PRESENCE_UPDATE_DELTA
    stream = SiteStream(overflow)

    async def send(seq: int, kind: int, states: dict[str, str]) -> None:
        await stream.call.write(
            central_pb2.StreamSiteStateRequest(
                seq=seq,
                state=state("gz", agent_states=states),
                presence=kind,  # type: ignore[arg-type]
            )
        )

    def presence() -> tuple[dict[str, str], bool]:
        s = overflow.router.live.site("gz", 0.0)
        return dict(s.presence), s.presence_complete

    try:
        await send(1, full, {"0101": "READY", "0102": "NOT_READY"})
        await send(2, delta, {"0101": "TALKING"})
        await eventually(lambda: _seq_seen(overflow, "gz", 2), what="gz delta 2")
        assert presence() == ({"0101": "TALKING", "0102": "NOT_READY"}, True)
        # Message 3 is lost: delta 4 cannot be applied.
        await send(4, delta, {"0102": "READY"})
        resync = (await stream.command("resync_presence")).resync_presence
        assert resync.applied_seq == 4
        assert presence() == ({"0101": "TALKING", "0102": "NOT_READY"}, False)
        assert overflow.router.live.gaps("gz") == 1
        # Deltas after the gap are not applied either, until the site sends everything.
        await send(5, delta, {"0101": "READY"})
        await eventually(lambda: _seq_seen(overflow, "gz", 5), what="gz delta 5")
        assert presence()[0]["0101"] == "TALKING"
        await send(6, full, {"0101": "WRAP_UP", "0102": "READY"})
        await eventually(lambda: _seq_seen(overflow, "gz", 6), what="gz full 6")
        assert presence() == ({"0101": "WRAP_UP", "0102": "READY"}, True)
        # The directory reads it.
        listed = await overflow.stub.ListAgents(central_pb2.ListAgentsRequest(site_id="gz"), timeout=DEADLINE)
        assert {a.agent_code: a.state for a in listed.agents}.get("0102") == "READY"
    finally:
        await stream.close()
