"""SiteRecordingService: a recording's file, fetched from the site that keeps it (operators only,
by the authorization table)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from vcc.errors import InvalidArgument, NotFound
from vcc.rpc import maps_stream_errors
from vcc.v1 import recordings_pb2, recordings_pb2_grpc

CHUNK = 64 * 1024
# A call id names a file here: nothing that could leave the folder.
_CALL_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")


class SiteRecordings(recordings_pb2_grpc.SiteRecordingServiceServicer):
    def __init__(self, folder: Path | None) -> None:
        self._folder = folder

    @maps_stream_errors
    async def FetchRecording(
        self, request: recordings_pb2.FetchRecordingRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[recordings_pb2.RecordingChunk]:
        if not _CALL_ID.match(request.call_id):
            raise InvalidArgument("bad-call-id", "call_id: 1-64 letters, digits, - or _")
        path = self._folder / f"{request.call_id}.wav" if self._folder is not None else None
        if path is None or not path.is_file():
            raise NotFound("no-recording", f"no recording of call {request.call_id} at this site")
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                yield recordings_pb2.RecordingChunk(data=chunk)
