"""One call's whole journey on real processes: etcd, central and three site nodes.

Run twice: central on SQLite and on PostgreSQL (through the CockroachDB dialect). Callers and
robot agents use the real trunk and CTI APIs; what the callers saw is reconciled with central.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
import yaml

from tests.fixtures.postgres import PostgresServer, create_database
from tests.helpers import eventually
from tools.cluster import Cluster
from tools.netutil import free_port
from tools.province_gen import DEFAULT_PASSWORD, SiteSpec, generate_province, hash_password
from tools.report import reconcile_detailed
from tools.robots import RobotPolicy, run_robots
from tools.traffic import CallerView, SiteLoad, TrafficPlan, run_traffic
from vcc import rpc
from vcc.v1 import (
    central_pb2,
    central_pb2_grpc,
    common_pb2,
    cti_pb2,
    cti_pb2_grpc,
    site_admin_pb2,
    site_admin_pb2_grpc,
    trunk_pb2,
    trunk_pb2_grpc,
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
        password_hash=_password_hash(),
        ring_timeout_s=1.0,
        wrap_up_s=0.0,
        outbox_dir=run_dir / "outbox",
        digit_timeout_s=2.0,
        lease_ttl_s=2,
    )
    config_path = run_dir / "province.yaml"
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True))
    started = asyncio.run(
        Cluster.start(config_path, run_dir / "run", seed_customers=CUSTOMERS, fresh_ports=True)
    )
    yield started
    asyncio.run(started.stop())


_HASH: list[str] = []


def _password_hash() -> str:
    if not _HASH:
        _HASH.append(hash_password(DEFAULT_PASSWORD))
    return _HASH[0]


def _agents(cluster: Cluster, site_id: str) -> list[tuple[str, str]]:
    return [(a.code, DEFAULT_PASSWORD) for a in cluster.config.site(site_id).agents]


def _address(cluster: Cluster, site_id: str) -> str:
    return cluster.config.site(site_id).listen


async def _site_summary(cluster: Cluster, site_id: str) -> site_admin_pb2.SiteSummary:
    async with rpc.channel(_address(cluster, site_id)) as ch:
        stub = site_admin_pb2_grpc.SiteAdminServiceStub(ch)
        reply = await stub.GetSiteStatus(site_admin_pb2.GetSiteStatusRequest(), timeout=5)
        return reply.summary


async def _central_records(cluster: Cluster) -> list[central_pb2.CallRecord]:
    records: list[central_pb2.CallRecord] = []
    token = ""
    async with rpc.channel(cluster.config.central.listen) as ch:
        stub = central_pb2_grpc.CentralServiceStub(ch)
        while True:
            page = await stub.ListCallRecords(
                central_pb2.ListCallRecordsRequest(page_size=1000, page_token=token, with_events=True),
                timeout=10,
            )
            records.extend(page.records)
            token = page.next_page_token
            if not token:
                return records


async def _drained(cluster: Cluster, views: list[CallerView]) -> list[central_pb2.CallRecord]:
    """Wait until every site's outbox reached central and central holds a record per call."""

    async def check() -> list[central_pb2.CallRecord] | None:
        for site in cluster.config.sites:
            if (await _site_summary(cluster, site.id)).outbox_pending:
                return None
        records = await _central_records(cluster)
        wanted = {v.call_id for v in views if v.call_id}
        ended = {r.call_id for r in records if r.state == common_pb2.CALL_STATE_ENDED}
        return records if wanted <= ended else None

    return await eventually(check, timeout_s=30, interval_s=0.2, what="outboxes drained to central")


