"""Transfers across cities on real processes: blind, consult, conference, to a skill group at a
named site; the attached data and the customer record reach the target's screen."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.helpers import eventually
from tests.integration.support import Caller, Desktop, address
from tests.integration.test_virtual_center import start_province
from tools.province.cluster import Cluster
from tools.simulation.scenario import parse_scenario
from tools.simulation.simulate import simulate
from vcc import rpc
from vcc.tls import DESKTOP, TRUNK
from vcc.v1 import central_pb2, central_pb2_grpc, common_pb2, cti_pb2

pytestmark = pytest.mark.cluster

BLIND, CONSULT = cti_pb2.TRANSFER_KIND_BLIND, cti_pb2.TRANSFER_KIND_CONSULT
ANI = "13800000009"  # a seeded customer: the screen pop must follow the caller


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    started = asyncio.run(start_province(tmp_path_factory.mktemp("transfers"), {"mode": "isolated"}))
    yield started
    asyncio.run(started.stop())


async def desks(cluster: Cluster, site: str) -> list[Desktop]:
    ch = rpc.channel(address(cluster, site), persona=DESKTOP)
    result = [Desktop(ch, a.code) for a in cluster.config.site(site).agents]
    for desk in result:
        await desk.login()
    return result


async def answered_call(cluster: Cluster, first: Desktop) -> tuple[Caller, str]:
    """A caller at gz answered by `first` (the only ready agent there)."""
    await first.ready()
    caller = Caller(rpc.channel(address(cluster, "gz"), persona=TRUNK), ani=ANI)
    offered = await first.answer_next()
    await caller.until("connected")
    return caller, offered.call_id


async def logged_out(*groups: list[Desktop]) -> None:
    for group in groups:
        for desk in group:
            await desk.close()


async def transfer_recorded(cluster: Cluster, call_id: str) -> None:
    async def check() -> bool:
        async with rpc.channel(cluster.config.central.listen) as ch:
            reply = await central_pb2_grpc.CentralServiceStub(ch).GetCallRecord(
                central_pb2.GetCallRecordRequest(call_id=call_id), timeout=5
            )
        kinds = [e.kind for e in reply.record.events]
        return (
            reply.record.state == common_pb2.CALL_STATE_ENDED
            and common_pb2.CALL_EVENT_KIND_TRANSFERRED in kinds
        )

    await eventually(check, what="central's record shows the transfer and the end")


async def test_blind_transfer_to_an_agent_in_another_city(cluster: Cluster) -> None:
    gz, sz = await desks(cluster, "gz"), await desks(cluster, "sz")
    target = sz[0]
    await target.ready()
    caller, call_id = await answered_call(cluster, gz[0])
    await gz[0].transfer(call_id, BLIND, {"order": "A-1024"}, agent_code=target.code)
    moved = await caller.until("transferred")
    assert (moved.transferred.to_site_id, moved.transferred.to_agent_code) == ("sz", target.code)
    assert (await gz[0].next_event("call_ended")).call_ended.reason == "transferred"
    ring = await caller.until("ringing")
    assert (ring.ringing.site_id, ring.ringing.agent_code) == ("sz", target.code)
    offered = await target.answer_next()
    # The screen pop at the target: attached data, transfer history and the customer record.
    assert offered.call_id == call_id and offered.purpose == "transfer-blind"
    assert offered.attached_data["order"] == "A-1024"
    assert offered.attached_data["transfer_history"].startswith(f"{gz[0].code}>{target.code}@sz")
    assert offered.customer.phone == ANI and offered.customer.name
    assert (await caller.until("connected")).connected.agent_code == target.code
    await target.hang_up(call_id)
    assert (await caller.until("ended")).ended.outcome == common_pb2.CALL_OUTCOME_ANSWERED
    await transfer_recorded(cluster, call_id)
    await logged_out(gz, sz)


async def test_consult_then_complete_hands_the_caller_over(cluster: Cluster) -> None:
    gz, sz = await desks(cluster, "gz"), await desks(cluster, "sz")
    target = sz[1]
    await target.ready()
    caller, call_id = await answered_call(cluster, gz[0])
    await gz[0].transfer(call_id, CONSULT, {"reason": "billing"}, agent_code=target.code)
    await caller.until("held")
    offered = await target.answer_next()
    assert offered.purpose == "transfer-consult" and offered.from_agent_code == gz[0].code
    assert offered.attached_data["reason"] == "billing" and offered.customer.phone == ANI
    await gz[0].transfer_stage("consult-connected")
    await gz[0].stub.CompleteTransfer(
        cti_pb2.CompleteTransferRequest(
            idempotency_key=uuid.uuid4().hex, session_token=gz[0].token, call_id=call_id
        ),
        timeout=5,
    )
    assert (await caller.until("connected")).connected.agent_code == target.code
    await target.hang_up(call_id)
    assert (await caller.until("ended")).ended.outcome == common_pb2.CALL_OUTCOME_ANSWERED
    await transfer_recorded(cluster, call_id)
    await logged_out(gz, sz)


async def test_three_way_conference_across_cities(cluster: Cluster) -> None:
    gz, sz = await desks(cluster, "gz"), await desks(cluster, "sz")
    target = sz[0]
    await target.ready()
    caller, call_id = await answered_call(cluster, gz[0])
    await gz[0].transfer(call_id, CONSULT, agent_code=target.code)
    await caller.until("held")
    await target.answer_next()
    await gz[0].transfer_stage("consult-connected")
    await gz[0].stub.Conference(
        cti_pb2.ConferenceRequest(
            idempotency_key=uuid.uuid4().hex, session_token=gz[0].token, call_id=call_id
        ),
        timeout=5,
    )
    await caller.until("retrieved")  # all three talk
    await gz[0].transfer_stage("conferenced")
    # The first agent leaves; the caller stays with the colleague in the other city.
    await gz[0].hang_up(call_id)
    assert (await caller.until("connected")).connected.agent_code == target.code
    await target.hang_up(call_id)
    assert (await caller.until("ended")).ended.outcome == common_pb2.CALL_OUTCOME_ANSWERED
    await transfer_recorded(cluster, call_id)
    await logged_out(gz, sz)


async def test_blind_transfer_to_a_skill_group_at_a_named_site_and_bad_targets(cluster: Cluster) -> None:
    gz, fs = await desks(cluster, "gz"), await desks(cluster, "fs")
    await fs[0].ready()
    caller, call_id = await answered_call(cluster, gz[0])

    for target, code in (
        ({"agent_code": "9999"}, grpc.StatusCode.NOT_FOUND),
        ({"skill_group": "nope", "site_id": "fs"}, grpc.StatusCode.NOT_FOUND),
        ({"agent_code": gz[0].code}, grpc.StatusCode.INVALID_ARGUMENT),
        ({}, grpc.StatusCode.INVALID_ARGUMENT),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gz[0].transfer(call_id, BLIND, **target)
        assert refused.value.code() == code
    await gz[0].transfer(call_id, BLIND, skill_group="general", site_id="fs")
    ring = await caller.until("ringing")
    assert ring.ringing.site_id == "fs"
    offered = await fs[0].answer_next()
    assert offered.customer.phone == ANI
    caller.hang_up()
    assert (await caller.until("ended")).ended.outcome == common_pb2.CALL_OUTCOME_ANSWERED
    await transfer_recorded(cluster, call_id)
    await logged_out(gz, fs)


async def test_simulated_agents_conference_colleagues_in_other_cities(tmp_path: Path) -> None:
    scenario = parse_scenario(
        {
            "seed": 5,
            "duration_s": 8,
            "warmup_s": 1,
            "handle_time": {"mean_s": 0.6, "distribution": "constant"},
            "service_level_threshold_s": 1.0,
            "routing": {"mode": "isolated"},
            "transfers": {"probability": 0.3, "kind": "conference", "to": "remote"},
            "sites": [
                {"id": "gz", "trunk_channels": 30, "agents": {"general": 3}, "arrival_rate_per_s": 2.0},
                {"id": "sz", "trunk_channels": 30, "agents": {"general": 3}, "arrival_rate_per_s": 1.0},
            ],
        },
        "test",
    )
    result = await simulate(scenario, tmp_path / "run")
    transfers = result.report["transfers"]
    assert isinstance(transfers, dict)
    assert transfers["completed"] > 0 and transfers["cross_site"] == transfers["completed"]
    assert result.clean, result.problems


async def test_an_agent_serving_another_citys_caller_transfers_it_on(tmp_path: Path) -> None:
    # Overflow: nobody is logged in at gz, so its caller is served by the only ready agent, at sz.
    cluster = await start_province(tmp_path, {"mode": "overflow", "overflow_after_s": 0.3})
    try:
        sz, fs = await desks(cluster, "sz"), await desks(cluster, "fs")
        await sz[0].ready()
        caller = Caller(rpc.channel(address(cluster, "gz"), persona=TRUNK), ani=ANI)
        offered = await sz[0].answer_next()
        assert offered.entry_site_id == "gz"
        assert (await caller.until("connected")).connected.site_id == "sz"
        # The sz agent hands the caller to a colleague at fs; gz, which holds the trunk, carries it out.
        await fs[0].ready()
        await sz[0].transfer(offered.call_id, BLIND, {"case": "42"}, agent_code=fs[0].code)
        moved = await caller.until("transferred")
        assert (moved.transferred.to_site_id, moved.transferred.to_agent_code) == ("fs", fs[0].code)
        ring = await caller.until("ringing")
        assert ring.ringing.site_id == "fs"
        second = await fs[0].answer_next()
        assert second.attached_data["case"] == "42" and second.customer.phone == ANI
        assert f"{sz[0].code}@sz>{fs[0].code}@fs" in second.attached_data["transfer_history"]
        await fs[0].hang_up(offered.call_id)
        assert (await caller.until("ended")).ended.outcome == common_pb2.CALL_OUTCOME_ANSWERED
        await transfer_recorded(cluster, offered.call_id)
        await logged_out(sz, fs)
    finally:
        await cluster.stop()
