"""A silent cut on real processes: a city served across the cut, and nothing ever reset.

gz's caller overflows to sz's agent and is talking there when sz's links go silent (the fault
proxy stops forwarding without closing anything: a pulled cable). Nothing tells either end but its
own keepalive pings: gz, the origin, must take the caller back and serve it at home; sz, which
only serves the leg (SitePeerService.ServeCall), must end its agent's call by itself; and at no
moment may the call be answered on both sides. The time each side took to notice is printed (and
recorded in docs/RELIABILITY.md), never asserted: it is this machine's figure, not a guarantee.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import eventually
from tests.integration.support import Caller, Desktop, drained, password_hash
from tests.integration.test_virtual_center import write_province
from tools.province.generate import SiteSpec, generate_province
from tools.province.netutil import free_port
from tools.province.proxied import start_with_fault_proxies
from tools.simulation import invariants
from tools.simulation.traffic import CallerView
from vcc import rpc
from vcc.tls import DESKTOP, TRUNK
from vcc.v1 import central_pb2, central_pb2_grpc, common_pb2, cti_pb2

pytestmark = pytest.mark.cluster

ORIGIN, TARGET = "gz", "sz"
# Generous: the bound of a wait on a busy machine, not an expectation of the time to notice.
NOTICE_TIMEOUT_S = 60.0


async def _directory(central: str, site_id: str) -> dict[str, str]:
    async with rpc.channel(central) as ch:
        reply = await central_pb2_grpc.CentralServiceStub(ch).ListAgents(
            central_pb2.ListAgentsRequest(site_id=site_id), timeout=5
        )
    return {a.agent_code: a.state for a in reply.agents}


async def _site_up(central: str, site_id: str) -> bool:
    async with rpc.channel(central) as ch:
        status = await central_pb2_grpc.CentralServiceStub(ch).GetProvinceStatus(
            central_pb2.GetProvinceStatusRequest(), timeout=5
        )
    return next(s for s in status.sites if s.site_id == site_id).up


async def _next_event(desk: Desktop, kind: str) -> tuple[cti_pb2.StreamEventsResponse, float]:
    """The desk's next event of `kind`, and when it arrived (unix time)."""

    async def wait() -> cti_pb2.StreamEventsResponse:
        while True:
            event = await desk.events.get()
            if event.WhichOneof("event") == kind:
                return event

    event = await asyncio.wait_for(wait(), NOTICE_TIMEOUT_S)
    return event, time.time()


def _view(caller: Caller, call_id: str, offered_at: float) -> CallerView:
    """What the caller saw, as tools/simulation/invariants.py reads it (outcome from the caller's side)."""
    kinds = [m.WhichOneof("progress") or "" for m in caller.seen]
    ended = [m.ended for m in caller.seen if m.WhichOneof("progress") == "ended"]
    last_connected = [m.connected for m in caller.seen if m.WhichOneof("progress") == "connected"][-1]
    return CallerView(
        key=call_id,
        entry_site_id=ORIGIN,
        call_id=call_id,
        offered_at=offered_at,
        progress=[(k, offered_at, {}) for k in kinds],
        outcome="answered" if ended and "connected" in kinds else "lost",
        queued_at=offered_at,
        answered_at=offered_at,
        ended_at=time.time(),
        agent_code=last_connected.agent_code,
        served_site_id=last_connected.site_id,
        skill_group="general",
        home_site_id=ORIGIN,
    )


def _events(record: central_pb2.CallRecord, site_id: str, kind: int) -> list[common_pb2.CallEvent]:
    return [e for e in record.events if e.site_id == site_id and e.kind == kind]


