"""The caller generator against a fake site at the gRPC boundary (tests/tools/fake_site.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.tools.fake_site import FakeSite
from tools.province.netutil import free_port
from tools.simulation.report import reconcile
from tools.simulation.robots import RobotPolicy, run_robots
from tools.simulation.traffic import CallerView, SiteLoad, TrafficPlan, _Network, load_journal, run_traffic
from vcc.v1 import central_pb2, central_pb2_grpc, common_pb2

AGENTS = {"0101": "123456", "0102": "123456", "0103": "123456"}


# How this test's callers reach the site: its trunk link, or a PlaceCall stream each.
_MODE = {"trunk_link": True}


@pytest.fixture(autouse=True, params=[True, False], ids=["link", "per-call"])
def trunk_link(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setitem(_MODE, "trunk_link", request.param)
    return bool(request.param)


@pytest.fixture
async def site() -> AsyncIterator[FakeSite]:
    fake = FakeSite(agents=dict(AGENTS))
    await fake.start()
    yield fake
    await fake.kill()


def plan_for(site: FakeSite, **kwargs: object) -> TrafficPlan:
    options: dict[str, object] = {"duration_s": 0.5, "seed": 7, "trunk_link": _MODE["trunk_link"]}
    options.update(kwargs)
    rate = options.pop("rate_per_s", 30.0)
    assert isinstance(rate, float)
    return TrafficPlan(loads=[SiteLoad("gz", site.address, rate)], **options)  # type: ignore[arg-type]


async def test_answered_calls_journal_and_reconcile(site: FakeSite, tmp_path: Path, trunk_link: bool) -> None:
    stop = asyncio.Event()
    robots = asyncio.create_task(
        run_robots(site.address, list(AGENTS.items()), RobotPolicy(handle_time_mean_s=0.01, seed=3), stop)
    )
    seen: list[CallerView] = []
    try:
        journal = tmp_path / "calls.jsonl"
        views = await run_traffic(plan_for(site, digits=(("1", 0.0), ("2", 1.0))), journal, seen.append)
    finally:
        stop.set()
        stats = await robots
    assert views, "the seeded plan offers calls"
    assert [v.outcome for v in views] == ["answered"] * len(views)
    assert stats.answered == len(views)
    # Every call on the one link, or a stream each; a link's message counted once among its calls.
    assert site.links == (1 if trunk_link else 0)
    assert all(v.messages_in > 0 and v.messages_out > 0 for v in views)
    if not trunk_link:
        assert all(v.messages_in == int(v.messages_in) for v in views)
    for view in views:
        kinds = [kind for kind, _, _ in view.progress]
        assert kinds[:4] == ["accepted", "prompt", "digits", "queued"]
        assert kinds[-2:] == ["connected", "ended"]
        assert view.call_id in site.calls
        assert view.agent_code in AGENTS
        assert view.served_site_id == "gz"
        assert view.entry_site_id == "gz"
        assert view.skill_group == "general"
        assert view.reason == "agent-hung-up"
        assert view.queued_at is not None and view.answered_at is not None and view.ended_at is not None
        assert view.offered_at <= view.queued_at <= view.answered_at <= view.ended_at
        assert view.ani.startswith("13")
        assert site.calls[view.call_id].digits == ["2"]  # weight 0 for "1"
    assert sorted(v.key for v in seen) == sorted(v.key for v in views)
    assert sorted(load_journal(journal), key=lambda v: v.offered_at) == views
    assert reconcile(views, site.records()) == {
        "caller_calls": len(views),
        "central_records": len(views),
        "missing": 0,
        "duplicated": 0,
        "mismatched": 0,
        "without_call_id": 0,
        "unknown_to_callers": 0,
        "duplicated_records": 0,
        "duplicated_final_events": 0,
        "duplicated_answered_at_once": 0,
        "duplicated_events_twice": 0,
    }


async def test_patience_runs_out_and_caller_abandons(site: FakeSite) -> None:
    views = await run_traffic(plan_for(site, patience_mean_s=0.05, patience_distribution="constant"))
    assert views
    for view in views:
        assert view.outcome == "abandoned"
        assert view.reason == "caller-hung-up"
        assert ("hang_up", {"why": "patience"}) in [(k, d) for k, _, d in view.progress]
        assert view.answered_at is None
        assert site.calls[view.call_id].outcome == common_pb2.CALL_OUTCOME_ABANDONED


async def test_no_trunk_channel_is_blocked(site: FakeSite) -> None:
    site.trunk_channels = 0
    views = await run_traffic(plan_for(site))
    assert views
    for view in views:
        assert view.outcome == "blocked"
        assert view.call_id
        assert [k for k, _, _ in view.progress] == ["ended"]
        assert view.queued_at is None
    assert reconcile(views, site.records())["missing"] == 0


async def test_killed_site_makes_calls_lost_with_the_error(site: FakeSite) -> None:
    async def kill_once_calls_wait() -> None:
        # Killed only once a caller waits, however slowly the machine sets calls up.
        for _ in range(12_000):  # polled, at most two minutes
            if any(c.state == "queued" for c in site.calls.values()):
                break
            await asyncio.sleep(0.01)
        await site.kill()

    killer = asyncio.create_task(kill_once_calls_wait())
    views = await run_traffic(plan_for(site, duration_s=0.4, rate_per_s=50.0), drain_timeout_s=5.0)
    await killer
    lost = [v for v in views if v.outcome == "lost"]
    assert lost, "calls queued with no agent were on the killed site"
    assert all(v.error for v in lost)
    assert {v.outcome for v in views} <= {"lost"}
    early = [v for v in lost if v.call_id]
    assert early and all(v.error.split(":")[0] in {"UNAVAILABLE", "CANCELLED", "INTERNAL"} for v in early)


async def test_drain_timeout_hangs_up_calls_still_waiting(site: FakeSite) -> None:
    views = await run_traffic(plan_for(site, duration_s=0.2), drain_timeout_s=0.2)
    assert views
    for view in views:
        assert view.outcome == "abandoned"
        assert ("hang_up", {"why": "drain-timeout"}) in [(k, d) for k, _, d in view.progress]


async def test_arrivals_and_callers_repeat_with_the_seed(site: FakeSite) -> None:
    site.trunk_channels = 0  # blocked at once: the fastest calls there are
    plan = plan_for(site, rate_per_s=100.0, customers=50, unknown_caller_share=0.0)
    first = await run_traffic(plan)
    second = await run_traffic(plan)
    assert len(first) == len(second) > 10
    assert [v.ani for v in first] == [v.ani for v in second]
    assert all(v.ani.startswith("1380000") and int(v.ani[-4:]) < 50 for v in first)
    unknown = await run_traffic(plan_for(site, rate_per_s=100.0, unknown_caller_share=1.0))
    assert unknown and all(v.ani.startswith("1390000") for v in unknown)


async def test_menu_without_the_plans_digit_gets_its_first_choice(site: FakeSite) -> None:
    site.prompt_choices = ("3", "4")
    views = await run_traffic(plan_for(site, patience_mean_s=0.05, patience_distribution="constant"))
    assert views
    # A caller whose patience ran out before the prompt sent nothing; every other sent the first choice.
    sent = [site.calls[v.call_id].digits for v in views]
    assert ["3"] in sent and all(d in (["3"], []) for d in sent), sent


async def test_a_caller_who_hung_up_before_the_menu_presses_no_key(site: FakeSite) -> None:
    """Patience out before a slow site even played the menu: the caller hangs up and says no
    more; the call ends abandoned, never "lost" (digits written after the site ended the call
    would fail with INTERNAL and take the `ended` on its way with them)."""
    site.accept_delay_s = 0.3
    views = await run_traffic(plan_for(site, duration_s=0.3, rate_per_s=20.0, patience_mean_s=0.05))
    assert views
    for view in views:
        kinds = [k for k, _, _ in view.progress]
        assert view.outcome == "abandoned", (view.outcome, view.error, kinds)
        assert "digits" not in kinds[kinds.index("hang_up") :], kinds


class _Replica(central_pb2_grpc.CentralServiceServicer):
    """A central replica for pre-routing: the leader answers, a follower names the leader."""

    def __init__(self, leader_address: str | None = None) -> None:
        self.leader_address = leader_address
        self.asked = 0

    async def PreRouteCall(
        self, request: central_pb2.PreRouteCallRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> central_pb2.PreRouteCallResponse:
        self.asked += 1
        if self.leader_address is not None:
            context.set_trailing_metadata((("vcc-leader", self.leader_address),))
            await context.abort(grpc.StatusCode.UNAVAILABLE, "not-leader")
        return central_pb2.PreRouteCallResponse(site_id="sz", address="127.0.0.1:1")


async def test_the_network_asks_the_next_replica_when_the_one_it_asks_is_gone(site: FakeSite) -> None:
    """A killed leader answers nothing (no `vcc-leader`): the network asks another replica, and a
    follower there names the leader, whom it asks next; a call is never kept home for that."""
    gone = f"127.0.0.1:{free_port()}"  # the killed leader: nobody listens
    leader_server, follower_server = grpc.aio.server(), grpc.aio.server()
    leader_address = f"127.0.0.1:{leader_server.add_insecure_port('127.0.0.1:0')}"
    follower_address = f"127.0.0.1:{follower_server.add_insecure_port('127.0.0.1:0')}"
    leader, follower = _Replica(), _Replica(leader_address=leader_address)
    central_pb2_grpc.add_CentralServiceServicer_to_server(leader, leader_server)
    central_pb2_grpc.add_CentralServiceServicer_to_server(follower, follower_server)
    servers = (leader_server, follower_server)
    for server in servers:
        await server.start()
    plan = TrafficPlan(
        loads=[SiteLoad("gz", site.address, 1.0)],
        duration_s=0.1,
        central_address=gone,
        central_addresses=(gone, follower_address, leader_address),
    )
    network = _Network(plan, {})
    try:
        target = await network._pre_route("gz", "13800000001")
        assert target is not None and target[0] == "sz"
        assert (follower.asked, leader.asked) == (1, 1)
        # From then on it asks the leader first.
        await network._pre_route("gz", "13800000002")
        assert (follower.asked, leader.asked) == (1, 2)
    finally:
        await network.close()
        for server in servers:
            await server.stop(None)
