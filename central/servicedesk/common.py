"""What the service desk's stores share: page tokens, idempotency keys, generated ids."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import secrets
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from central.db import models
from vcc.errors import AlreadyExists, InvalidArgument

IDEMPOTENCY = models.Base.metadata.tables["idempotency_keys"]
MAX_IDEMPOTENCY_KEY = 128
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50


def new_id(prefix: str) -> str:
    """A random id: no sequence to contend on, and not guessable from its neighbours."""
    return f"{prefix}{secrets.token_hex(6).upper()}"


def page_size(requested: int) -> int:
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    if not 0 < requested <= MAX_PAGE_SIZE:
        raise InvalidArgument("bad-page-size", f"page_size: 1 to {MAX_PAGE_SIZE} (0 for {DEFAULT_PAGE_SIZE})")
    return requested


def encode_token(kind: str, values: list[Any]) -> str:
    raw = json.dumps([kind, *values], separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(kind: str, token: str, types: tuple[type, ...]) -> list[Any]:
    """The keyset values of a token from `encode_token(kind, ...)`; InvalidArgument otherwise."""
    bad = InvalidArgument("bad-page-token", "page_token: not a token from a previous page of this list")
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, TypeError) as exc:
        raise bad from exc
    if not isinstance(decoded, list) or len(decoded) != len(types) + 1 or decoded[0] != kind:
        raise bad
    values = decoded[1:]
    for value, want in zip(values, types, strict=True):
        if want is float:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise bad
        elif not isinstance(value, want) or isinstance(value, bool):
            raise bad
    return [float(v) if t is float else v for v, t in zip(values, types, strict=True)]


def request_hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def check_idempotency_key(key: str) -> None:
    if len(key) > MAX_IDEMPOTENCY_KEY:
        raise InvalidArgument(
            "bad-idempotency-key", f"idempotency_key: at most {MAX_IDEMPOTENCY_KEY} characters"
        )


async def remembered(conn: AsyncConnection, scope: str, key: str, digest: str) -> str | None:
    """The id a create with this key made before (same request), None for a new key.

    In the create's own transaction: two creates with one key serialize on its row.
    """
    if not key:
        return None
    row = (
        await conn.execute(
            sa.select(IDEMPOTENCY.c.request_hash, IDEMPOTENCY.c.result_id).where(
                IDEMPOTENCY.c.scope == scope, IDEMPOTENCY.c.key == key
            )
        )
    ).first()
    if row is None:
        return None
    if row.request_hash != digest:
        raise AlreadyExists("idempotency-key-reused", "idempotency_key: already used for a different request")
    return str(row.result_id)


async def remember(
    conn: AsyncConnection, scope: str, key: str, digest: str, result_id: str, *, now: float
) -> None:
    if key:
        await conn.execute(
            sa.insert(IDEMPOTENCY).values(
                scope=scope, key=key, request_hash=digest, result_id=result_id, created_at=now
            )
        )


def like_pattern(text: str) -> str:
    """A LIKE pattern for text anywhere in a column (the user's % and _ taken literally)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
