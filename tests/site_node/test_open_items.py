"""Callbacks and voicemail survive a site restart: kept in the outbox's file with the events of
the same operation, read back at start, their calls' journal numbers continued (never reused).
A real outbox (SQLite) and the real runtime; the site "restarts" by opening the file again."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from site_node.callcontrol import Switchboard
from site_node.callcontrol.domain import DialOut, Effect
from site_node.records.open_items import BadOpenItem, item_of, restore_open_items
from site_node.records.outbox import KeptItem, Outbox
from site_node.runtime import SiteRuntime
from tests.ivr.flows import small
from tests.site_node.test_flow_calls import NUMBER, board, flow_of


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def flow() -> Any:
    data = small()
    data["prompts"]["cb"] = {"zh": "我们会回电。", "en": "We will call you back."}
    data["nodes"]["a_queue"] = {"kind": "callback", "prompt": "cb", "skill_group": "billing"}
    data["nodes"]["b_queue"] = {"kind": "voicemail", "box": "billing"}
    return flow_of(data)


async def _no_customer(_ani: str) -> None:
    return None


async def site(path: Path, clock: Clock) -> tuple[Outbox, SiteRuntime]:
    outbox = await Outbox.open(path)
    sb: Switchboard = board({"current": flow()})
    rt = SiteRuntime(sb, outbox, _no_customer, clock=clock)
    rt.dial_out = lambda _dial: None  # a gateway that dials and says nothing yet
    return outbox, rt


async def flush(outbox: Outbox) -> None:
    # An empty append resolves at once; a marker batch is committed after everything before it.
    while outbox.pending_count != len(await outbox.pending(10_000)):
        await outbox.append([])


def dialled(effects: list[Effect]) -> list[DialOut]:
    return [e for e in effects if isinstance(e, DialOut)]


async def test_a_callback_and_a_voicemail_survive_a_restart_and_continue_their_calls_numbers(
    tmp_path: Path,
) -> None:
    path, clock = tmp_path / "outbox.db", Clock()
    outbox, rt = await site(path, clock)
    asking = rt.offer(_line(), idempotency_key="a", ani="13800000001", dnis=NUMBER)
    rt.do(lambda now: rt.sb.caller_digits(now, asking, "1"))  # a callback for billing
    leaving = rt.offer(_line(), idempotency_key="b", ani="13800000005", dnis=NUMBER)
    rt.do(lambda now: rt.sb.caller_digits(now, leaving, "2"))  # voicemail
    clock.now += 3
    rt.do(lambda now: rt.sb.caller_hang_up(now, leaving))
    await flush(outbox)
    before = {e.call_id: e.seq for _, e in await outbox.pending(10_000)}
    # The site dies: nothing more is written (no graceful stop, no shutdown events).
    await outbox.close()

    outbox, rt = await site(path, clock)
    assert {i.kind for i in outbox.left_open.items} == {"callback", "voicemail"}
    assert outbox.left_open.last_seq == {asking: before[asking], leaving: before[leaving]}
    assert restore_open_items(rt, outbox) == 2
    (callback,) = rt.sb.dialler.callbacks.open()
    assert (callback.number, callback.skill_group, callback.call_id) == ("13800000001", "billing", asking)
    clock.now += 1
    rt.do(lambda now: rt.sb.login(now, "0201"))
    (dial,) = dialled(rt.do(lambda now: rt.sb.set_ready(now, "0201", True)))
    assert (dial.number, dial.attempt) == ("13800000001", 1)
    (message,) = rt.sb.voicemail("0201", "billing")
    assert message.call_id == leaving and message.state == "new" and message.duration_s >= 1
    for step in ("take", "play", "done"):
        rt.do(lambda now, s=step: rt.sb.work_voicemail(now, "0201", message.message_id, s))  # type: ignore[misc]
    await flush(outbox)
    after = [(e.call_id, e.seq) for _, e in await outbox.pending(10_000)]
    # Each call's numbers go on from the last one kept: none is used twice.
    assert len(after) == len(set(after))
    assert [s for c, s in after if c == asking][-1] == before[asking] + 1
    assert [s for c, s in after if c == leaving][-3:] == [before[leaving] + k for k in (1, 2, 3)]
    await outbox.close()

    outbox, rt = await site(path, clock)
    # The message is done: forgotten; the callback is being dialled: still kept.
    assert [(i.kind, i.item_id) for i in outbox.left_open.items] == [("callback", callback.callback_id)]
    assert set(outbox.left_open.last_seq) == {asking}
    assert restore_open_items(rt, outbox) == 1
    (being,) = rt.sb.dialler.dialling
    assert being == dial.dial_id  # the gateway may still offer its callee
    await outbox.close()


async def test_a_row_that_cannot_be_read_or_has_no_journal_number_is_left_out(tmp_path: Path) -> None:
    path, clock = tmp_path / "outbox.db", Clock()
    outbox, rt = await site(path, clock)
    asking = rt.offer(_line(), idempotency_key="a", ani="13800000001", dnis=NUMBER)
    rt.do(lambda now: rt.sb.caller_digits(now, asking, "1"))
    await flush(outbox)
    await outbox.close()
    db = sqlite3.connect(path)
    with db:
        db.execute("INSERT INTO open_items VALUES ('voicemail', 'x-vm', 'x', '{\"nope\": 1}')")
        # A broken history: the callback's call lost its journal number.
        db.execute("DELETE FROM call_seq")
    db.close()
    outbox, rt = await site(path, clock)
    assert restore_open_items(rt, outbox) == 0
    assert rt.sb.dialler.callbacks.open() == [] and rt.sb.flows.voicemail.box.listed() == []
    await outbox.close()
    with pytest.raises(BadOpenItem, match="unknown kind"):
        item_of(KeptItem("fax", "f", "c", "{}"))
    with pytest.raises(BadOpenItem, match="closed"):
        item_of(KeptItem("callback", "f", "c", None))


def _line() -> Any:
    from site_node.runtime import CallerLine

    return CallerLine()
