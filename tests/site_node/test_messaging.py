"""The agents' message store (SPEC F22): pure, bounded, bad input changes nothing."""

from __future__ import annotations

import pytest

from site_node.messaging import MAX_PER_AGENT, Message, MessageBox
from vcc.errors import InvalidArgument, NotFound


def test_a_message_is_kept_for_its_sender_and_recipients_only() -> None:
    box = MessageBox(["1001", "1002", "1003"])
    m = box.post(1.0, "1001", ["1002"], "  hello 你好  ")
    assert (m.text, m.to, m.broadcast) == ("hello 你好", ("1002",), False)
    assert box.inbox("1001") == [m] and box.inbox("1002") == [m] and box.inbox("1003") == []


def test_a_broadcast_reaches_everyone_but_the_sender_once() -> None:
    box = MessageBox(["1099", "1001", "1002"])
    m = box.post(1.0, "1099", ["1001", "1002", "1001", "1099"], "meeting", broadcast=True)
    assert m.to == ("1001", "1002") and m.broadcast
    assert all(box.inbox(c) == [m] for c in ("1099", "1001", "1002"))


@pytest.mark.parametrize(
    ("to", "text", "error"),
    [
        (["1002"], "", InvalidArgument),
        (["1002"], "x" * 501, InvalidArgument),
        (["1001"], "to myself", InvalidArgument),
        ([], "nobody", InvalidArgument),
        (["9999"], "stranger", NotFound),
    ],
)
def test_bad_messages_change_nothing(to: list[str], text: str, error: type[Exception]) -> None:
    box = MessageBox(["1001", "1002"])
    with pytest.raises(error):
        box.post(1.0, "1001", to, text)
    assert box.inbox("1001") == [] and box.inbox("1002") == []


def test_each_agent_keeps_the_latest_messages() -> None:
    box = MessageBox(["1001", "1002"])
    for i in range(MAX_PER_AGENT + 5):
        box.post(float(i), "1001", ["1002"], f"m{i}")
    kept = box.inbox("1002")
    assert len(kept) == MAX_PER_AGENT and kept[-1].text == f"m{MAX_PER_AGENT + 4}" and kept[0].text == "m5"


def test_restored_messages_fill_the_boxes_and_the_numbering_continues() -> None:

    box = MessageBox(["1001", "1002"])
    box.restore(
        [
            Message(4, 10.0, "1001", ("1002",), "kept"),
            Message(9, 11.0, "1002", ("1001", "1099"), "to one who left", broadcast=True),
            Message(12, 12.0, "1099", ("1098",), "nobody here"),
        ]
    )
    assert [m.id for m in box.inbox("1001")] == [4, 9]
    assert [m.id for m in box.inbox("1002")] == [4, 9]
    assert box.post(13.0, "1001", ["1002"], "next").id == 13
    box.add_agent("1003")
    assert box.post(14.0, "1003", ["1001"], "hello from the new one").id == 14
