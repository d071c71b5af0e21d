"""A site node's SIP trunk with a real rtpengine, against SIPp and a bare UDP peer: the call
enters the IVR through the call control, its digit chooses the queue, the trunk's channels bound
the calls, SIP's own rules hold (404, 481, 487, re-sent INVITEs), and a dead media engine has
its defined outcome (docs/RELIABILITY.md)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from site_node.app import SiteNode
from tests.helpers import eventually
from tests.sip.conftest import sip_config
from tests.sip.raw import RawPeer, header, in_dialog, invite, to_tag
from tools.province.etcd_server import EtcdServer
from tools.province.sipp import call_scenario, flood_scenario, refused_scenario, run_sipp
from vcc.v1 import common_pb2

K = common_pb2.CallEventKind


def target(node: SiteNode) -> str:
    assert node.sip is not None
    return node.sip.address


async def events(node: SiteNode, call_id: str) -> list[common_pb2.CallEvent]:
    return [e for _, e in await node.outbox.pending(100_000) if e.call_id == call_id]


async def kinds(node: SiteNode, call_id: str) -> list[str]:
    return [K.Name(e.kind).removeprefix("CALL_EVENT_KIND_") for e in await events(node, call_id)]


async def ended(node: SiteNode, call_id: str) -> common_pb2.CallEvent:
    async def check() -> common_pb2.CallEvent | None:
        found = [e for e in await events(node, call_id) if e.kind == K.CALL_EVENT_KIND_ENDED]
        return found[0] if found else None

    return await eventually(check, what=f"call {call_id} ended")


@pytest.fixture
async def peer() -> object:
    p = await RawPeer.open()
    yield p
    p.close()


async def test_a_call_enters_the_ivr_hears_the_menu_and_its_digit_chooses_the_queue(
    sip_node: SiteNode, tmp_path: Path
) -> None:
    sb = sip_node.switchboard
    assert sip_node.sip is not None
    result = await run_sipp(call_scenario("2"), target(sip_node), tmp_path / "sipp", hold_ms=1500)
    assert result.ok, result.stdout + result.errors
    [call_id] = result.vcc_call_ids
    end = await ended(sip_node, call_id)
    # Nobody is logged in: the caller waited in the billing queue (digit 2) and hung up.
    assert await kinds(sip_node, call_id) == [
        "ARRIVED",
        "IVR_STARTED",
        "DIGITS",
        "QUEUED",
        "ABANDONED",
        "ENDED",
    ]
    digits, queued = (
        e
        for e in await events(sip_node, call_id)
        if e.kind in (K.CALL_EVENT_KIND_DIGITS, K.CALL_EVENT_KIND_QUEUED)
    )
    assert digits.data["digits"] == "2" and queued.skill_group == "billing"
    assert end.outcome == common_pb2.CALL_OUTCOME_ABANDONED
    assert sb.counters.offered == 1 and sb.counters.abandoned == 1
    assert sip_node.sip.hear.plays == {"menu": 1, "queue": 1}
    trunk = sip_node.sip

    async def released() -> bool:
        return trunk.live_calls == 0 and not sb.calls

    await eventually(released, what="the SIP call is released")


async def test_an_unknown_number_is_404_and_changes_nothing(sip_node: SiteNode, tmp_path: Path) -> None:
    result = await run_sipp(refused_scenario(404), target(sip_node), tmp_path / "sipp", service="99999")
    assert result.ok, result.stdout + result.errors
    assert sip_node.switchboard.counters.offered == 0
    assert not await sip_node.outbox.pending(10)


@pytest.mark.parametrize("busy_status", [503, 486])
async def test_a_full_trunk_answers_busy_and_counts_the_call_blocked(
    tmp_path: Path, etcd_server: EtcdServer, prompts_dir: Path, busy_status: int
) -> None:
    node = SiteNode(sip_config(tmp_path, prompts_dir, etcd_server, channels=1, busy_status=busy_status), "gz")
    await node.start()
    try:
        first = asyncio.create_task(
            run_sipp(call_scenario(), target(node), tmp_path / "first", hold_ms=6000, name="first")
        )

        async def one_call() -> bool:
            return len(node.switchboard.calls) == 1

        await eventually(one_call, what="first call holds the only channel")
        second = await run_sipp(
            refused_scenario(busy_status), target(node), tmp_path / "second", name="second"
        )
        assert second.ok, second.stdout + second.errors
        [blocked_id] = second.vcc_call_ids
        assert (await ended(node, blocked_id)).outcome == common_pb2.CALL_OUTCOME_BLOCKED
        assert node.switchboard.counters.blocked == 1
        assert (await first).ok
        assert node.switchboard.counters.offered == 2
    finally:
        await node.stop()


async def test_bye_for_an_unknown_dialog_is_481(sip_node: SiteNode, peer: RawPeer) -> None:
    _, ids = invite(peer, target(sip_node))
    peer.send(in_dialog("BYE", peer, target(sip_node), ids, to_tag="nosuchtag"), target(sip_node))
    status, _ = await peer.status()
    assert status == 481
    assert sip_node.switchboard.counters.offered == 0


async def test_a_resent_invite_is_absorbed_and_the_call_ends_on_bye(
    sip_node: SiteNode, peer: RawPeer
) -> None:
    sb = sip_node.switchboard
    data, ids = invite(peer, target(sip_node))
    peer.send(data, target(sip_node))
    status, ok = await peer.status()
    assert status == 200
    call_id = header(ok, "X-VCC-Call-ID")
    # The same INVITE again (same Call-ID and branch): the same answer, no second call.
    peer.send(data, target(sip_node))
    again_status, again = await peer.status()
    assert again_status == 200 and header(again, "X-VCC-Call-ID") == call_id
    assert sb.counters.offered == 1
    tag = to_tag(ok)
    peer.send(in_dialog("ACK", peer, target(sip_node), ids, to_tag=tag, cseq=1), target(sip_node))
    peer.send(in_dialog("BYE", peer, target(sip_node), ids, to_tag=tag), target(sip_node))
    assert (await peer.status())[0] == 200
    assert (await ended(sip_node, call_id)).outcome == common_pb2.CALL_OUTCOME_ABANDONED
    # A re-sent BYE gets the same 200, nothing else happens.
    peer.send(in_dialog("BYE", peer, target(sip_node), ids, to_tag=tag), target(sip_node))
    assert (await peer.status())[0] in (200, 481)
    assert sb.counters.abandoned == 1


async def test_cancel_before_the_answer_is_487_and_an_abandoned_call(
    sip_node: SiteNode, peer: RawPeer
) -> None:
    data, ids = invite(peer, target(sip_node))
    # The CANCEL follows at once: it is read while rtpengine is still answering the offer.
    peer.send(data, target(sip_node))
    peer.send(
        in_dialog("CANCEL", peer, target(sip_node), ids, to_tag="", branch=_branch(data)), target(sip_node)
    )
    got = sorted([(await peer.status())[0], (await peer.status())[0]])
    assert got == [200, 487]
    assert sip_node.switchboard.counters.abandoned == 1


async def test_a_dead_media_engine_ends_live_calls_as_failed_and_new_calls_get_503_until_it_is_back(
    sip_node: SiteNode, peer: RawPeer
) -> None:
    assert sip_node.media is not None and sip_node.media.pid is not None
    data, ids = invite(peer, target(sip_node))
    peer.send(data, target(sip_node))
    status, ok = await peer.status()
    assert status == 200
    call_id = header(ok, "X-VCC-Call-ID")
    peer.send(in_dialog("ACK", peer, target(sip_node), ids, to_tag=to_tag(ok), cseq=1), target(sip_node))
    os.kill(sip_node.media.pid, signal.SIGKILL)
    # The caller is told: a BYE from the site, and the call's record says failed.
    bye = await peer.receive()
    assert bye.startswith(b"BYE ") and header(bye, "X-VCC-Call-ID") == call_id
    end = await ended(sip_node, call_id)
    assert end.outcome == common_pb2.CALL_OUTCOME_ANSWERED or end.data["reason"] == "media-engine-lost"
    assert end.data["reason"] == "media-engine-lost"
    # The engine comes back (bounded restarts): new calls are answered again.
    media = sip_node.media

    async def back() -> bool:
        return media.up

    await eventually(back, what="rtpengine restarted")
    fresh, _ = invite(peer, target(sip_node))
    peer.send(fresh, target(sip_node))
    assert (await peer.status())[0] == 200


async def test_a_media_engine_past_its_restart_bound_leaves_new_calls_503(
    tmp_path: Path, etcd_server: EtcdServer, prompts_dir: Path, peer: RawPeer
) -> None:
    config = sip_config(tmp_path, prompts_dir, etcd_server)
    site = config.sites[0]
    assert site.sip is not None
    no_restart = site.sip.media.model_copy(update={"max_restarts": 0})
    sip = site.sip.model_copy(update={"media": no_restart})
    config = config.model_copy(update={"sites": [site.model_copy(update={"sip": sip})]})
    node = SiteNode(config, "gz")
    await node.start()
    try:
        assert node.media is not None and node.media.pid is not None
        media = node.media
        os.kill(media.pid, signal.SIGKILL)

        async def gave_up() -> bool:
            return media.gave_up

        await eventually(gave_up, what="restart bound reached")
        data, _ = invite(peer, target(node))
        peer.send(data, target(node))
        status, answer = await peer.status()
        assert status == 503 and b"Media engine" in answer
        assert node.switchboard.counters.offered == 0
    finally:
        await node.stop()


def _branch(data: bytes) -> str:
    return header(data, "Via").split("branch=")[1].split(";")[0]


async def test_an_invite_flood_beyond_the_trunk_is_refused_and_counted_blocked(
    tmp_path: Path, etcd_server: EtcdServer, prompts_dir: Path
) -> None:
    node = SiteNode(sip_config(tmp_path, prompts_dir, etcd_server, channels=3), "gz")
    await node.start()
    try:
        # 30 callers in about a second for 3 channels, each answered one staying 4 s.
        result = await run_sipp(
            flood_scenario(), target(node), tmp_path / "sipp", calls=30, rate=30, hold_ms=4000
        )
        assert result.ok, result.stdout + result.errors
        answered = result.log.count("flood answered")
        refused = result.log.count("flood refused")
        assert answered + refused == 30 and answered >= 3
        sb = node.switchboard
        assert sb.counters.offered == 30 and sb.counters.blocked == refused
        # Nobody is logged in: every answered caller hung up in the queue.

        async def released() -> bool:
            return sb.counters.abandoned == answered and not sb.calls

        await eventually(released, what="the answered callers' calls end")
    finally:
        await node.stop()


@pytest.fixture
async def timer_node(tmp_path: Path, etcd_server: EtcdServer, prompts_dir: Path) -> object:
    # A Min-SE of 2 s (the RFC's 90 in the network) so that a session can be seen to expire.
    node = SiteNode(sip_config(tmp_path, prompts_dir, etcd_server, session_min_se_s=2), "gz")
    await node.start()
    yield node
    await node.stop()


async def test_a_session_interval_below_min_se_is_422(timer_node: SiteNode, peer: RawPeer) -> None:
    data, _ = invite(peer, target(timer_node), extra="Session-Expires: 1\r\nSupported: timer\r\n")
    peer.send(data, target(timer_node))
    status, answer = await peer.status()
    assert status == 422 and header(answer, "Min-SE") == "2"
    assert timer_node.switchboard.counters.offered == 0


async def test_a_session_the_caller_lets_lapse_is_hung_up(timer_node: SiteNode, peer: RawPeer) -> None:
    data, ids = invite(peer, target(timer_node), extra="Session-Expires: 3\r\nSupported: timer\r\n")
    peer.send(data, target(timer_node))
    status, ok = await peer.status()
    assert status == 200 and header(ok, "Session-Expires") == "3;refresher=uac"
    assert header(ok, "Require") == "timer"
    call_id = header(ok, "X-VCC-Call-ID")
    peer.send(in_dialog("ACK", peer, target(timer_node), ids, to_tag=to_tag(ok), cseq=1), target(timer_node))
    # No refresh: the site ends the call before the interval is over, as a hang-up.
    bye = await peer.receive(timeout_s=10)
    assert bye.startswith(b"BYE ") and b"session-expired" in bye
    end = await ended(timer_node, call_id)
    assert end.data["reason"] == "session-expired"


async def test_updates_refresh_the_session_and_keep_the_call(timer_node: SiteNode, peer: RawPeer) -> None:
    data, ids = invite(peer, target(timer_node), extra="Session-Expires: 3\r\n")
    peer.send(data, target(timer_node))
    status, ok = await peer.status()
    assert status == 200
    tag = to_tag(ok)
    peer.send(in_dialog("ACK", peer, target(timer_node), ids, to_tag=tag, cseq=1), target(timer_node))
    for cseq in range(2, 6):
        # Refreshed every second: no BYE comes, though 4 s is past the 3 s interval.
        update = in_dialog("UPDATE", peer, target(timer_node), ids, to_tag=tag, cseq=cseq)
        peer.send(
            update.replace(b"Content-Length: 0", b"Session-Expires: 3\r\nContent-Length: 0"),
            target(timer_node),
        )
        status, refreshed = await peer.status()
        assert status == 200 and header(refreshed, "Session-Expires") == "3;refresher=uac"
        assert await peer.silent(1.0)
    assert len(timer_node.switchboard.calls) == 1
    peer.send(in_dialog("BYE", peer, target(timer_node), ids, to_tag=tag, cseq=9), target(timer_node))
    assert (await peer.status())[0] == 200
    assert (await ended(timer_node, header(ok, "X-VCC-Call-ID"))).data["reason"] == "caller-hung-up"
