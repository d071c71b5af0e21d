"""Agent credentials: a code of 4 to 8 digits, six-digit password checked against a slow salted hash."""

from __future__ import annotations

import re
import secrets

from vcc.config import AGENT_CODE
from vcc.errors import InvalidArgument, Unauthenticated
from vcc.passwords import HASHER as _HASHER
from vcc.passwords import decoy_hash, password_matches

__all__ = ["decoy_hash", "password_matches"]

CODE = AGENT_CODE
# ASCII digits only: `\d` also takes full-width ones (U+FF10 to U+FF19), and `$` a trailing newline.
PASSWORD = re.compile(r"^[0-9]{6}\Z")


def hash_password(password: str) -> str:
    if not PASSWORD.match(password):
        raise InvalidArgument("bad-password-format", "password: six digits")
    return _HASHER.hash(password)


def check_format(agent_code: str, password: str) -> None:
    if not CODE.match(agent_code):
        raise InvalidArgument("bad-agent-code", "agent_code: 4 to 8 digits")
    if not PASSWORD.match(password):
        raise InvalidArgument("bad-password-format", "password: six digits")


async def verify_password(password_hash: str, password: str) -> None:
    """Raise Unauthenticated unless the password matches."""
    if not await password_matches(password_hash, password):
        raise Unauthenticated("bad-credentials", "agent code or password is wrong")


def new_session_token() -> str:
    return secrets.token_urlsafe(24)
