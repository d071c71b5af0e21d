"""Voicemail (F27), pure: messages recorded for a box, listed for its skill group, assigned to an
agent, played back and marked done; time given. Recording itself is a board channel's job.

A message shorter than `min_message_s` (a caller who hung up at the tone) is discarded; one that
reaches `max_message_s` is cut there (the call control stops the recording at `cut_at`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

MessageState = Literal["recording", "new", "assigned", "done", "discarded"]


class VoicemailError(Exception):
    def __init__(self, error_id: str, message: str) -> None:
        super().__init__(message)
        self.error_id = error_id


@dataclass(frozen=True)
class Message:
    message_id: str
    call_id: str
    box: str
    skill_group: str
    caller: str
    started_at: float
    state: MessageState = "recording"
    # Where the board channel saved it ("" while recording).
    recording: str = ""
    duration_s: float = 0.0
    agent_code: str = ""
    plays: int = 0
    done_at: float | None = None
    note: str = ""


class Voicemail:
    def __init__(self, *, min_message_s: float = 1.0, max_message_s: float = 120.0) -> None:
        self.min_message_s = min_message_s
        self.max_message_s = max_message_s
        self._messages: dict[str, Message] = {}

    def start(
        self, message_id: str, call_id: str, now: float, *, box: str, skill_group: str, caller: str
    ) -> Message:
        if message_id in self._messages:
            raise VoicemailError("message-exists", f"message {message_id} exists already")
        return self._put(Message(message_id, call_id, box, skill_group, caller, now))

    def cut_at(self, message_id: str) -> float:
        """When the recording must stop at the latest."""
        return self._get(message_id).started_at + self.max_message_s

    def finish(self, message_id: str, recording: str, now: float) -> Message:
        message = self._in(message_id, "recording")
        duration = min(now - message.started_at, self.max_message_s)
        if duration < self.min_message_s:
            return self._put(replace(message, state="discarded", duration_s=duration, done_at=now))
        return self._put(replace(message, state="new", recording=recording, duration_s=duration))

    def restore(self, message: Message) -> None:
        """A message kept before the site restarted (site_node/records/open_items.py)."""
        if message.message_id in self._messages:
            raise VoicemailError("message-exists", f"message {message.message_id} exists already")
        self._put(message)

    def discard(self, message_id: str, now: float) -> Message:
        """A message whose recording was cut by a site restart: its end is not known."""
        message = self._in(message_id, "recording")
        return self._put(replace(message, state="discarded", done_at=now))

    def listed(self, skill_group: str | None = None, *, open_only: bool = True) -> list[Message]:
        """Oldest first: the order a group works its messages in."""
        wanted = ("new", "assigned") if open_only else ("new", "assigned", "done")
        found = [
            m
            for m in self._messages.values()
            if m.state in wanted and (skill_group is None or m.skill_group == skill_group)
        ]
        return sorted(found, key=lambda m: (m.started_at, m.message_id))

    def assign(self, message_id: str, agent_code: str) -> Message:
        message = self._get(message_id)
        if message.state not in ("new", "assigned"):
            raise VoicemailError("message-wrong-state", f"message {message_id} is {message.state}")
        return self._put(replace(message, state="assigned", agent_code=agent_code))

    def play(self, message_id: str, agent_code: str) -> Message:
        """The agent it is assigned to listens to it (any number of times)."""
        message = self._assigned_to(message_id, agent_code)
        return self._put(replace(message, plays=message.plays + 1))

    def done(self, message_id: str, agent_code: str, now: float, note: str = "") -> Message:
        message = self._assigned_to(message_id, agent_code)
        if message.plays == 0:
            raise VoicemailError("message-not-played", f"message {message_id} was never played")
        return self._put(replace(message, state="done", done_at=now, note=note))

    def _assigned_to(self, message_id: str, agent_code: str) -> Message:
        message = self._in(message_id, "assigned")
        if message.agent_code != agent_code:
            raise VoicemailError(
                "message-not-yours",
                f"message {message_id} is assigned to {message.agent_code}, not {agent_code}",
            )
        return message

    def _in(self, message_id: str, state: MessageState) -> Message:
        message = self._get(message_id)
        if message.state != state:
            raise VoicemailError(
                "message-wrong-state", f"message {message_id} is {message.state}, not {state}"
            )
        return message

    def get(self, message_id: str) -> Message:
        return self._get(message_id)

    def _get(self, message_id: str) -> Message:
        message = self._messages.get(message_id)
        if message is None:
            raise VoicemailError("message-not-found", f"no message {message_id}")
        return message

    def _put(self, message: Message) -> Message:
        self._messages[message.message_id] = message
        return message
