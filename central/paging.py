"""Opaque page tokens for call-record listings: a keyset cursor (listing time, call id)."""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass

from vcc.errors import InvalidArgument


@dataclass(frozen=True)
class Cursor:
    """The last record of a page: the next page starts after it."""

    first_event_at: float
    call_id: str


def encode(cursor: Cursor) -> str:
    raw = json.dumps([cursor.first_event_at, cursor.call_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str) -> Cursor:
    """The cursor in a token from `encode`; InvalidArgument for anything else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        at, call_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidArgument("bad-page-token", "page_token: not a token from a previous page") from exc
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise InvalidArgument("bad-page-token", "page_token: not a token from a previous page")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidArgument("bad-page-token", "page_token: not a token from a previous page")
    return Cursor(float(at), call_id)
