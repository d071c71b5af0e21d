"""Messages between the agents of a site, and from a group leader to the team (SPEC F22).

A small pure store: time comes in as an argument; the adapter keeps each message in the site's
message file (site_node.message_store) and gives them back at start (`restore`), so a restart
forgets nothing. Each agent keeps the last MAX_PER_AGENT messages it sent or received.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from vcc.errors import InvalidArgument, NotFound

MAX_TEXT = 500
MAX_PER_AGENT = 100


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    at: float
    sender: str
    # Agent codes it went to (a broadcast: every member of the team).
    to: tuple[str, ...]
    text: str
    broadcast: bool = False


def check_text(text: str) -> str:
    text = text.strip()
    if not text or len(text) > MAX_TEXT:
        raise InvalidArgument("bad-message", f"text: 1 to {MAX_TEXT} characters")
    return text


class MessageBox:
    def __init__(self, agents: Iterable[str]) -> None:
        self._boxes: dict[str, deque[Message]] = {code: deque(maxlen=MAX_PER_AGENT) for code in agents}
        self._next = 1

    def post(
        self, now: float, sender: str, to: Iterable[str], text: str, *, broadcast: bool = False
    ) -> Message:
        """Store a message for the sender and each recipient; bad input changes nothing."""
        text = text.strip()
        if not text or len(text) > MAX_TEXT:
            raise InvalidArgument("bad-message", f"text: 1 to {MAX_TEXT} characters")
        recipients = tuple(dict.fromkeys(code for code in to if code != sender))
        if not recipients:
            raise InvalidArgument("bad-recipient", "to: at least one other agent")
        for code in (sender, *recipients):
            if code not in self._boxes:
                raise NotFound("unknown-agent", f"to: no agent {code!r} at this site")
        message = Message(self._next, now, sender, recipients, text, broadcast)
        self._next += 1
        for code in (sender, *recipients):
            self._boxes[code].append(message)
        return message

    def between_cities(self, now: float, sender: str, to: str, text: str, *, incoming: bool) -> Message:
        """A message with an agent of another city: kept in the box of the one who is here (the
        receiver when `incoming`, else the sender)."""
        text = text.strip()
        if not text or len(text) > MAX_TEXT:
            raise InvalidArgument("bad-message", f"text: 1 to {MAX_TEXT} characters")
        here = to if incoming else sender
        if here not in self._boxes:
            raise NotFound("unknown-agent", f"no agent {here!r} at this site")
        if sender == to:
            raise InvalidArgument("bad-recipient", "to: at least one other agent")
        message = Message(self._next, now, sender, (to,), text)
        self._next += 1
        self._boxes[here].append(message)
        return message

    def add_agent(self, code: str) -> None:
        """An agent added while the site runs (site_node.roster) gets its box."""
        self._boxes.setdefault(code, deque(maxlen=MAX_PER_AGENT))

    def restore(self, messages: Iterable[Message]) -> None:
        """Messages kept before a restart, oldest first (those of agents no longer here dropped)."""
        for m in messages:
            for code in dict.fromkeys((m.sender, *m.to)):
                box = self._boxes.get(code)
                if box is not None:
                    box.append(m)
            self._next = max(self._next, m.id + 1)

    def inbox(self, code: str) -> list[Message]:
        """What `code` sent and received, oldest first."""
        return list(self._boxes.get(code, ()))
