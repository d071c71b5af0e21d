"""A city killed for good while its call is offered to another city, on real processes.

gz (the caller's city: its trunk holds the call) offers a call to sz, whose agent's desk rings;
gz is SIGKILLed and not restarted. sz withdraws its side (its agent ready again); central shows
the call open at a city that is down, with no outcome of its own; `vcc records close-lost-site`
is refused for sz (up) and closes gz's call (SITE_LOST, audited). gz started again after all
ships the end its restart journals: kept in the journey, no second final outcome, one record.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import eventually
from tests.integration.support import Caller, Desktop, address, password_hash, site_summary
from tests.integration.test_virtual_center import write_province
from tools.cli import app
from tools.province.cluster import Cluster
from tools.province.generate import SiteSpec, generate_province
from tools.province.netutil import free_port
from tools.simulation.invariants import check, final_events
from vcc import rpc
from vcc.tls import DESKTOP, TRUNK
from vcc.v1 import audit_pb2, audit_pb2_grpc, central_pb2, central_pb2_grpc, common_pb2

pytestmark = pytest.mark.cluster

K = common_pb2


async def start(run_dir: Path) -> Cluster:
    config = generate_province(
        [
            SiteSpec("gz", "广州 Guangzhou", trunk_channels=10, agents={"general": 1}, tie_channels=4),
            SiteSpec("sz", "深圳 Shenzhen", trunk_channels=10, agents={"general": 1}, tie_channels=4),
        ],
        etcd_endpoint="127.0.0.1:2379",
        central_listen=f"127.0.0.1:{free_port()}",
        database_url=f"sqlite+aiosqlite:///{run_dir / 'central.db'}",
        password_hash=password_hash(),
        # The far agent's desk keeps ringing for the whole test: never a ring-no-answer.
        ring_timeout_s=120.0,
        outbox_dir=run_dir / "outbox",
        lease_ttl_s=2,
        # Pooled: a call with nobody ready at home goes at once to a ready agent elsewhere.
        routing={"mode": "pooled"},
    )
    path = await asyncio.to_thread(write_province, config, run_dir)
    return await Cluster.start(path, run_dir / "run", seed_customers=10, fresh_ports=True)


async def record_of(cluster: Cluster, call_id: str) -> central_pb2.CallRecord:
    async with rpc.channel(cluster.config.central.listen) as ch:
        reply = await central_pb2_grpc.CentralServiceStub(ch).GetCallRecord(
            central_pb2.GetCallRecordRequest(call_id=call_id), timeout=5
        )
    return reply.record


async def every_record(cluster: Cluster) -> list[central_pb2.CallRecord]:
    async with rpc.channel(cluster.config.central.listen) as ch:
        reply = await central_pb2_grpc.CentralServiceStub(ch).ListCallRecords(
            central_pb2.ListCallRecordsRequest(page_size=1000, with_events=True), timeout=10
        )
    return list(reply.records)


def vcc(*args: str) -> tuple[int, str]:
    """The real command line, as an operator types it (in a thread: it runs its own event loop);
    its exit code and what it wrote (stdout and stderr)."""
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


async def test_a_city_killed_for_good_leaves_its_call_open_until_an_operator_closes_it(
    tmp_path: Path,
) -> None:
    cluster = await start(tmp_path)
    # The file the cluster's processes read (their fresh ports): the operator's.
    config_path = cluster.config_path
    try:
        home = Desktop(
            rpc.channel(address(cluster, "gz"), persona=DESKTOP), cluster.config.site("gz").agents[0].code
        )
        far = Desktop(
            rpc.channel(address(cluster, "sz"), persona=DESKTOP), cluster.config.site("sz").agents[0].code
        )
        await home.login()  # logged in, never ready: the call cannot be served at home
        await far.login()
        await far.ready()

        caller = Caller(rpc.channel(address(cluster, "gz"), persona=TRUNK))
        ringing = await caller.until("ringing")
        assert ringing.ringing.site_id == "sz"
        offered = (await far.next_event("call_offered")).call_offered
        call_id = offered.call_id

        async def shipped() -> bool:
            # gz's ROUTED and sz's RINGING have reached central (the outboxes shipped them).
            try:
                record = await record_of(cluster, call_id)
            except Exception:
                return False
            kinds = {(e.site_id, e.kind) for e in record.events}
            return {("gz", K.CALL_EVENT_KIND_ROUTED), ("sz", K.CALL_EVENT_KIND_RINGING)} <= kinds

        await eventually(shipped, timeout_s=30, what="the offered call's events at central")

        if home._reader is not None:
            home._reader.cancel()  # its stream dies with gz
        await cluster.kill_site("gz")  # SIGKILL; not restarted (yet)

        # sz: the origin's stream broke, the offer is withdrawn, its agent is free again.
        withdrawn = await far.next_event("call_offer_withdrawn")
        assert withdrawn.call_offer_withdrawn.call_id == call_id

        async def far_ready() -> bool:
            return (await far.state()).state == K.AGENT_STATE_READY

        await eventually(far_ready, timeout_s=20, what="sz's agent ready again")

        async def tie_free() -> bool:
            summary = await site_summary(cluster, "sz")
            return all(r.busy == 0 for r in summary.resources if r.kind == "tie")

        await eventually(tie_free, timeout_s=20, what="sz's tie channel to gz free again")

        async def marked() -> central_pb2.CallRecord:
            record = await record_of(cluster, call_id)
            assert record.HasField("open_at_down_site"), "not marked yet"
            return record

        record = await eventually(marked, timeout_s=30, what="central marks the call open at a down city")
        assert record.open_at_down_site.site_id == "gz" and record.open_at_down_site.HasField("down_since")
        # Never an outcome central invents.
        assert record.state != K.CALL_STATE_ENDED and record.outcome == K.CALL_OUTCOME_UNSPECIFIED

        # The operator: refused for a city that is up, the dry run lists the call, then closed.
        code, out = await asyncio.to_thread(
            vcc, "records", "close-lost-site", "sz", "-c", str(config_path), "--yes"
        )
        assert code == 1 and "site-up" in out, out
        code, out = await asyncio.to_thread(vcc, "records", "close-lost-site", "gz", "-c", str(config_path))
        assert code == 0 and call_id in out and "would be closed" in out, out
        assert (await record_of(cluster, call_id)).state != K.CALL_STATE_ENDED  # a dry run changes nothing
        code, out = await asyncio.to_thread(
            vcc,
            "records",
            "close-lost-site",
            "gz",
            "-c",
            str(config_path),
            "--reason",
            "decommissioned",
            "--yes",
        )
        assert code == 0 and call_id in out, out

        closed = await record_of(cluster, call_id)
        assert (closed.state, closed.outcome) == (K.CALL_STATE_ENDED, K.CALL_OUTCOME_SITE_LOST)
        assert not closed.HasField("open_at_down_site")
        assert [e.site_id for e in final_events(closed)] == ["@central"]
        async with rpc.channel(cluster.config.central.listen) as ch:
            audit = await audit_pb2_grpc.AuditServiceStub(ch).ListAudit(
                audit_pb2.ListAuditRequest(), timeout=5
            )
        done = [e for e in audit.entries if e.action == "site-lost-close"]
        assert sorted(e.outcome for e in done) == ["ok", "refused"]
        ok = next(e for e in done if e.outcome == "ok")
        assert ok.target == "site gz" and ok.detail["calls"] == "1" and ok.detail["note"] == "decommissioned"

        # gz comes back after all: it ends what its last run left up; central keeps that end in
        # the journey, and the call keeps its one final outcome and its one record.
        await cluster.restart_site("gz")

        async def late_end_arrived() -> central_pb2.CallRecord:
            record = await record_of(cluster, call_id)
            assert any(e.site_id == "gz" and e.kind == K.CALL_EVENT_KIND_ENDED for e in record.events)
            return record

        after = await eventually(late_end_arrived, timeout_s=30, what="gz's end of the call left up")
        late = next(e for e in after.events if e.site_id == "gz" and e.kind == K.CALL_EVENT_KIND_ENDED)
        assert late.data["reason"] == "site-restarted"
        assert (after.state, after.outcome) == (K.CALL_STATE_ENDED, K.CALL_OUTCOME_SITE_LOST)
        assert after.ended_at == closed.ended_at
        assert len(final_events(after)) == 1
        records = await every_record(cluster)
        assert [r.call_id for r in records].count(call_id) == 1
        kept = check([], records)
        assert kept["calls_with_two_final_records"] == 0 and kept["calls_served_twice_at_once"] == 0
        await far.close()
    finally:
        await cluster.stop()
