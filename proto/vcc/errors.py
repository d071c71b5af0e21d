"""Errors that cross a process boundary, and the one table that maps them to gRPC status codes.

Every error has a stable kebab-case id (part of the API: never renamed) sent to clients in
the trailing metadata `vcc-error-id`, beside the human-readable message.
"""

from __future__ import annotations

from typing import ClassVar

import grpc

ERROR_ID_KEY = "vcc-error-id"


class VccError(Exception):
    """Base of every error vcc reports to a client."""

    status: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL

    def __init__(self, error_id: str, message: str) -> None:
        super().__init__(message)
        self.error_id = error_id
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} [{self.error_id}]"


class InvalidArgument(VccError):
    status = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(VccError):
    status = grpc.StatusCode.NOT_FOUND


class AlreadyExists(VccError):
    status = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(VccError):
    status = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(VccError):
    status = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(VccError):
    status = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(VccError):
    status = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(VccError):
    status = grpc.StatusCode.UNAVAILABLE


_BY_STATUS: dict[grpc.StatusCode, type[VccError]] = {
    cls.status: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Unauthenticated,
        PermissionDenied,
        ResourceExhausted,
        Unavailable,
    )
}


def from_rpc_error(exc: grpc.aio.AioRpcError) -> VccError:
    """The client edge: turn a failed RPC back into the error the server raised."""
    error_id = "unknown"
    for key, value in exc.trailing_metadata() or ():
        if key == ERROR_ID_KEY:
            error_id = str(value)
    cls = _BY_STATUS.get(exc.code(), VccError)
    return cls(error_id, exc.details() or exc.code().name)