async def _traffic_with_robots(
    cluster: Cluster, duration_s: float, *, during: object = None
) -> tuple[list[CallerView], list[central_pb2.CallRecord]]:
    stop = asyncio.Event()
    policy = RobotPolicy(handle_time_mean_s=0.3, handle_distribution="constant", seed=7)
    robots = [
        asyncio.create_task(run_robots(_address(cluster, s), _agents(cluster, s), policy, stop))
        for s in ("gz", "sz")
    ]
    try:
        # Robots ready before the first caller.
        await eventually(
            lambda: _all_ready(cluster, ("gz", "sz")), timeout_s=20, what="robots logged in and ready"
        )
        plan = TrafficPlan(
            loads=[
                SiteLoad("gz", _address(cluster, "gz"), rate_per_s=12.0),
                SiteLoad("sz", _address(cluster, "sz"), rate_per_s=4.0),
            ],
            duration_s=duration_s,
            seed=11,
            patience_mean_s=1.5,
            customers=CUSTOMERS,
        )
        traffic = asyncio.create_task(run_traffic(plan, drain_timeout_s=20))
        if during is not None:
            await during  # type: ignore[misc]
        views = await traffic
    finally:
        stop.set()
        await asyncio.gather(*robots)
    return views, await _drained(cluster, views)


async def _all_ready(cluster: Cluster, sites: tuple[str, ...]) -> bool:
    for site_id in sites:
        summary = await _site_summary(cluster, site_id)
        if summary.agents_by_state.get("READY", 0) != len(cluster.config.site(site_id).agents):
            return False
    return True


def _assert_reconciled(views: list[CallerView], records: list[central_pb2.CallRecord]) -> None:
    counts, problems = reconcile_detailed(views, records)
    assert problems == [], problems[:10]
    assert counts["missing"] == 0 and counts["duplicated"] == 0 and counts["mismatched"] == 0, counts
    assert counts["without_call_id"] == 0, counts
    lost = [(v.call_id, v.error, [p[0] for p in v.progress]) for v in views if v.outcome == "lost"]
    assert not lost, lost[:5]
    # Exactly one record per call id, and no record that no caller made.
    ids = [r.call_id for r in records]
    assert len(ids) == len(set(ids))
    assert {v.call_id for v in views} == set(ids)


async def test_every_call_has_exactly_one_record_matching_what_the_caller_saw(cluster: Cluster) -> None:
    views, records = await _traffic_with_robots(cluster, duration_s=6.0)
    _assert_reconciled(views, records)
    outcomes = {v.outcome for v in views if v.entry_site_id == "gz"}
    assert {"answered", "blocked"} <= outcomes, outcomes
    for site_id in ("gz", "sz"):
        assert any(v.outcome == "answered" and v.entry_site_id == site_id for v in views)
    # Full trunks block, and the site counts what it refused.
    gz = await _site_summary(cluster, "gz")
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
        await asyncio.sleep(3.0)
        # Records pile up in the outboxes meanwhile.
        assert (await _site_summary(cluster, "gz")).outbox_pending > 0
        await cluster.start_central()

    views, records = await _traffic_with_robots(cluster, duration_s=6.0, during=central_outage())
    # Records of earlier tests are at central too; only this run's calls count.
    mine = {v.call_id for v in views}
    _assert_reconciled(views, [r for r in records if r.call_id in mine])


class Desktop:
    """A hand-driven agent desktop on the real CTI API."""

    def __init__(self, channel: grpc.aio.Channel, code: str) -> None:
        self.stub = cti_pb2_grpc.AgentDesktopServiceStub(channel)
        self.code = code
        self.token = ""
        self.events: asyncio.Queue[cti_pb2.StreamEventsResponse] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    async def login(self) -> None:
        reply = await self.stub.Login(
            cti_pb2.LoginRequest(
                idempotency_key=uuid.uuid4().hex, agent_code=self.code, password=DEFAULT_PASSWORD
            ),
            timeout=10,
        )
        self.token = reply.session_token
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for event in self.stub.StreamEvents(cti_pb2.StreamEventsRequest(session_token=self.token)):
            await self.events.put(event)

    async def ready(self) -> None:
        await self.stub.SetState(
            cti_pb2.SetStateRequest(
                idempotency_key=uuid.uuid4().hex, session_token=self.token, state=common_pb2.AGENT_STATE_READY
            ),
            timeout=5,
        )

    async def next_event(self, kind: str) -> cti_pb2.StreamEventsResponse:
        while True:
            event = await asyncio.wait_for(self.events.get(), 10)
            if event.WhichOneof("event") == kind:
                return event

    async def state(self) -> cti_pb2.AgentSnapshot:
        return (await self.stub.GetAgent(cti_pb2.GetAgentRequest(session_token=self.token), timeout=5)).agent

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        agent = await self.state()
        if agent.state in (common_pb2.AGENT_STATE_READY, common_pb2.AGENT_STATE_NOT_READY):
            await self.stub.Logout(
                cti_pb2.LogoutRequest(idempotency_key=uuid.uuid4().hex, session_token=self.token), timeout=5
            )


