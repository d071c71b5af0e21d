"""Voicemail at a site (F27): messages recorded on a recording board channel while the caller
speaks, listed for their skill group, taken by an agent of it, played back and marked done. Each
step is an event of the caller's call record (the call itself is long over by then)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from site_node.callcontrol.agents import Agents
from site_node.callcontrol.domain import Call
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.resources import Resources
from site_node.callcontrol.voicemail import Message, Voicemail, VoicemailError
from vcc.call_events import EventKind
from vcc.errors import FailedPrecondition, NotFound, PermissionDenied, VccError

T = TypeVar("T")


class VoicemailDesk:
    def __init__(self, resources: Resources, agents: Agents) -> None:
        self.box = Voicemail()
        self._resources = resources
        self._agents = agents
        # message id -> its caller's call (kept past the call's end: later steps go in its record).
        self._calls: dict[str, Call] = {}
        self._recorders: dict[str, str | None] = {}
        # Messages whose voice is recorded (a recording channel was free).
        self._with_audio: set[str] = set()

    def record(self, call: Call, box: str, group: str, now: float, fx: Effects) -> str:
        message_id = f"{call.call_id}-vm"
        self.box.start(message_id, call.call_id, now, box=box, skill_group=group, caller=call.ani)
        self._calls[message_id] = call
        got, self._recorders[message_id] = self._resources.take_board("recording")
        if got:
            self._with_audio.add(message_id)
        self._journal(message_id, "recording", now, fx, box=box, skill_group=group)
        self._keep(message_id, fx)
        return message_id

    def restore(self, message: Message, call: Call, now: float, fx: Effects) -> None:
        """A message kept before the site restarted, its caller's journal numbers continued. One
        still recording then lost its end with the site: discarded, said in the record."""
        self.box.restore(message)
        self._calls[message.message_id] = call
        if message.state == "recording":
            self.box.discard(message.message_id, now)
            self._journal(message.message_id, "discarded", now, fx, reason="site-restarted")
            self._keep(message.message_id, fx)

    def recorded(self, message_id: str, now: float, fx: Effects) -> Message:
        """The caller hung up (or the message reached its longest): kept, or discarded if too short."""
        self._resources.release_board(self._recorders.pop(message_id, None))
        audio = message_id in self._with_audio
        self._with_audio.discard(message_id)
        message = self.box.finish(message_id, f"voicemail/{message_id}.wav" if audio else "", now)
        self._journal(
            message_id, message.state, now, fx, box=message.box, skill_group=message.skill_group,
            duration_s=f"{message.duration_s:.1f}",
        )  # fmt: skip
        self._keep(message_id, fx)
        return message

    def with_audio(self, message_id: str) -> bool:
        """The caller's voice is being recorded for this message (False: every channel was busy)."""
        return message_id in self._with_audio

    # -- an agent working the group's messages ----------------------------------------------------

    def audio_of(self, code: str, message_id: str) -> str:
        """The recording of a message assigned to this agent (its path under the recordings folder)."""
        message = self._mapped(lambda: self.box.get(message_id))
        if message.agent_code != code or message.state not in ("assigned", "done"):
            raise FailedPrecondition("message-not-yours", f"message {message_id} is not assigned to {code}")
        if not message.recording:
            raise NotFound("no-audio", f"message {message_id} was recorded with no audio (no channel free)")
        return message.recording

    def listed(self, code: str, skill_group: str) -> list[Message]:
        self._check_group(code, skill_group)
        return self.box.listed(skill_group)

    def take(self, code: str, message_id: str, now: float, fx: Effects) -> Message:
        self._check_group(code, self._message(message_id).skill_group)
        message = self._mapped(lambda: self.box.assign(message_id, code))
        self._journal(message_id, "assigned", now, fx, agent=code)
        self._keep(message_id, fx)
        return message

    def play(self, code: str, message_id: str, now: float, fx: Effects) -> Message:
        message = self._mapped(lambda: self.box.play(message_id, code))
        self._journal(message_id, "played", now, fx, agent=code)
        self._keep(message_id, fx)
        return message

    def done(self, code: str, message_id: str, note: str, now: float, fx: Effects) -> Message:
        message = self._mapped(lambda: self.box.done(message_id, code, now, note))
        self._journal(message_id, "done", now, fx, agent=code)
        self._keep(message_id, fx)
        return message

    def _check_group(self, code: str, skill_group: str) -> None:
        self._agents.logged_in(code)
        if skill_group not in self._agents.skills.get(code, {}):
            raise PermissionDenied("not-your-group", f"agent {code} has no skill in {skill_group!r}")

    def _message(self, message_id: str) -> Message:
        return self._mapped(lambda: self.box.get(message_id))

    @staticmethod
    def _mapped(step: Callable[[], T]) -> T:
        try:
            return step()
        except VoicemailError as exc:
            error: type[VccError] = NotFound if exc.error_id == "message-not-found" else FailedPrecondition
            raise error(exc.error_id, str(exc)) from None

    def _journal(self, message_id: str, stage: str, now: float, fx: Effects, **data: str) -> None:
        call = self._calls[message_id]
        fx.journal(
            call, EventKind.VOICEMAIL, now,
            data=(("message_id", message_id), ("stage", stage), *sorted(data.items())),
        )  # fmt: skip

    def _keep(self, message_id: str, fx: Effects) -> None:
        """Kept durably while open; a message done or discarded is let go with its caller's call."""
        message = self.box.get(message_id)
        is_open = message.state in ("recording", "new", "assigned")
        call = self._calls[message_id] if is_open else self._calls.pop(message_id)
        fx.keep("voicemail", message_id, call.call_id, message if is_open else None)
