"""A city killed while one of its calls talks over the SIP tie trunk (docs/RELIABILITY.md, "A city
killed while calls talk over a tie trunk"), with real processes: etcd, central and two site nodes
with their rtpengines; SIPp the caller at gz, nobody logged in at gz, so the call overflows to sz
whose robot agent answers on a real registered SIP phone (baresip, `vcc agents --sip`).

A crash is what is tested: the site node gets SIGKILL and so does its rtpengine at once (a host or
container going down takes both; the supervisor's PR_SET_PDEATHSIG would otherwise SIGTERM the
engine, a gentler end than this).

- The target (sz) dies: gz takes its caller back (its dialog, trunk channel and media never left
  gz), frees the tie channel and queues the caller again at home, where the next agent answers it
  (re-queued, not ended); one record at central, answered at sz and then at gz, never both at once.
- The origin (gz) dies: sz's agent's phone gets a BYE (the site sees the peer stream break: the
  leg is "origin-lost"), the agent is free again, sz's rtpengine drops the tie leg that stood in
  for the caller; once gz is back its journal ships, and central holds one record with a final
  outcome.

The module's setup is copied (smaller) from tests/sip/test_sip_province.py, which is being
reworked beside this file; fold the two once that lands."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from site_node.media.ng import MediaError
from site_node.sip.registrar import ha1
from tests.helpers import eventually
from tests.integration.support import agents, central_records, password_hash, site_summary
from tests.sip.conftest import PHONE_PASSWORD, rtp_base
from tools.bench.sip import engine_calls, site_engine
from tools.province.cluster import Cluster
from tools.province.generate import SiteSpec, generate_province, write_province
from tools.province.netutil import free_port
from tools.province.sip import add_sip
from tools.province.sipp import SippResult, call_scenario, run_sipp
from tools.simulation.invariants import answered_intervals, check
from tools.simulation.robots import RobotPolicy, RobotStats, run_robots
from tools.simulation.sip_callers import caller_tone, run_sip_robots
from vcc import rpc
from vcc.v1 import central_pb2, common_pb2

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

# The robots talk far longer than a test: only a fault (or the caller) ends their calls.
TALK = RobotPolicy(handle_time_mean_s=600.0, handle_distribution="constant")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    started = asyncio.run(start_province(tmp_path_factory.mktemp("ties")))
    yield started
    asyncio.run(started.stop())


async def start_province(tmp: Path) -> Cluster:
    raw = generate_province(
        [
            SiteSpec("gz", "Guangzhou", trunk_channels=3, agents={"general": 1}, tie_channels=2),
            SiteSpec("sz", "Shenzhen", trunk_channels=3, agents={"general": 1}, tie_channels=2),
        ],
        etcd_endpoint="127.0.0.1:2379",
        central_listen=f"127.0.0.1:{free_port()}",
        database_url=f"sqlite+aiosqlite:///{tmp / 'central.db'}",
        password_hash=password_hash(),
        outbox_dir=tmp / "outbox",
        ring_timeout_s=20,
        digit_timeout_s=15,
    )
    add_sip(raw, prompts_dir="prompts", rtp_base=rtp_base() + 300, rtp_ports=200, language="en")
    for site in raw["sites"]:
        for agent in site["agents"]:
            agent["sip_ha1"] = ha1(agent["code"], "vcc", PHONE_PASSWORD)
    return await Cluster.start(write_province(raw, tmp / "province.yaml"), tmp / "run")


def _sip(cluster: Cluster, site_id: str) -> str:
    sip = cluster.config.site(site_id).sip
    assert sip is not None
    return sip.listen


def _engine(cluster: Cluster, site_id: str) -> tuple[int, str]:
    return site_engine(cluster.logs_dir / f"site-{site_id}.log")


async def crash(cluster: Cluster, site_id: str) -> None:
    """SIGKILL to the site node and at once to its rtpengine: both gone, no goodbye."""
    engine_pid, _ = _engine(cluster, site_id)
    site = cluster.sites[site_id]
    os.kill(site.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):  # PR_SET_PDEATHSIG may have been quicker
        os.kill(engine_pid, signal.SIGKILL)
    assert await site.wait_exit(10)


async def ready(cluster: Cluster, site_id: str, n: int = 1) -> bool:
    summary = await site_summary(cluster, site_id)
    return sum(g.agents_ready for g in summary.skill_groups if g.skill_group == "general") == n


async def ended_record(cluster: Cluster, call_id: str, timeout_s: float = 40) -> central_pb2.CallRecord:
    async def found() -> central_pb2.CallRecord:
        mine = [r for r in await central_records(cluster) if r.call_id == call_id]
        assert len(mine) <= 1, f"{len(mine)} records of call {call_id}"
        assert mine and mine[0].state == common_pb2.CALL_STATE_ENDED, "not ended yet"
        return mine[0]

    return await eventually(found, timeout_s=timeout_s, interval_s=0.3, what=f"the ended record of {call_id}")


def kinds(record: central_pb2.CallRecord) -> list[str]:
    return [common_pb2.CallEventKind.Name(e.kind).removeprefix("CALL_EVENT_KIND_") for e in record.events]


def the_call(result: SippResult) -> str:
    [call_id] = result.vcc_call_ids
    return call_id


class _SzPhone:
    """sz's robot agent answering on its baresip phone, run in the background."""

    def __init__(self, cluster: Cluster, work: Path) -> None:
        self.stop = asyncio.Event()
        self.work = work
        self.task: asyncio.Task[RobotStats] = asyncio.create_task(
            run_sip_robots(cluster.config.site("sz"), agents(cluster, "sz"), TALK, self.stop,
                           work=work, phone_password=PHONE_PASSWORD)
        )  # fmt: skip

    @property
    def log(self) -> str:
        path = self.work / "phones" / "baresip.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def heard(self) -> bool:
        """The phone has dumped at least a second of what it hears (it answered, audio flows)."""
        return any(p.stat().st_size > 16_000 for p in (self.work / "phones").glob("dump-*-dec.wav"))

    async def close(self) -> RobotStats | None:
        self.stop.set()
        with contextlib.suppress(Exception):  # a robot of a killed site may end in error
            return await asyncio.wait_for(self.task, 30)
        return None


