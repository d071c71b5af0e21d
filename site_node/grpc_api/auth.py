"""Agent credentials: four-digit code, six-digit password checked against a slow salted hash."""

from __future__ import annotations

import asyncio
import functools
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


async def password_matches(password_hash: str, password: str) -> bool:
    """The slow hash, off the event loop."""

    def verify() -> bool:
        try:
            return _HASHER.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)


async def verify_password(password_hash: str, password: str) -> None:
    """Raise Unauthenticated unless the password matches."""
    if not await password_matches(password_hash, password):
        raise Unauthenticated("bad-credentials", "agent code or password is wrong")


@functools.cache
def decoy_hash() -> str:
    """Checked for a code that does not exist: it costs what a real check costs (no timing tell)."""
    return _HASHER.hash(secrets.token_hex(8))


def new_session_token() -> str:
    return secrets.token_urlsafe(24)
