"""The one table that maps vcc errors to HTTP statuses at the desktop server's edge.

The body is always `{"error": {"id": ..., "message": ...}}` with the same stable error ids as the
gRPC API (vcc/errors.py); nothing else (no stack trace) ever reaches the page.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

from vcc.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    VccError,
)

_STATUS: dict[type[VccError], int] = {
    InvalidArgument: 400,
    Unauthenticated: 401,
    PermissionDenied: 403,
    NotFound: 404,
    AlreadyExists: 409,
    FailedPrecondition: 409,
    ResourceExhausted: 429,
    Unavailable: 503,
}
# Acting on a call that is another agent's is a matter of permission to the web client (the call
# control reports it as a precondition: the call is simply not yours); so is another's voicemail.
_BY_ID = {"not-your-call": 403, "message-not-yours": 403}


def status_of(exc: VccError) -> int:
    return _BY_ID.get(exc.error_id) or _STATUS.get(type(exc), 500)


def error_response(exc: VccError) -> JSONResponse:
    return JSONResponse({"error": {"id": exc.error_id, "message": exc.message}}, status_code=status_of(exc))


def internal_error() -> JSONResponse:
    return JSONResponse(
        {"error": {"id": "internal", "message": "something went wrong at the site; try again"}},
        status_code=500,
    )
