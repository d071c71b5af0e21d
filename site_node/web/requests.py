"""Reading the desktop API's requests: the session token, the client's address, the JSON body with
its bounds, the idempotency key, and checked fields. Every refusal is an InvalidArgument naming
the field."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request

from vcc.digits import is_digits
from vcc.errors import InvalidArgument
from vcc.https import LANGUAGE_COOKIE, LANGUAGES

COOKIE = "vcc_session"
# Ids that travel in a path or a query (customer ids, skill groups).
IDENT_FIELD = re.compile(r"^[A-Za-z0-9_.:-]+$")
MAX_BODY = 16 * 1024


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n"


def token(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.cookies.get(COOKIE, "")


def origin(request: Request) -> str:
    return request.client.host if request.client else ""


async def body_of(request: Request) -> dict[str, Any]:
    if request.method != "POST":
        return {}
    if not request.headers.get("content-type", "").startswith("application/json"):
        # Also what keeps other sites' forms out: a cross-site JSON post needs CORS, never granted.
        raise InvalidArgument("bad-content-type", "send the request body as application/json")
    length = request.headers.get("content-length", "")
    if is_digits(length) and int(length) > MAX_BODY:
        raise InvalidArgument("too-large", f"request body: at most {MAX_BODY} bytes")
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise InvalidArgument("too-large", f"request body: at most {MAX_BODY} bytes")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise InvalidArgument("bad-json", "request body: not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidArgument("bad-json", "request body: a JSON object")
    return body


def key_of(request: Request, body: dict[str, Any]) -> str:
    key = request.headers.get("idempotency-key") or body.get("idempotency_key", "")
    if not isinstance(key, str):
        raise InvalidArgument("bad-idempotency-key", "idempotency_key: a string")
    return key


def text(body: dict[str, Any], name: str, max_len: int, *, required: bool = True, key: str = "") -> str:
    value = body.get(name, "")
    key = key or name
    if not isinstance(value, str):
        raise InvalidArgument("bad-argument", f"{key}: a string")
    if required and not value.strip():
        raise InvalidArgument("bad-argument", f"{key}: required")
    if len(value) > max_len:
        raise InvalidArgument("bad-argument", f"{key}: at most {max_len} characters")
    return value


def choice(body: dict[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    value = body.get(name)
    if value not in allowed:
        raise InvalidArgument("bad-argument", f"{name}: one of {', '.join(allowed)}")
    return str(value)


def language(request: Request) -> str:
    lang = request.query_params.get("lang") or request.cookies.get(LANGUAGE_COOKIE, "")
    if lang in LANGUAGES:
        return lang
    accept = request.headers.get("accept-language", "").lower()
    return "en" if accept.startswith("en") else "zh"
