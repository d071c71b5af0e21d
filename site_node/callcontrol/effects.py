"""The effects of one operation, in order, and the numbering of each call's journal entries."""

from __future__ import annotations

from dataclasses import dataclass, field

from site_node.callcontrol.callbacks import Callback
from site_node.callcontrol.domain import Call, Effect, Journal, KeepOpen, RecordedEvent
from site_node.callcontrol.voicemail import Message
from vcc.call_events import EventKind


@dataclass
class Effects:
    site_id: str
    # False: the journal numbers advance but no RecordedEvent is built (the model engine never
    # reads them and would spend much of its time building them).
    journaling: bool = True
    items: list[Effect] = field(default_factory=list)

    def add(self, effect: Effect) -> None:
        self.items.append(effect)

    def journal(self, call: Call, kind: EventKind, at: float, **fields: object) -> None:
        call.seq += 1
        if not self.journaling:
            return
        data = fields.pop("data", ())
        event = RecordedEvent(call.call_id, self.site_id, call.seq, kind, at, data=tuple(data), **fields)  # type: ignore[arg-type]
        self.items.append(Journal(event))

    def keep(self, kind: str, item_id: str, call_id: str, item: Callback | Message | None) -> None:
        """A callback or message changed: kept with this operation's journal entries (not for
        the model engine, which keeps nothing)."""
        if self.journaling:
            self.items.append(KeepOpen(kind, item_id, call_id, item))