async def talking_over_the_tie(
    cluster: Cluster, phone: _SzPhone, tmp_path: Path, *, hold_ms: int, timeout_s: float
) -> asyncio.Task[SippResult]:
    """SIPp dials gz (digit 1, a tone all call long); the caller is served at sz on a tie channel,
    and sz's phone hears it. The caller's task."""
    await eventually(lambda: ready(cluster, "sz"), timeout_s=30, what="sz's agent ready on its phone")
    tone = await asyncio.to_thread(caller_tone, tmp_path / "caller.al")
    caller = asyncio.create_task(
        run_sipp(call_scenario("1", stream=tone), _sip(cluster, "gz"), tmp_path / "sipp", hold_ms=hold_ms,
                 timeout_s=timeout_s)
    )  # fmt: skip

    async def served_at_sz() -> bool:
        summary = await site_summary(cluster, "gz")
        ties = [r.busy for r in summary.resources if r.id == "tie:sz"]
        return summary.calls_served_elsewhere == 1 and ties == [1]

    await eventually(served_at_sz, timeout_s=30, what="gz's caller served at sz over the tie")

    async def heard() -> bool:
        return phone.heard()

    await eventually(heard, timeout_s=30, interval_s=0.2, what="sz's agent's phone hears the caller")
    return caller


