"""One call's whole journey on real processes: etcd, central and three site nodes.

Run twice: central on SQLite and on PostgreSQL (through the CockroachDB dialect). Callers and
robot agents use the real trunk and CTI APIs; what the callers saw is reconciled with central.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import grpc
import pytest
import yaml

from tests.fixtures.postgres import PostgresServer, create_database
from tests.helpers import eventually
from tests.integration.support import (
    Caller,
    Desktop,
    address,
    assert_reconciled,
    password_hash,
    site_summary,
    traffic_with_robots,
)
from tools.province.cluster import Cluster
from tools.province.generate import SiteSpec, generate_province
from tools.province.netutil import free_port
from vcc import rpc
from vcc.tls import DESKTOP, TRUNK
from vcc.v1 import (
    central_pb2,
    central_pb2_grpc,
    common_pb2,
    cti_pb2,
)

pytestmark = pytest.mark.cluster

CUSTOMERS = 50


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    run_dir = tmp_path_factory.mktemp(f"province-{request.param}")
    if request.param == "sqlite":
        database_url = f"sqlite+aiosqlite:///{run_dir / 'central.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        database_url = asyncio.run(create_database(server, "province"))
    config = generate_province(
        [
            # gz: overloaded, few trunk channels, so calls block and wait.
            SiteSpec("gz", "广州 Guangzhou", trunk_channels=4, agents={"general": 2}),
            SiteSpec("sz", "深圳 Shenzhen", trunk_channels=30, agents={"general": 3}),
            # fs: no robots; the tests drive its agents by hand.
            SiteSpec("fs", "佛山 Foshan", trunk_channels=2, agents={"general": 2}),
        ],
        etcd_endpoint="127.0.0.1:2379",
        central_listen=f"127.0.0.1:{free_port()}",
        database_url=database_url,
        password_hash=password_hash(),
        ring_timeout_s=1.0,
        wrap_up_s=0.0,
        outbox_dir=run_dir / "outbox",
        digit_timeout_s=2.0,
        lease_ttl_s=2,
        # This module is about one city's journey; tests/integration/test_virtual_center.py moves calls.
        routing={"mode": "isolated"},
    )
    config_path = run_dir / "province.yaml"
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True))
    started = asyncio.run(
        Cluster.start(config_path, run_dir / "run", seed_customers=CUSTOMERS, fresh_ports=True)
    )
    yield started
    asyncio.run(started.stop())


async def test_every_call_has_exactly_one_record_matching_what_the_caller_saw(cluster: Cluster) -> None:
    views, records = await traffic_with_robots(
        cluster, {"gz": 12.0, "sz": 4.0}, duration_s=6.0, customers=CUSTOMERS
    )
    assert_reconciled(views, records)
    outcomes = {v.outcome for v in views if v.entry_site_id == "gz"}
    assert {"answered", "blocked"} <= outcomes, outcomes
    for site_id in ("gz", "sz"):
        assert any(v.outcome == "answered" and v.entry_site_id == site_id for v in views)
    # Full trunks block, and the site counts what it refused.
    gz = await site_summary(cluster, "gz")
    blocked = sum(1 for v in views if v.entry_site_id == "gz" and v.outcome == "blocked")
    assert gz.calls_blocked >= blocked > 0
    trunk = next(r for r in gz.resources if r.kind == "trunk")
    assert trunk.refused >= blocked and trunk.busy == 0
    # The record says where and by whom the call was served, with its events in order.
    by_id = {r.call_id: r for r in records}
    answered = next(v for v in views if v.outcome == "answered")
    record = by_id[answered.call_id]
    assert record.outcome == common_pb2.CALL_OUTCOME_ANSWERED
    assert record.agent_code == answered.agent_code and record.served_site_id == answered.entry_site_id
    kinds = [e.kind for e in record.events]
    assert kinds[0] == common_pb2.CALL_EVENT_KIND_ARRIVED and kinds[-1] == common_pb2.CALL_EVENT_KIND_ENDED


async def test_killing_central_for_a_few_seconds_loses_no_record(cluster: Cluster) -> None:
    async def central_outage() -> None:
        await asyncio.sleep(1.5)  # let traffic build up first: this is the fault's schedule
        await cluster.kill_central()

        # Records pile up in the outboxes meanwhile (a condition, waited for).
        async def piled_up() -> bool:
            return (await site_summary(cluster, "gz")).outbox_pending > 0

        await eventually(piled_up, timeout_s=20, what="records held in gz's outbox")
        await asyncio.sleep(2.0)  # the fault's schedule: central stays down a while longer
        await cluster.start_central()

    views, records = await traffic_with_robots(
        cluster, {"gz": 12.0, "sz": 4.0}, duration_s=6.0, during=central_outage(), customers=CUSTOMERS
    )
    # Records of earlier tests are at central too; only this run's calls count.
    mine = {v.call_id for v in views}
    assert_reconciled(views, [r for r in records if r.call_id in mine])


async def test_ring_no_answer_moves_the_call_and_makes_the_agent_not_ready(cluster: Cluster) -> None:
    first, second = (a.code for a in cluster.config.site("fs").agents)
    # The desktops and the trunk are different clients, each with its own certificate.
    async with (
        rpc.channel(address(cluster, "fs"), persona=DESKTOP) as ch,
        rpc.channel(address(cluster, "fs"), persona=TRUNK) as trunk,
    ):
        idle, answering = Desktop(ch, first), Desktop(ch, second)
        await idle.login()
        await answering.login()
        await idle.ready()  # ready first: longest idle, so it rings first
        await answering.ready()
        caller = Caller(trunk, ani="13800000007")
        rang = await caller.until("ringing")
        assert rang.ringing.agent_code == first
        offered = await idle.next_event("call_offered")
        # Screen pop: the customer record from central rides on the ring.
        assert offered.call_offered.customer.phone == "13800000007"
        assert offered.call_offered.customer.name
        # `idle` never answers: after the ring timeout the call rings `answering`.
        rang_again = await caller.until("ringing")
        assert rang_again.ringing.agent_code == second
        withdrawn = await idle.next_event("call_offer_withdrawn")
        assert withdrawn.call_offer_withdrawn.reason == "no-answer"
        state = await idle.state()
        assert state.state == common_pb2.AGENT_STATE_NOT_READY and state.reason_code == "no-answer"
        offer = await answering.next_event("call_offered")
        await answering.stub.Answer(
            cti_pb2.AnswerRequest(
                idempotency_key=uuid.uuid4().hex,
                session_token=answering.token,
                call_id=offer.call_offered.call_id,
            ),
            timeout=5,
        )
        await caller.until("connected")
        caller.hang_up()
        ended = await caller.until("ended")
        assert ended.ended.outcome == common_pb2.CALL_OUTCOME_ANSWERED
        await answering.next_event("call_ended")
        await idle.close()
        await answering.close()

    async def record_has_ring_no_answer() -> bool:
        async with rpc.channel(cluster.config.central.listen) as ch:
            stub = central_pb2_grpc.CentralServiceStub(ch)
            try:
                reply = await stub.GetCallRecord(
                    central_pb2.GetCallRecordRequest(call_id=ended.call_id), timeout=5
                )
            except grpc.aio.AioRpcError:
                return False
            kinds = [e.kind for e in reply.record.events]
            return common_pb2.CALL_EVENT_KIND_RING_NO_ANSWER in kinds and reply.record.agent_code == second

    await eventually(record_has_ring_no_answer, what="central's record shows the ring-no-answer")


async def test_duplicate_login_is_refused(cluster: Cluster) -> None:
    code = cluster.config.site("fs").agents[0].code
    async with rpc.channel(address(cluster, "fs"), persona=DESKTOP) as ch:
        desk = Desktop(ch, code)
        await desk.login()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await Desktop(ch, code).login()
        assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
        # The first session is untouched.
        assert (await desk.state()).state == common_pb2.AGENT_STATE_NOT_READY
        await desk.close()


async def test_full_trunks_block_and_are_counted(cluster: Cluster) -> None:
    before = await site_summary(cluster, "fs")
    async with rpc.channel(address(cluster, "fs"), persona=TRUNK) as ch:
        # Nobody is ready at fs: the two trunk channels are held by waiting callers.
        holding = [Caller(ch, ani=f"1390000000{i}") for i in range(2)]
        for c in holding:
            await c.until("queued")
        refused = Caller(ch)
        ended = await refused.until("ended")
        assert ended.ended.outcome == common_pb2.CALL_OUTCOME_BLOCKED
        after = await site_summary(cluster, "fs")
        assert after.calls_blocked == before.calls_blocked + 1
        trunk = next(r for r in after.resources if r.kind == "trunk")
        assert (trunk.busy, trunk.refused) == (2, before.resources[0].refused + 1)
        for c in holding:
            c.hang_up()
            assert (await c.until("ended")).ended.outcome == common_pb2.CALL_OUTCOME_ABANDONED

    async def blocked_recorded() -> bool:
        async with rpc.channel(cluster.config.central.listen) as ch:
            stub = central_pb2_grpc.CentralServiceStub(ch)
            try:
                reply = await stub.GetCallRecord(
                    central_pb2.GetCallRecordRequest(call_id=ended.call_id), timeout=5
                )
            except grpc.aio.AioRpcError:
                return False
            return reply.record.outcome == common_pb2.CALL_OUTCOME_BLOCKED

    await eventually(blocked_recorded, what="central records the blocked call")
