"""The outbox against a real SQLite file: durability, order, idempotency, group commit."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from site_node.records.outbox import Outbox, OutboxClosed
from vcc.v1 import common_pb2


def event(call: str, seq: int) -> common_pb2.CallEvent:
    return common_pb2.CallEvent(
        call_id=call, site_id="gz", seq=seq, kind=common_pb2.CALL_EVENT_KIND_ARRIVED, data={"n": str(seq)}
    )


def keys(rows: list[tuple[int, common_pb2.CallEvent]]) -> list[tuple[str, int]]:
    return [(e.call_id, e.seq) for _, e in rows]


async def test_append_resolves_when_durable_and_rows_come_back_in_order(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db")
    try:
        done = outbox.append([event("c1", 1), event("c1", 2)])
        assert outbox.pending_count == 2
        await done
        more = outbox.append([event("c2", 1)])
        await more
        rows = await outbox.pending(10)
        assert keys(rows) == [("c1", 1), ("c1", 2), ("c2", 1)]
        assert rows[0][1].data["n"] == "1"
        assert [row_id for row_id, _ in rows] == sorted(row_id for row_id, _ in rows)
        assert keys(await outbox.pending(2)) == [("c1", 1), ("c1", 2)]
    finally:
        await outbox.close()


async def test_rows_survive_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    outbox = await Outbox.open(path)
    await outbox.append([event(f"c{i}", 1) for i in range(5)])
    rows = await outbox.pending(2)
    await outbox.ack([row_id for row_id, _ in rows])
    # Buffered but never awaited: close() still commits it.
    outbox.append([event("late", 1)])
    await outbox.close()

    reopened = await Outbox.open(path)
    try:
        assert reopened.pending_count == 4
        assert reopened.changed.is_set()
        assert keys(await reopened.pending(100)) == [("c2", 1), ("c3", 1), ("c4", 1), ("late", 1)]
    finally:
        await reopened.close()


async def test_an_event_appended_twice_is_journaled_once(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    outbox = await Outbox.open(path)
    await outbox.append([event("c1", 1), event("c1", 1), event("c1", 2)])
    await outbox.append([event("c1", 2), event("c1", 3)])
    assert outbox.pending_count == 3
    await outbox.close()
    reopened = await Outbox.open(path)
    try:
        await reopened.append([event("c1", 1)])
        assert keys(await reopened.pending(100)) == [("c1", 1), ("c1", 2), ("c1", 3)]
        assert reopened.pending_count == 3
    finally:
        await reopened.close()


async def test_appends_made_while_a_commit_runs_share_the_next_commit(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db")
    try:
        # A burst with no await in between: one transaction.
        burst = [outbox.append([event(f"b{i}", 1)]) for i in range(100)]
        await asyncio.gather(*burst)
        assert outbox.commits == 1

        first = outbox.append([event("x", 1)])
        # Let the writer start committing `first`; the appends below arrive during that commit.
        await asyncio.sleep(0)
        rest = [outbox.append([event("x", seq)]) for seq in range(2, 50)]
        await asyncio.gather(first, *rest)
        assert outbox.commits <= 3
        assert outbox.pending_count == 149
        assert keys(await outbox.pending(200))[100:] == [("x", seq) for seq in range(1, 50)]
    finally:
        await outbox.close()


async def test_ack_and_park_forget_rows_and_keep_counts(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db")
    try:
        await outbox.append([event("c1", seq) for seq in range(1, 6)])
        rows = await outbox.pending(10)
        await outbox.ack([rows[0][0], rows[1][0]])
        assert await outbox.park([rows[2][0]], "bad skill group") == 1
        assert outbox.pending_count == 2
        assert outbox.dead_letter_count == 1
        assert keys(await outbox.pending(10)) == [("c1", 4), ("c1", 5)]
        parked = await outbox.dead_letters()
        assert [(e.call_id, e.seq, reason) for e, reason in parked] == [("c1", 3, "bad skill group")]
        # Acking a row twice (a re-sent batch) changes nothing.
        await outbox.ack([rows[0][0]])
        assert outbox.pending_count == 2
    finally:
        await outbox.close()


async def test_append_after_close_is_refused(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db")
    await outbox.close()
    with pytest.raises(OutboxClosed):
        outbox.append([event("c1", 1)])


ROOT = Path(__file__).resolve().parents[2]
CRASHING_SITE = """
import asyncio, os, sys
from site_node.records.outbox import Outbox
from vcc.v1 import common_pb2

async def main():
    outbox = await Outbox.open(sys.argv[1])
    await outbox.append([common_pb2.CallEvent(call_id="c1", site_id="gz", seq=s) for s in (1, 2, 3)])
    outbox.append([common_pb2.CallEvent(call_id="never-awaited", site_id="gz", seq=1)])
    # Crash: no close(), no flush, no atexit.
    os._exit(0)

asyncio.run(main())
"""


async def test_a_durable_append_survives_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_SITE,
        str(path),
        env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'proto'}"},
    )
    assert await proc.wait() == 0
    outbox = await Outbox.open(path)
    try:
        # What was acknowledged as durable is there; what was only buffered may or may not be.
        assert keys(await outbox.pending(10))[:3] == [("c1", 1), ("c1", 2), ("c1", 3)]
    finally:
        await outbox.close()
