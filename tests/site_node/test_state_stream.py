"""The site's change-driven state stream (site_node/links/central_link.py): whole figures, the
presence whole first and then as changes, whole again when central asks; its measured size."""

from __future__ import annotations

from typing import Any

from site_node.links.central_link import DELTA, FULL, CentralLink, presence_bytes
from vcc.v1 import central_pb2, site_admin_pb2


def test_presence_goes_whole_then_as_changes_and_whole_again_on_resync() -> None:
    agents = {f"{n:04d}": "NOT_READY" for n in range(200)}
    link = CentralLink(
        Any,  # type: ignore[arg-type]  # the runtime is only needed for central's commands
        lambda: None,
        lambda: site_admin_pb2.SiteSummary(site_id="gz", calls_waiting=3),
        presence=lambda: agents,
    )
    first = link.next_message(0.0)
    assert (first.seq, first.presence, len(first.state.agent_states)) == (1, FULL, 200)
    quiet = link.next_message(0.1)
    assert (quiet.seq, quiet.presence, dict(quiet.state.agent_states)) == (2, DELTA, {})
    assert quiet.state.calls_waiting == 3, "the figures are whole in every message"
    agents["0007"] = "READY"
    change = link.next_message(0.2)
    assert dict(change.state.agent_states) == {"0007": "READY"}
    link._command(
        central_pb2.StreamSiteStateResponse(resync_presence=central_pb2.ResyncPresence(applied_seq=3))
    )
    again = link.next_message(0.3)
    assert (again.presence, len(again.state.agent_states)) == (FULL, 200)
    assert link.next_message(60.4).presence == FULL, "and every FULL_EVERY_S anyway"
    # What it cost against a whole presence in every message.
    assert link.sent_messages == 5
    whole = site_admin_pb2.SiteSummary(site_id="gz", calls_waiting=3, agent_states=agents).ByteSize()
    assert 5 * whole < link.full_equivalent_bytes < 5 * (whole + 20)
    assert quiet.ByteSize() + change.ByteSize() < 100
    assert link.sent_bytes < link.full_equivalent_bytes


def test_presence_bytes_is_the_encoded_size_of_the_map() -> None:
    for states in ({}, {"0101": "READY"}, {f"agent-{n}": "WRAP_UP" * (n % 30) for n in range(300)}):
        empty = site_admin_pb2.SiteSummary(site_id="gz")
        with_map = site_admin_pb2.SiteSummary(site_id="gz", agent_states=states)
        assert presence_bytes(states) == with_map.ByteSize() - empty.ByteSize()
