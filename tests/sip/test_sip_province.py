"""Real telephone calls into a real province (etcd, central, a site node with its rtpengine, all
separate processes): SIPp dials the service number, the caller hears the menu, its RFC 2833
digit chooses the queue, a (gRPC robot) agent answers, the caller hangs up; central holds
exactly one record per SIP dialog. A full trunk answers 503 and counts the call blocked; a
caller who hangs up in the queue is abandoned; an unknown number is 404 and leaves no record."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from site_node.media.prompts import prompt_path, site_prompts
from tests.helpers import eventually
from tests.integration.support import agents, central_records, password_hash, site_summary
from tests.sip.audio import RtpEar, best_correlation, read_wav, voiced
from tests.sip.conftest import rtp_base
from tools.province.cluster import STATE_FILE, Cluster
from tools.province.generate import SiteSpec, generate_province, write_province
from tools.province.netutil import free_port
from tools.province.sip import add_sip
from tools.province.sipp import SippResult, call_scenario, refused_scenario, run_sipp
from tools.simulation.robots import RobotPolicy, run_robots
from vcc.v1 import central_pb2, common_pb2

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    started = asyncio.run(start_province(tmp_path_factory.mktemp("province")))
    yield started
    asyncio.run(started.stop())


async def start_province(tmp: Path) -> Cluster:
    raw = generate_province(
        # One agent for general enquiries (digit 1); nobody for billing (digit 2): its callers wait.
        [SiteSpec("gz", "Guangzhou", trunk_channels=3, agents={"general": 1, "billing": 0})],
        etcd_endpoint="127.0.0.1:2379",
        central_listen=f"127.0.0.1:{free_port()}",
        database_url=f"sqlite+aiosqlite:///{tmp / 'central.db'}",
        password_hash=password_hash(),
        outbox_dir=tmp / "outbox",
        ring_timeout_s=20,
        # Longer than the menu prompt plus the caller's listening time (the audio check).
        digit_timeout_s=15,
    )
    add_sip(raw, prompts_dir="prompts", rtp_base=rtp_base() + 300, language="en")
    config = write_province(raw, tmp / "province.yaml")
    return await Cluster.start(config, tmp / "run")


def sip_target(cluster: Cluster) -> str:
    sip = cluster.config.site("gz").sip
    assert sip is not None
    return sip.listen


async def record(cluster: Cluster, call_id: str) -> central_pb2.CallRecord:
    async def check() -> central_pb2.CallRecord | None:
        found = [r for r in await central_records(cluster) if r.call_id == call_id]
        assert len(found) <= 1, f"{len(found)} records of call {call_id}"
        if found and found[0].state == common_pb2.CALL_STATE_ENDED:
            return found[0]
        return None

    return await eventually(check, timeout_s=30, interval_s=0.2, what=f"central's record of {call_id}")


def dialled(result: SippResult) -> str:
    assert result.ok, result.stdout + result.errors
    [call_id] = result.vcc_call_ids
    return call_id


async def test_cluster_json_names_each_sites_sip_address(cluster: Cluster) -> None:
    state = json.loads((cluster.run_dir / STATE_FILE).read_text())
    assert state["sites"]["gz"]["sip"] == sip_target(cluster)
    assert (cluster.run_dir / "prompts" / "gz-menu.wav").exists()


async def test_a_call_reaches_an_agent_and_central_holds_exactly_one_record_of_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    stop = asyncio.Event()
    policy = RobotPolicy(handle_time_mean_s=60.0, handle_distribution="constant")
    robots = asyncio.create_task(
        run_robots(cluster.config.site("gz").listen, agents(cluster, "gz"), policy, stop)
    )
    try:

        async def ready() -> bool:
            summary = await site_summary(cluster, "gz")
            return any(g.agents_ready for g in summary.skill_groups if g.skill_group == "general")

        await eventually(ready, what="the robot agent is ready")
        result = await run_sipp(call_scenario("1"), sip_target(cluster), tmp_path / "sipp", hold_ms=3000)
        call_id = dialled(result)
        rec = await record(cluster, call_id)
    finally:
        stop.set()
        await robots
    assert rec.outcome == common_pb2.CALL_OUTCOME_ANSWERED
    assert rec.ani == "13800000001" and rec.dnis == "10000" and rec.entry_site_id == "gz"
    assert rec.skill_group == "general" and rec.agent_code == agents(cluster, "gz")[0][0]
    kinds = [common_pb2.CallEventKind.Name(e.kind).removeprefix("CALL_EVENT_KIND_") for e in rec.events]
    assert kinds[:4] == ["ARRIVED", "IVR_STARTED", "DIGITS", "QUEUED"]
    assert "ANSWERED" in kinds and "CALLER_HUNG_UP" in kinds and kinds[-1] == "ENDED"


async def test_a_caller_who_hangs_up_in_the_queue_is_abandoned(cluster: Cluster, tmp_path: Path) -> None:
    result = await run_sipp(call_scenario("2"), sip_target(cluster), tmp_path / "sipp", hold_ms=1000)
    rec = await record(cluster, dialled(result))
    assert rec.outcome == common_pb2.CALL_OUTCOME_ABANDONED and rec.skill_group == "billing"


async def test_a_full_trunk_answers_503_and_central_counts_the_call_blocked(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Three channels held by callers waiting for billing; the fourth caller is refused.
    holders = asyncio.create_task(
        run_sipp(call_scenario("2"), sip_target(cluster), tmp_path / "hold", calls=3, rate=50, hold_ms=8000,
                 limit=3, name="hold")
    )  # fmt: skip

    async def full() -> bool:
        summary = await site_summary(cluster, "gz")
        return sum(r.busy for r in summary.resources if r.kind == "trunk") == 3

    await eventually(full, what="every trunk channel taken")
    refused = await run_sipp(refused_scenario(503), sip_target(cluster), tmp_path / "busy", name="busy")
    rec = await record(cluster, dialled(refused))
    assert rec.outcome == common_pb2.CALL_OUTCOME_BLOCKED
    assert (await site_summary(cluster, "gz")).calls_blocked == 1
    held = await holders
    assert held.ok, held.stdout + held.errors
    for call_id in held.vcc_call_ids:
        assert (await record(cluster, call_id)).outcome == common_pb2.CALL_OUTCOME_ABANDONED


async def test_an_unknown_number_is_404_and_leaves_no_record(cluster: Cluster, tmp_path: Path) -> None:
    before = len(await central_records(cluster))
    offered = (await site_summary(cluster, "gz")).calls_offered
    result = await run_sipp(refused_scenario(404), sip_target(cluster), tmp_path / "sipp", service="99999")
    assert result.ok, result.stdout + result.errors
    assert (await site_summary(cluster, "gz")).calls_offered == offered
    assert len(await central_records(cluster)) == before


async def test_the_caller_hears_the_menu_prompt(cluster: Cluster, tmp_path: Path) -> None:
    site = cluster.config.site("gz")
    prompts = site_prompts(site)
    menu = read_wav(prompt_path(cluster.run_dir / "prompts", prompts["menu"]))
    queue = read_wav(prompt_path(cluster.run_dir / "prompts", prompts["queue"]))
    ear = await RtpEar.open()
    try:
        # The caller's SDP names our socket as its ear; SIPp itself sends no audio on this call.
        scenario = call_scenario("", media_port=str(ear.port))
        hold_ms = int(len(menu) / 8) + 1500
        result = await run_sipp(scenario, sip_target(cluster), tmp_path / "sipp", hold_ms=hold_ms)
        dialled(result)
    finally:
        ear.close()
    heard = voiced(ear.audio())
    spoken = voiced(menu)
    # The whole prompt arrived (its voiced part, within two packets), and it is the menu, not the
    # queue's announcement and music.
    assert abs(len(heard) - len(spoken)) <= 320, (len(heard), len(spoken))
    assert best_correlation(heard, spoken) > 0.9
    assert best_correlation(heard, voiced(queue)) < 0.5


async def test_a_killed_site_leaves_no_rtpengine_behind_and_answers_again_after_its_restart(
    cluster: Cluster, tmp_path: Path
) -> None:
    log = cluster.logs_dir / "site-gz.log"
    [pid] = [int(m) for m in re.findall(r"rtpengine pid (\d+)", log.read_text())][-1:]
    assert psutil.pid_exists(pid)
    # SIGKILL to the site process alone (not its process group): the kernel must end its engine.
    site = cluster.sites["gz"]
    os.kill(site.pid, signal.SIGKILL)
    assert await site.wait_exit(10)

    async def engine_gone() -> bool:
        return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    await eventually(engine_gone, what="the dead site's rtpengine exits with it")
    await cluster.restart_site("gz")
    result = await run_sipp(call_scenario("2"), sip_target(cluster), tmp_path / "sipp", hold_ms=500)
    assert (await record(cluster, dialled(result))).outcome == common_pb2.CALL_OUTCOME_ABANDONED
