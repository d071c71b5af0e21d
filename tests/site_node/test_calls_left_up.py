"""A site killed mid-call ends, when it starts again, the calls its last run left up: the outbox
follows which calls arrived and have not ended (in the same transaction as their events), and
`end_calls_left_up` journals each one's ENDED with the next journal number (real SQLite)."""

from __future__ import annotations

from pathlib import Path

from site_node.records.open_items import end_calls_left_up
from site_node.records.outbox import KeptItem, Outbox
from vcc.v1 import common_pb2

K = common_pb2.CallEventKind


def ev(call: str, seq: int, kind: K.ValueType, site: str = "gz") -> common_pb2.CallEvent:
    return common_pb2.CallEvent(call_id=call, site_id=site, seq=seq, kind=kind)


async def journal(path: Path, events: list[common_pb2.CallEvent], kept: list[KeptItem] = []) -> None:  # noqa: B006
    outbox = await Outbox.open(path)
    try:
        await outbox.append(events, kept)
    finally:
        await outbox.close()


async def test_calls_left_up_are_ended_once_with_the_next_number_and_how_far_they_got(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    await journal(path, [
        ev("ended", 1, K.CALL_EVENT_KIND_ARRIVED), ev("ended", 2, K.CALL_EVENT_KIND_ENDED),
        ev("queued", 1, K.CALL_EVENT_KIND_ARRIVED), ev("queued", 2, K.CALL_EVENT_KIND_QUEUED),
        ev("talking", 1, K.CALL_EVENT_KIND_ARRIVED), ev("talking", 2, K.CALL_EVENT_KIND_ROUTED),
        ev("talking", 3, K.CALL_EVENT_KIND_RETURNED), ev("talking", 4, K.CALL_EVENT_KIND_ANSWERED),
        ev("talking", 5, K.CALL_EVENT_KIND_HELD),
        ev("elsewhere", 1, K.CALL_EVENT_KIND_ARRIVED), ev("elsewhere", 2, K.CALL_EVENT_KIND_ROUTED),
        # A guest leg (another city's call served here): not ours to end.
        ev("guest", 1, K.CALL_EVENT_KIND_RINGING, site="gz"), ev("guest", 2, K.CALL_EVENT_KIND_ANSWERED),
    ])  # fmt: skip
    outbox = await Outbox.open(path)
    try:
        assert outbox.left_open.live_calls == {
            "queued": (2, "home"),
            "talking": (5, "answered"),
            "elsewhere": (2, "routed"),
        }
        assert end_calls_left_up("gz", outbox, now=1000.0) == 3
    finally:
        await outbox.close()  # commits what was appended
    outbox = await Outbox.open(path)
    try:
        rows = [e for _, e in await outbox.pending(100)]
        # Started again: nothing is left up any more, nothing is ended twice.
        assert outbox.left_open.live_calls == {}
        assert end_calls_left_up("gz", outbox) == 0
    finally:
        await outbox.close()
    ends = {e.call_id: e for e in rows if e.kind == K.CALL_EVENT_KIND_ENDED and e.data.get("reason")}
    assert {c: (e.seq, e.outcome) for c, e in ends.items()} == {
        "queued": (3, common_pb2.CALL_OUTCOME_FAILED),
        "talking": (6, common_pb2.CALL_OUTCOME_ANSWERED),
        # Central decides from the other city's events (answered there or not).
        "elsewhere": (3, common_pb2.CALL_OUTCOME_UNSPECIFIED),
    }
    assert all(e.data["reason"] == "site-restarted" and e.site_id == "gz" for e in ends.values())


async def test_a_call_left_up_with_an_open_callback_continues_its_numbers_after_its_end(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.db"
    item = KeptItem("callback", "cb1", "c1", "{}")
    await journal(
        path, [ev("c1", 1, K.CALL_EVENT_KIND_ARRIVED), ev("c1", 2, K.CALL_EVENT_KIND_CALLBACK)], [item]
    )
    outbox = await Outbox.open(path)
    try:
        assert outbox.left_open.last_seq == {"c1": 2}
        end_calls_left_up("gz", outbox)
        # The restored callback's next event is numbered after the end (no number reused).
        assert outbox.left_open.last_seq == {"c1": 3}
    finally:
        await outbox.close()