class Caller:
    """One hand-driven call on the real trunk API."""

    def __init__(self, channel: grpc.aio.Channel, ani: str = "13800000007") -> None:
        self._actions: asyncio.Queue[trunk_pb2.PlaceCallRequest | None] = asyncio.Queue()
        self._actions.put_nowait(
            trunk_pb2.PlaceCallRequest(
                offer=trunk_pb2.CallOffer(idempotency_key=uuid.uuid4().hex, ani=ani, dnis="10000")
            )
        )
        self.stream = trunk_pb2_grpc.TrunkIngressServiceStub(channel).PlaceCall(self._requests())
        self.seen: list[trunk_pb2.PlaceCallResponse] = []

    async def _requests(self) -> AsyncIterator[trunk_pb2.PlaceCallRequest]:
        while (action := await self._actions.get()) is not None:
            yield action

    async def until(self, kind: str) -> trunk_pb2.PlaceCallResponse:
        while True:
            msg = await asyncio.wait_for(self.stream.read(), 10)
            assert msg is not grpc.aio.EOF, (
                f"stream ended before {kind}: {[m.WhichOneof('progress') for m in self.seen]}"
            )
            self.seen.append(msg)
            if msg.WhichOneof("progress") == "prompt":
                self._actions.put_nowait(
                    trunk_pb2.PlaceCallRequest(digits=trunk_pb2.CallerDigits(digits="1"))
                )
            if msg.WhichOneof("progress") == kind:
                return msg

    def hang_up(self) -> None:
        self._actions.put_nowait(trunk_pb2.PlaceCallRequest(hang_up=trunk_pb2.CallerHangUp()))
        self._actions.put_nowait(None)


async def test_ring_no_answer_moves_the_call_and_makes_the_agent_not_ready(cluster: Cluster) -> None:
    first, second = (a.code for a in cluster.config.site("fs").agents)
    async with rpc.channel(_address(cluster, "fs")) as ch:
        idle, answering = Desktop(ch, first), Desktop(ch, second)
        await idle.login()
        await answering.login()
        await idle.ready()  # ready first: longest idle, so it rings first
        await answering.ready()
        caller = Caller(ch, ani="13800000007")
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
    async with rpc.channel(_address(cluster, "fs")) as ch:
        desk = Desktop(ch, code)
        await desk.login()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await Desktop(ch, code).login()
        assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
        # The first session is untouched.
        assert (await desk.state()).state == common_pb2.AGENT_STATE_NOT_READY
        await desk.close()


async def test_full_trunks_block_and_are_counted(cluster: Cluster) -> None:
    before = await _site_summary(cluster, "fs")
    async with rpc.channel(_address(cluster, "fs")) as ch:
        # Nobody is ready at fs: the two trunk channels are held by waiting callers.
        holding = [Caller(ch, ani=f"1390000000{i}") for i in range(2)]
        for c in holding:
            await c.until("queued")
        refused = Caller(ch)
        ended = await refused.until("ended")
        assert ended.ended.outcome == common_pb2.CALL_OUTCOME_BLOCKED
        after = await _site_summary(cluster, "fs")
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
