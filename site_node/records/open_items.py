"""Callbacks and voicemail messages to and from the outbox's `open_items` rows (JSON), so the
lists a site holds survive its restart (the call control's `KeepOpen` effects)."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import TYPE_CHECKING, Any

from site_node.callcontrol.callbacks import Attempt, Callback
from site_node.callcontrol.domain import Effect, KeepOpen
from site_node.callcontrol.voicemail import Message
from site_node.records.outbox import KeptItem, Outbox

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
