"""Bounds on what callers, agents and peers may hand the call control (checked before anything
changes)."""

from __future__ import annotations

from collections.abc import Mapping

from vcc.errors import InvalidArgument

MAX_ATTACHED_ITEMS = 64
MAX_ATTACHED_BYTES = 8192
ANI_CHARS = frozenset("0123456789+*#")
DIGIT_CHARS = frozenset("0123456789*#")
MAX_REASON_LENGTH = 64


def check_attached(
    attached: Mapping[str, str], what: str = "attached_data: at most 64 entries and 8 KiB"
) -> None:
    size = sum(len(k) + len(v) for k, v in attached.items())
    if len(attached) > MAX_ATTACHED_ITEMS or size > MAX_ATTACHED_BYTES:
        raise InvalidArgument("attached-data-too-large", what)


def check_reason(ready: bool, reason: str) -> None:
    if not ready and not reason:
        raise InvalidArgument("reason-required", "reason_code: required for not ready")
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidArgument("bad-reason-code", f"reason_code: at most {MAX_REASON_LENGTH} characters")


def check_digits(digits: str) -> None:
    if not digits or len(digits) > 32 or not set(digits) <= DIGIT_CHARS:
        raise InvalidArgument("bad-digits", "digits: 1 to 32 of 0-9 * #")
