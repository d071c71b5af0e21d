"""Callbacks and voicemail messages to and from the outbox's `open_items` rows (JSON), so the
lists a site holds survive its restart (the call control's `KeepOpen` effects); and the calls a
killed site left up, ended when it starts again."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from site_node.callcontrol.callbacks import Attempt, Callback
from site_node.callcontrol.domain import Effect, KeepOpen
from site_node.callcontrol.voicemail import Message
from site_node.records.outbox import KeptItem, Outbox
from vcc.rpc import timestamp
from vcc.v1 import common_pb2

if TYPE_CHECKING:
    # The runtime imports this module (kept_row): only its type is needed here.
    from site_node.runtime import SiteRuntime

log = logging.getLogger(__name__)


class BadOpenItem(ValueError):
    """A row the outbox kept that cannot be read back (written by another version, edited)."""


def kept_row(keep: KeepOpen) -> KeptItem:
    body = None if keep.item is None else json.dumps(dataclasses.asdict(keep.item), sort_keys=True)
    return KeptItem(keep.kind, keep.item_id, keep.call_id, body)


def item_of(row: KeptItem) -> Callback | Message:
    if row.body is None:
        raise BadOpenItem(f"{row.kind} {row.item_id}: closed, nothing to restore")
    try:
        data: dict[str, Any] = json.loads(row.body)
        if row.kind == "callback":
            data["attempts"] = tuple(Attempt(**a) for a in data.get("attempts", ()))
            return Callback(**data)
        if row.kind == "voicemail":
            return Message(**data)
    except (TypeError, ValueError) as exc:
        raise BadOpenItem(f"{row.kind} {row.item_id}: {exc}") from None
    raise BadOpenItem(f"{row.kind} {row.item_id}: unknown kind")


def restore_open_items(runtime: SiteRuntime, outbox: Outbox) -> int:
    """At start: the callbacks and messages the last run left open go back into the call control;
    how many. A row that cannot be read, or whose call's last journal number is not known, is
    left out loudly (restoring it could reuse a number central has)."""
    left = outbox.left_open
    items: list[Callback | Message] = []
    for row in left.items:
        try:
            items.append(item_of(row))
        except BadOpenItem as exc:
            log.error("outbox %s: an open item cannot be restored: %s", outbox.path, exc)
    left_out: list[str] = []

    def restore(now: float) -> list[Effect]:
        out, effects = runtime.sb.restore_open(now, items, left.last_seq)
        left_out.extend(out)
        return effects

    runtime.do(restore)
    for item_id in left_out:
        log.error("open item %s not restored: its call's last journal number was not kept", item_id)
    restored = len(items) - len(left_out)
    if items:
        log.info("site %s: %d callbacks and voicemail messages restored", runtime.sb.site_id, restored)
    return restored


# How far a call left up had got -> the outcome its end says. 'routed': offered to another city,
# whose own events tell central whether an agent there answered (the record's outcome is then
# central's: answered if any site journaled an answer).
_LEFT_UP_OUTCOME = {
    "home": common_pb2.CALL_OUTCOME_FAILED,
    "answered": common_pb2.CALL_OUTCOME_ANSWERED,
    "routed": common_pb2.CALL_OUTCOME_UNSPECIFIED,
}
LEFT_UP_REASON = "site-restarted"


def end_calls_left_up(site_id: str, outbox: Outbox, now: float | None = None) -> int:
    """At start, before anything else is journaled: the calls the last run left up (it was killed
    mid-call; their callers' dialogs and media died with it) get their ENDED event, the next
    journal number of each, reason `site-restarted`; how many. A call with open items (a callback
    or message) continues its numbers after that end."""
    left = outbox.left_open
    at = timestamp(time.time() if now is None else now)
    events = []
    for call_id, (seq, reached) in sorted(left.live_calls.items()):
        events.append(
            common_pb2.CallEvent(
                call_id=call_id, site_id=site_id, seq=seq + 1, kind=common_pb2.CALL_EVENT_KIND_ENDED, at=at,
                outcome=_LEFT_UP_OUTCOME.get(reached, common_pb2.CALL_OUTCOME_FAILED),
                data={"reason": LEFT_UP_REASON, "reached": reached},
            )
        )  # fmt: skip
        if call_id in left.last_seq:
            left.last_seq[call_id] = max(left.last_seq[call_id], seq + 1)
    if events:
        outbox.append(events)
        log.warning("site %s: %d calls the last run left up ended (%s)", site_id, len(events), LEFT_UP_REASON)
    left.live_calls.clear()
    return len(events)
