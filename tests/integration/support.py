"""What the integration tests share: talking to a running cluster as operators, desks and callers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import yaml

from tests.helpers import eventually
from tools.province.cluster import Cluster
from tools.province.generate import DEFAULT_PASSWORD, SiteSpec, generate_province, hash_password
from tools.province.netutil import free_port
from tools.simulation.report import reconcile_detailed
from tools.simulation.robots import RobotPolicy, run_robots
from tools.simulation.traffic import CallerView, SiteLoad, TrafficPlan, run_traffic
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

_HASH: list[str] = []


def password_hash() -> str:
    """One slow hash of the demo password for every generated province of the session."""
    if not _HASH:
        _HASH.append(hash_password(DEFAULT_PASSWORD))
    return _HASH[0]


def local_province(run_dir: Path, sites: Sequence[SiteSpec], **config: Any) -> Path:
    """`sites` as a province on this machine, written to run_dir/province.yaml: central on a free
    port over SQLite in `run_dir`, the outboxes there too, one hash of the demo password for every
    agent. `config`: generate_province's other arguments (routing, ring_timeout_s, ...)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "etcd_endpoint": "127.0.0.1:2379",  # the cluster gives etcd a free port of its own
        "central_listen": f"127.0.0.1:{free_port()}",
        "database_url": f"sqlite+aiosqlite:///{run_dir / 'central.db'}",
        "password_hash": password_hash(),
        "outbox_dir": run_dir / "outbox",
        **config,
    }
    path = run_dir / "province.yaml"
    path.write_text(yaml.safe_dump(generate_province(sites, **config), allow_unicode=True))
    return path


@contextmanager
def module_cluster(
    run_dir: Path, sites: Sequence[SiteSpec], seed_customers: int = 20, **config: Any
) -> Iterator[Cluster]:
    """A cluster of local_province(run_dir, sites, **config) for a module's tests to share (started
    and stopped outside their event loops), every process on a fresh port."""
    path = local_province(run_dir, sites, **config)
    started = asyncio.run(
        Cluster.start(path, run_dir / "run", seed_customers=seed_customers, fresh_ports=True)
    )
    try:
        yield started
    finally:
        asyncio.run(started.stop())


def agents(cluster: Cluster, site_id: str) -> list[tuple[str, str]]:
    return [(a.code, DEFAULT_PASSWORD) for a in cluster.config.site(site_id).agents]


def address(cluster: Cluster, site_id: str) -> str:
    return cluster.config.site(site_id).listen


async def site_summary(cluster: Cluster, site_id: str) -> site_admin_pb2.SiteSummary:
    async with rpc.channel(address(cluster, site_id)) as ch:
        stub = site_admin_pb2_grpc.SiteAdminServiceStub(ch)
        reply = await stub.GetSiteStatus(site_admin_pb2.GetSiteStatusRequest(), timeout=5)
        return reply.summary


async def central_records(cluster: Cluster) -> list[central_pb2.CallRecord]:
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