async def test_the_target_city_killed_mid_call_the_caller_is_queued_again_at_home_and_answered_there(
    cluster: Cluster, tmp_path: Path
) -> None:
    phone = _SzPhone(cluster, tmp_path / "sz")
    home_stop = asyncio.Event()
    home: asyncio.Task[RobotStats] | None = None
    try:
        # The caller hangs up itself after 30 s.
        caller = await talking_over_the_tie(cluster, phone, tmp_path, hold_ms=30_000, timeout_s=90)
        await crash(cluster, "sz")
        await phone.close()  # its robot would only try to reach the dead sz

        async def taken_back() -> bool:
            summary = await site_summary(cluster, "gz")
            ties = [r.busy for r in summary.resources if r.id == "tie:sz"]
            trunk = sum(r.busy for r in summary.resources if r.kind == "trunk")
            # The caller kept its trunk channel at home and waits in gz's queue.
            return summary.calls_served_elsewhere == 0 and ties == [0] and trunk == 1

        await eventually(taken_back, timeout_s=20, what="gz takes its caller back from the dead sz")
        assert not caller.done(), "the caller's dialog must not end when the target dies"
        # gz's own agent logs in now: the re-queued caller is answered at home.
        home = asyncio.create_task(run_robots(cluster.config.site("gz").listen, agents(cluster, "gz"), TALK,
                                              home_stop))  # fmt: skip

        async def answered_home() -> bool:
            summary = await site_summary(cluster, "gz")
            return summary.agents_by_state.get("TALKING", 0) == 1

        await eventually(answered_home, timeout_s=30, what="gz's agent answers the caller")
        result = await caller  # the caller hangs up itself, at the end of its 30 s
        assert result.ok, result.stdout + result.errors
        call_id = the_call(result)
        rec = await ended_record(cluster, call_id)
    finally:
        home_stop.set()
        if home is not None:
            await home
        await phone.close()
    assert rec.outcome == common_pb2.CALL_OUTCOME_ANSWERED and rec.entry_site_id == "gz"
    seen = kinds(rec)
    assert seen.count("ANSWERED") == 2 and "RETURNED" in seen and seen[-1] == "ENDED", seen
    assert "CALLER_HUNG_UP" in seen, seen
    # Answered at sz, taken back, answered at gz: one after the other, never both at once (sz's
    # answer has no end of its own in the record: sz died before journaling it; gz's RETURNED is
    # that end, and it comes before gz's answer).
    answers = [(e.site_id, e.agent_code, rpc.unix_s(e.at)) for e in rec.events
               if e.kind == common_pb2.CALL_EVENT_KIND_ANSWERED]  # fmt: skip
    [returned] = [rpc.unix_s(e.at) for e in rec.events if e.kind == common_pb2.CALL_EVENT_KIND_RETURNED]
    assert [a[:2] for a in answers] == [
        ("sz", agents(cluster, "sz")[0][0]),
        ("gz", agents(cluster, "gz")[0][0]),
    ]
    assert answers[0][2] <= returned <= answers[1][2], (answers, returned)
    # sz comes back; its journal of the guest leg ships: still one record, never served twice.
    await cluster.restart_site("sz")
    await eventually(lambda: ready(cluster, "gz", 0), what="gz's robot logged out")
    records = await central_records(cluster)
    invariants = check([], records)
    assert invariants["calls_served_twice_at_once"] == 0 and invariants["calls_with_two_final_records"] == 0
    assert [r.call_id for r in records].count(call_id) == 1


async def test_the_origin_city_killed_mid_call_ends_the_far_agents_call_and_frees_the_agent(
    cluster: Cluster, tmp_path: Path
) -> None:
    before = {r.call_id for r in await central_records(cluster)}
    phone = _SzPhone(cluster, tmp_path / "sz")
    stats: RobotStats | None = None
    try:
        # The caller would talk for a minute; its city dies under it (SIPp is stopped then).
        caller = await talking_over_the_tie(cluster, phone, tmp_path, hold_ms=60_000, timeout_s=60)
        _, sz_ng = _engine(cluster, "sz")
        assert len(await engine_calls(sz_ng)) == 1, "sz's engine holds the tie leg"
        closed_before = phone.log.count("session closed")
        await crash(cluster, "gz")

        async def phone_hung_up() -> bool:
            return phone.log.count("session closed") > closed_before

        await eventually(phone_hung_up, timeout_s=20, what="sz's agent's phone receives a BYE")
        # The agent is free again (the robot ends its wrap-up at once; the site's timer otherwise).
        await eventually(lambda: ready(cluster, "sz"), timeout_s=20, what="sz's agent ready again")

        async def tie_leg_dropped() -> bool:
            return await engine_calls(sz_ng) == []

        await eventually(tie_leg_dropped, timeout_s=20, what="sz's engine drops the tie leg")
        summary = await site_summary(cluster, "sz")
        assert summary.agents_by_state.get("TALKING", 0) == 0, dict(summary.agents_by_state)
        caller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await caller
    finally:
        stats = await phone.close()
    assert stats is not None and stats.answered == 1, stats
    # The origin comes back: what its journal held ships, and central ends the call.
    await cluster.restart_site("gz")
    new = [r for r in await central_records(cluster) if r.call_id not in before]
    assert len(new) == 1, [(r.call_id, r.state) for r in new]
    rec = await ended_record(cluster, new[0].call_id)
    # Ended by gz's restart (its caller's dialog died with it): answered, as sz's agent had.
    assert rec.entry_site_id == "gz" and rec.outcome == common_pb2.CALL_OUTCOME_ANSWERED, rec
    [end] = [e for e in rec.events if e.kind == common_pb2.CALL_EVENT_KIND_ENDED]
    assert end.site_id == "gz" and end.data["reason"] == "site-restarted", end
    intervals, unclosed = answered_intervals(rec)
    assert [(site, agent) for site, agent, _, _ in intervals] == [("sz", agents(cluster, "sz")[0][0])]
    assert unclosed == 0
    invariants = check([], await central_records(cluster))
    assert invariants["calls_served_twice_at_once"] == 0 and invariants["calls_with_two_final_records"] == 0
    with contextlib.suppress(MediaError):
        _, gz_ng = _engine(cluster, "gz")
        assert await engine_calls(gz_ng) == [], "the restarted gz's engine holds no old call"
