"""Agent credentials: four-digit code, six-digit password checked against a slow salted hash."""

from __future__ import annotations

import asyncio
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from vcc.errors import InvalidArgument, Unauthenticated

CODE = re.compile(r"^\d{4}$")
PASSWORD = re.compile(r"^\d{6}$")

# argon2id at OWASP's minimum (19 MiB, 2 passes): slow for an attacker, fine for a login.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)


def hash_password(password: str) -> str:
    if not PASSWORD.match(password):
        raise InvalidArgument("bad-password-format", "password: six digits")
    return _HASHER.hash(password)


def check_format(agent_code: str, password: str) -> None:
    if not CODE.match(agent_code):
        raise InvalidArgument("bad-agent-code", "agent_code: four digits")
    if not PASSWORD.match(password):
        raise InvalidArgument("bad-password-format", "password: six digits")


async def verify_password(password_hash: str, password: str) -> None:
    """Raise Unauthenticated unless the password matches; the hash runs off the event loop."""

    def verify() -> bool:
        try:
            return _HASHER.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    if not await asyncio.to_thread(verify):
        raise Unauthenticated("wrong-password", "agent code or password is wrong")


def new_session_token() -> str:
    return secrets.token_urlsafe(24)
