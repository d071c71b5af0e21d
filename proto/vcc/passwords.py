"""Slow salted password hashes (argon2id, PHC strings), checked off the event loop: one place for
agents' passwords at a site and operators' passwords at central's dashboard."""

from __future__ import annotations

import asyncio
import functools
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# argon2id at OWASP's minimum (19 MiB, 2 passes): slow for an attacker, fine for a login.
HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)


def hash_password(password: str) -> str:
    return HASHER.hash(password)


async def password_matches(password_hash: str, password: str) -> bool:
    """The slow hash, off the event loop."""

    def verify() -> bool:
        try:
            return HASHER.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)


@functools.cache
def decoy_hash() -> str:
    """Checked for a name that does not exist: it costs what a real check costs (no timing tell)."""
    return HASHER.hash(secrets.token_hex(8))
