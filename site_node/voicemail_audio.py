"""Where a voicemail message's audio is at this site: one answer for the gRPC VoicemailService and
the desktop's HTTP endpoint alike (the call control says whose message it is and its file)."""

from __future__ import annotations

from pathlib import Path

from vcc.errors import NotFound


def audio_file(recordings: Path | None, relative: str, message_id: str) -> Path:
    """The message's WAV under the site's recordings folder; NotFound in words when it is not there
    (a message whose voice a trunk gateway keeps, or one still being written)."""
    path = recordings / relative if recordings is not None else None
    if path is None or not path.is_file():
        raise NotFound("no-audio", f"message {message_id}: its audio is not at this site (yet)")
    return path
