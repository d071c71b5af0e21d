"""VoicemailService (F27): an agent lists its groups' voicemail, takes a message, plays it back
and marks it done, with its desktop session; each step is journaled in the caller's record."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from site_node.callcontrol.voicemail import Message
from site_node.grpc_api.desktop_service import AgentDesktop
from site_node.runtime import SiteRuntime
from vcc.errors import InvalidArgument, NotFound
from vcc.rpc import maps_errors, maps_stream_errors, timestamp
from vcc.v1 import voicemail_pb2, voicemail_pb2_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]

MAX_NOTE_CHARS = 500
CHUNK = 64 * 1024


class VoicemailDesk(voicemail_pb2_grpc.VoicemailServiceServicer):
    def __init__(self, runtime: SiteRuntime, desktop: AgentDesktop, recordings: Path | None = None) -> None:
        self.rt = runtime
        self._desktop = desktop
        # Where the SIP side writes the messages' audio (None: a site with no SIP trunk).
        self._recordings = recordings

    @maps_errors
    async def ListVoicemail(
        self, request: voicemail_pb2.ListVoicemailRequest, context: Ctx
    ) -> voicemail_pb2.ListVoicemailResponse:
        code = self._desktop.agent_of(request.session_token)
        if not request.skill_group:
            raise InvalidArgument("missing-skill-group", "skill_group: required")
        found = self.rt.sb.voicemail(code, request.skill_group)
        return voicemail_pb2.ListVoicemailResponse(messages=[_message(m) for m in found])

    @maps_errors
    async def TakeVoicemail(
        self, request: voicemail_pb2.TakeVoicemailRequest, context: Ctx
    ) -> voicemail_pb2.VoicemailResponse:
        return self._step(request.session_token, request.message_id, "take")

    @maps_errors
    async def PlayVoicemail(
        self, request: voicemail_pb2.PlayVoicemailRequest, context: Ctx
    ) -> voicemail_pb2.VoicemailResponse:
        return self._step(request.session_token, request.message_id, "play")

    @maps_errors
    async def FinishVoicemail(
        self, request: voicemail_pb2.FinishVoicemailRequest, context: Ctx
    ) -> voicemail_pb2.VoicemailResponse:
        if len(request.note) > MAX_NOTE_CHARS:
            raise InvalidArgument("note-too-long", f"note: at most {MAX_NOTE_CHARS} characters")
        return self._step(request.session_token, request.message_id, "done", request.note)

    @maps_stream_errors
    async def FetchVoicemailAudio(
        self, request: voicemail_pb2.FetchVoicemailAudioRequest, context: Ctx
    ) -> AsyncIterator[voicemail_pb2.VoicemailAudioChunk]:
        code = self._desktop.agent_of(request.session_token)
        if not request.message_id:
            raise InvalidArgument("missing-message-id", "message_id: required")
        relative = self.rt.sb.flows.voicemail.audio_of(code, request.message_id)
        path = self._recordings / relative if self._recordings is not None else None
        if path is None or not path.is_file():
            raise NotFound("no-audio", f"message {request.message_id}: its audio is not at this site (yet)")
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                yield voicemail_pb2.VoicemailAudioChunk(data=chunk)

    def _step(
        self, token: str, message_id: str, step: str, note: str = ""
    ) -> voicemail_pb2.VoicemailResponse:
        code = self._desktop.agent_of(token)
        if not message_id:
            raise InvalidArgument("missing-message-id", "message_id: required")
        self.rt.do(lambda now: self.rt.sb.work_voicemail(now, code, message_id, step, note))
        message = self.rt.sb.flows.voicemail.box.get(message_id)
        return voicemail_pb2.VoicemailResponse(message=_message(message))


def _message(m: Message) -> voicemail_pb2.VoicemailMessage:
    return voicemail_pb2.VoicemailMessage(
        message_id=m.message_id, call_id=m.call_id, box=m.box, skill_group=m.skill_group, caller=m.caller,
        started_at=timestamp(m.started_at), duration_s=m.duration_s, state=m.state, agent_code=m.agent_code,
        plays=m.plays, recording=m.recording,
    )  # fmt: skip
