"""A call's journal entry in protobuf: every kind, its time to the nanosecond, its data, none of
the fields left behind (the outbox and central read exactly this)."""

from __future__ import annotations

import pytest
from google.protobuf import timestamp_pb2

from site_node.callcontrol.domain import Outcome, RecordedEvent
from site_node.grpc_api.convert import event_to_proto
from vcc.call_events import EventKind
from vcc.v1 import common_pb2


@pytest.mark.parametrize("kind", list(EventKind))
def test_every_kind_of_entry_keeps_every_field(kind: EventKind) -> None:
    e = RecordedEvent(
        "c-1",
        "gz",
        7,
        kind,
        1764638000.123456789,
        agent_code="0101",
        skill_group="general",
        ani="13800001234",
        dnis="10000",
        outcome=Outcome.ANSWERED if kind == EventKind.ENDED else None,
        data=(("stage", "menu"), ("to_site", "sz")),
    )
    msg = event_to_proto(e)
    ended = common_pb2.CALL_OUTCOME_ANSWERED
    at = timestamp_pb2.Timestamp()
    at.FromNanoseconds(round(e.at * 1e9))
    assert msg == common_pb2.CallEvent(
        call_id="c-1",
        site_id="gz",
        seq=7,
        kind=common_pb2.CallEventKind.Value(f"CALL_EVENT_KIND_{kind.value}"),
        at=at,
        agent_code="0101",
        skill_group="general",
        ani="13800001234",
        dnis="10000",
        outcome=ended if kind == EventKind.ENDED else common_pb2.CALL_OUTCOME_UNSPECIFIED,
        data={"stage": "menu", "to_site": "sz"},
    )


def test_an_entry_without_data_has_none() -> None:
    msg = event_to_proto(RecordedEvent("c-2", "gz", 1, EventKind.ARRIVED, 100.5))
    assert not msg.data and msg.at.seconds == 100 and msg.at.nanos == 500_000_000
