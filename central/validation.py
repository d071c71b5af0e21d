"""Checks on requests from outside, done before anything is stored (pure)."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from vcc.errors import InvalidArgument, NotFound
from vcc.v1 import central_pb2, common_pb2

MAX_BATCH = 5000
MAX_CALL_ID = 128
# seq is stored as a signed 64-bit integer.
MAX_SEQ = 2**63 - 1
MAX_PAGE_SIZE = 1000
# Numbers in one LookupCustomers (the screen pops of calls a site took in together).
MAX_LOOKUPS = 100
DEFAULT_PAGE_SIZE = 100
PHONE = re.compile(r"[0-9]{3,20}")
# Built once: `Enum.values()` builds a fresh list at each call (it was 3 % of central's CPU).
_KINDS = frozenset(common_pb2.CallEventKind.values()) - {common_pb2.CALL_EVENT_KIND_UNSPECIFIED}
# SITE_LOST is central's own closure of a lost city's call (central.lost_sites): never a site's word.
_OUTCOMES = frozenset(common_pb2.CallOutcome.values()) - {common_pb2.CALL_OUTCOME_SITE_LOST}


def check_ingest(request: central_pb2.IngestCallEventsRequest, known_sites: Collection[str]) -> None:
    """The whole batch is refused on the first bad event: a site's outbox sends it again fixed, or never."""
    if request.site_id not in known_sites:
        raise NotFound("unknown-site", f"site_id: no site {request.site_id!r} in the province config")
    if not request.events:
        raise InvalidArgument("empty-batch", "events: a batch has at least one event")
    if len(request.events) > MAX_BATCH:
        raise InvalidArgument(
            "batch-too-large", f"events: at most {MAX_BATCH} per batch, got {len(request.events)}"
        )
    for i, e in enumerate(request.events):
        _check_event(i, e, request.site_id)


def _check_event(i: int, e: common_pb2.CallEvent, site_id: str) -> None:
    where = f"events[{i}]"
    if e.site_id != site_id:
        raise InvalidArgument(
            "event-site-mismatch", f"{where}.site_id: {e.site_id!r} is not the batch's site {site_id!r}"
        )
    if not e.call_id:
        raise InvalidArgument("missing-call-id", f"{where}.call_id: required")
    if len(e.call_id) > MAX_CALL_ID:
        raise InvalidArgument("bad-call-id", f"{where}.call_id: at most {MAX_CALL_ID} characters")
    if e.seq == 0 or e.seq > MAX_SEQ:
        raise InvalidArgument("bad-seq", f"{where}.seq: must be 1 or more (and fit 63 bits)")
    if e.kind not in _KINDS:
        raise InvalidArgument("bad-event-kind", f"{where}.kind: must be a known, specified event kind")
    if e.outcome not in _OUTCOMES:
        raise InvalidArgument("bad-outcome", f"{where}.outcome: unknown outcome {e.outcome}")
    if not e.HasField("at"):
        raise InvalidArgument("missing-event-time", f"{where}.at: required")


def check_phone(phone: str) -> None:
    if not PHONE.fullmatch(phone):
        raise InvalidArgument("bad-phone", "phone: 3 to 20 digits")


def check_phones(phones: Sequence[str]) -> None:
    """A batch of screen pops: 1 to MAX_LOOKUPS numbers, each one a phone number."""
    if not phones or len(phones) > MAX_LOOKUPS:
        raise InvalidArgument("bad-phones", f"phones: 1 to {MAX_LOOKUPS} numbers, got {len(phones)}")
    for i, phone in enumerate(phones):
        if not PHONE.fullmatch(phone):
            raise InvalidArgument("bad-phone", f"phones[{i}]: 3 to 20 digits")


def check_call_id(call_id: str) -> None:
    if not call_id or len(call_id) > MAX_CALL_ID:
        raise InvalidArgument("bad-call-id", f"call_id: 1 to {MAX_CALL_ID} characters")


def page_size(requested: int) -> int:
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    if requested > MAX_PAGE_SIZE:
        raise InvalidArgument("bad-page-size", f"page_size: 1 to {MAX_PAGE_SIZE} (0 for {DEFAULT_PAGE_SIZE})")
    return requested