async def test_a_silent_cut_returns_a_call_served_across_it(tmp_path: Path) -> None:
    config: dict[str, Any] = generate_province(
        [
            SiteSpec(ORIGIN, "广州 Guangzhou", trunk_channels=4, agents={"general": 1}),
            SiteSpec(TARGET, "深圳 Shenzhen", trunk_channels=4, agents={"general": 1}),
        ],
        etcd_endpoint="127.0.0.1:2379",
        central_listen=f"127.0.0.1:{free_port()}",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        password_hash=password_hash(),
        ring_timeout_s=30.0,  # the hand-driven desks answer when the test says so
        outbox_dir=tmp_path / "outbox",
        lease_ttl_s=2,
        routing={"mode": "overflow", "overflow_after_s": 0.3},
    )
    path = await asyncio.to_thread(write_province, config, tmp_path)
    run_dir = tmp_path / "run"
    cluster, proxies = await start_with_fault_proxies(path, run_dir, partitionable=[TARGET], fresh_ports=True)
    central = cluster.config.central.listen
    # Each client speaks with its own certificate: desktops as desktops, the caller as a trunk.
    origin_ch = rpc.channel(cluster.config.site(ORIGIN).listen, persona=DESKTOP)
    target_ch = rpc.channel(cluster.config.site(TARGET).listen, persona=DESKTOP)
    trunk_ch = rpc.channel(cluster.config.site(ORIGIN).listen, persona=TRUNK)
    try:
        home = Desktop(origin_ch, cluster.config.site(ORIGIN).agents[0].code)
        far = Desktop(target_ch, cluster.config.site(TARGET).agents[0].code)
        await home.login()  # logged in, not ready: gz has nobody for the caller, so it overflows
        await far.login()
        await far.ready()

        async def far_ready_at_central() -> bool:
            return set((await _directory(central, TARGET)).values()) == {"READY"}

        await eventually(far_ready_at_central, timeout_s=30, what="central sees sz's agent ready")

        # The call: entered at gz, rung and answered at sz, the voice on gz's trunk.
        offered_at = time.time()
        caller = Caller(trunk_ch)
        ringing = (await caller.until("ringing")).ringing
        assert ringing.site_id == TARGET, ringing
        offered = await far.answer_next()
        connected = (await caller.until("connected")).connected
        assert (connected.site_id, connected.agent_code) == (TARGET, far.code)
        call_id = offered.call_id
        # gz's agent is free now: when the caller comes back, it is served at home.
        await home.ready()
        # The call is talked a while, its stream idle as a real call's is (no data: only the
        # keepalive pings cross), so the cut meets no ping or message in flight by chance.
        await asyncio.sleep(2 * rpc.KEEPALIVE_TIME_MS / 1000)

        cut_at = time.time()
        await proxies.cut(TARGET, silent=True)

        # Both sides find out by themselves, each from its own end of the ServeCall stream.
        (far_ended, far_noticed), (home_offer, home_noticed) = await asyncio.gather(
            _next_event(far, "call_ended"), _next_event(home, "call_offered")
        )
        assert far_ended.call_ended.call_id == call_id
        assert home_offer.call_offered.call_id == call_id
        await home.stub.Answer(
            cti_pb2.AnswerRequest(
                idempotency_key=uuid.uuid4().hex, session_token=home.token, call_id=call_id
            ),
            timeout=5,
        )
        again = (await caller.until("connected")).connected
        assert (again.site_id, again.agent_code) == (ORIGIN, home.code)
        await home.hang_up(call_id)
        await caller.until("ended")

        await proxies.heal(TARGET)
        await eventually(lambda: _site_up(central, TARGET), timeout_s=30, what="sz back at central")
        view = _view(caller, call_id, offered_at)
        records = await drained(cluster, [view])
    finally:
        await origin_ch.close()
        await target_ch.close()
        await trunk_ch.close()
        await proxies.stop()
        await cluster.stop()

    (record,) = [r for r in records if r.call_id == call_id]
    # The caller was never dropped: answered twice (sz, then gz), one end.
    assert view.outcome == "answered"
    assert [k for k, _, _ in view.progress].count("connected") == 2
    assert [k for k, _, _ in view.progress].count("ended") == 1
    # gz took the call back (RETURNED) and served it; sz ended its agent's leg ("origin-lost").
    (returned,) = _events(record, ORIGIN, common_pb2.CALL_EVENT_KIND_RETURNED)
    (far_answer,) = _events(record, TARGET, common_pb2.CALL_EVENT_KIND_ANSWERED)
    (far_end,) = _events(record, TARGET, common_pb2.CALL_EVENT_KIND_CALLER_HUNG_UP)
    (home_answer,) = _events(record, ORIGIN, common_pb2.CALL_EVENT_KIND_ANSWERED)
    # (central's record names the first answer as the one that served the call: sz's.)
    assert record.state == common_pb2.CALL_STATE_ENDED and record.outcome == common_pb2.CALL_OUTCOME_ANSWERED
    # Never served on both sides at once: sz's leg ended before gz answered again.
    assert rpc.unix_s(far_answer.at) < rpc.unix_s(far_end.at) <= rpc.unix_s(home_answer.at)
    assert rpc.unix_s(returned.at) <= rpc.unix_s(home_answer.at)
    kept = invariants.check([view], records)
    assert invariants.broken(kept) == [], kept
    assert kept["calls_served_twice_at_once"] == 0 and kept["agents_with_two_calls"] == 0

    # The time to notice, from the sites' own records (same machine, same clock) and the desks.
    origin_s = rpc.unix_s(returned.at) - cut_at
    target_s = rpc.unix_s(far_end.at) - cut_at
    print(
        f"\nsilent cut of {TARGET}: origin {ORIGIN} took the caller back after {origin_s:.2f} s "
        f"(its agent rang at +{home_noticed - cut_at:.2f} s); {TARGET} ended its agent's call after "
        f"{target_s:.2f} s (desk told at +{far_noticed - cut_at:.2f} s)"
    )
    assert origin_s > 0 and target_s > 0  # measured after the cut, whatever the figure