async def drained(cluster: Cluster, views: list[CallerView]) -> list[central_pb2.CallRecord]:
    """Wait until every site's outbox reached central and central holds a record per call."""

    async def check() -> list[central_pb2.CallRecord] | None:
        for site in cluster.config.sites:
            if not cluster.site_alive(site.id):
                continue  # a killed site's outbox waits for its restart
            if (await site_summary(cluster, site.id)).outbox_pending:
                return None
        records = await central_records(cluster)
        wanted = {v.call_id for v in views if v.call_id}
        ended = {r.call_id for r in records if r.state == common_pb2.CALL_STATE_ENDED}
        return records if wanted <= ended else None

    return await eventually(check, timeout_s=30, interval_s=0.2, what="outboxes drained to central")


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

    async def answer_next(self) -> cti_pb2.CallOffered:
        offered = (await self.next_event("call_offered")).call_offered
        await self.stub.Answer(
            cti_pb2.AnswerRequest(
                idempotency_key=uuid.uuid4().hex, session_token=self.token, call_id=offered.call_id
            ),
            timeout=5,
        )
        await self.next_event("call_connected")
        return offered

    async def hang_up(self, call_id: str) -> None:
        await self.stub.HangUp(
            cti_pb2.HangUpRequest(
                idempotency_key=uuid.uuid4().hex, session_token=self.token, call_id=call_id
            ),
            timeout=5,
        )

    async def transfer(
        self,
        call_id: str,
        kind: cti_pb2.TransferKind.ValueType,
        attached: dict[str, str] | None = None,
        **target: object,
    ) -> None:
        await self.stub.Transfer(
            cti_pb2.TransferRequest(
                idempotency_key=uuid.uuid4().hex,
                session_token=self.token,
                call_id=call_id,
                kind=kind,
                target=cti_pb2.TransferTarget(**target),  # type: ignore[arg-type]
                attached_data=attached or {},
            ),
            timeout=5,
        )

    async def transfer_stage(self, stage: str) -> cti_pb2.TransferProgress:
        while True:
            progress = (await self.next_event("transfer")).transfer
            if progress.stage == stage:
                return progress

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

    def __init__(self, channel: grpc.aio.Channel, ani: str = "13800000007", dial_id: str = "") -> None:
        """`dial_id`: the callee of a site's dial-out (a callback) answering."""
        self._actions: asyncio.Queue[trunk_pb2.PlaceCallRequest | None] = asyncio.Queue()
        self._actions.put_nowait(
            trunk_pb2.PlaceCallRequest(
                offer=trunk_pb2.CallOffer(
                    idempotency_key=uuid.uuid4().hex, ani=ani, dnis="10000", dial_id=dial_id
                )
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


async def traffic_with_robots(
    cluster: Cluster,
    rates: Mapping[str, float],
    duration_s: float,
    *,
    during: Awaitable[None] | None = None,
    robots_at: Sequence[str] | None = None,
    handle_s: float = 0.3,
    patience_s: float | None = 1.5,
    customers: int = 50,
    pre_routing: bool = False,
    seed: int = 11,
) -> tuple[list[CallerView], list[central_pb2.CallRecord]]:
    """Robots at `robots_at` (default: the loaded sites), Poisson callers at `rates`; returns what the
    callers saw and central's records once every outbox has drained."""
    stop = asyncio.Event()
    policy = RobotPolicy(handle_time_mean_s=handle_s, handle_distribution="constant", seed=7)
    staffed = tuple(robots_at if robots_at is not None else rates)
    robots = [
        asyncio.create_task(run_robots(address(cluster, s), agents(cluster, s), policy, stop))
        for s in staffed
    ]
    try:
        # Robots ready before the first caller.
        await eventually(lambda: all_ready(cluster, staffed), timeout_s=20, what="robots logged in and ready")
        plan = TrafficPlan(
            loads=[
                SiteLoad(
                    s,
                    address(cluster, s),
                    rate_per_s=r,
                    trunk_channels=cluster.config.site(s).trunk_groups[0].channels,
                )
                for s, r in rates.items()
            ],
            duration_s=duration_s,
            seed=seed,
            patience_mean_s=patience_s,
            customers=customers,
            central_address=cluster.config.central.listen if pre_routing else None,
        )
        traffic = asyncio.create_task(run_traffic(plan, drain_timeout_s=20))
        if during is not None:
            await during
        views = await traffic
    finally:
        stop.set()
        await asyncio.gather(*robots)
    return views, await drained(cluster, views)


async def all_ready(cluster: Cluster, sites: Sequence[str]) -> bool:
    for site_id in sites:
        summary = await site_summary(cluster, site_id)
        if summary.agents_by_state.get("READY", 0) != len(cluster.config.site(site_id).agents):
            return False
    return True


def assert_reconciled(views: list[CallerView], records: list[central_pb2.CallRecord]) -> None:
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
