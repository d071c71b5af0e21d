"""The desk's voicemail (F27): the open messages of the agent's skill groups, taken, played back
and marked done through the call control's own steps (the gRPC VoicemailService's path), each in
the caller's call record.

- `GET  /api/voicemail` → `{messages: [{message_id, call_id, caller, skill_group, box, started_at,
  duration_s, state, agent_code, plays, audio}]}` (new and assigned messages, oldest first)
- `POST /api/voicemail/{message_id}/take|play|done` `{"note"?}` (done: at most 500 characters)
  → `{message}`
- `GET  /api/voicemail/{message_id}/audio` → the message's WAV (`audio/wav`), to the agent it is
  assigned to only: another agent's session is 403 `message-not-yours`, a message with no audio
  at this site 404 `no-audio`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from routing.agents import AgentState
from site_node.callcontrol.voicemail import Message
from site_node.voicemail_audio import audio_file
from site_node.web.sessions import Session
from vcc.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    from site_node.web.server import DeskServer

STEPS = ("take", "play", "done")
MAX_NOTE_CHARS = 500
# A message id names a file: nothing that could leave the recordings folder.
_MESSAGE_ID = re.compile(r"^[0-9A-Za-z_-]{1,80}$")


def message_view(m: Message) -> dict[str, Any]:
    return {
        "message_id": m.message_id, "call_id": m.call_id, "caller": m.caller, "skill_group": m.skill_group,
        "box": m.box, "started_at": m.started_at, "duration_s": round(m.duration_s, 1), "state": m.state,
        "agent_code": m.agent_code, "plays": m.plays, "audio": bool(m.recording),
    }  # fmt: skip


def _message_id(request: Request) -> str:
    message_id = str(request.path_params["message_id"])
    if not _MESSAGE_ID.match(message_id):
        raise InvalidArgument("bad-message-id", "message_id: 1 to 80 letters, digits, - or _")
    return message_id


class VoicemailApi:
    def __init__(self, desk: DeskServer) -> None:
        self.d = desk

    def listed(self, code: str) -> list[dict[str, Any]]:
        """The open messages of every skill group of the agent, oldest first (none while logged out:
        a page's view is built in the moment a supervisor logs the agent out too)."""
        if self.d.sb.agents[code].state == AgentState.LOGGED_OUT:
            return []
        found = [m for g in sorted(self.d.sb.skills.get(code, {})) for m in self.d.sb.voicemail(code, g)]
        return [message_view(m) for m in sorted(found, key=lambda m: m.started_at)]

    async def _list(self, request: Request) -> Response:
        s = self.d._session(request)
        return JSONResponse({"messages": self.listed(s.code)})

    async def _step(self, request: Request) -> Response:
        step = request.path_params["step"]
        if step not in STEPS:
            raise NotFound("unknown-action", "step: take, play or done")
        message_id = _message_id(request)

        async def act(s: Session, body: dict[str, Any]) -> dict[str, Any]:
            note = body.get("note", "") if step == "done" else ""
            if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
                raise InvalidArgument("note-too-long", f"note: text of at most {MAX_NOTE_CHARS} characters")
            self.d._do(request, lambda now: self.d.sb.work_voicemail(now, s.code, message_id, step, note))
            self.d._wake(s.code, *self.d.sb.agents)
            return {"message": message_view(self.d.sb.flows.voicemail.box.get(message_id))}

        return await self.d._mutate(request, f"voicemail-{step}", act)

    async def _audio(self, request: Request) -> Response:
        s = self.d._session(request)
        message_id = _message_id(request)
        relative = self.d.sb.flows.voicemail.audio_of(s.code, message_id)
        path = audio_file(self.d.recordings, relative, message_id)
        return FileResponse(path, media_type="audio/wav", headers={"Cache-Control": "no-store"})
