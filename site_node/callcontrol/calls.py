"""The calls live at this site, the offer keys that made them, and what is remembered of the
calls that ended (so a re-sent offer finds its call, and a returning call continues its journal
numbers)."""

from __future__ import annotations

from typing import TypeVar

from site_node.callcontrol.domain import Call, Outcome
from vcc.errors import NotFound

# Remembered offer keys, so a re-sent offer attaches to its call instead of making another.
MAX_REMEMBERED_KEYS = 100_000
_V = TypeVar("_V")


class CallBook:
    def __init__(self, site_id: str) -> None:
        self.site_id = site_id
        self.live: dict[str, Call] = {}
        self._by_key: dict[str, str] = {}
        self._ended_keys: dict[str, tuple[str, Outcome]] = {}
        # Last journal number of calls that ended here: a call that comes back continues from it.
        self._ended_seq: dict[str, int] = {}

    def get(self, call_id: str) -> Call | None:
        return self.live.get(call_id)

    def call(self, call_id: str) -> Call:
        call = self.live.get(call_id)
        if call is None:
            raise NotFound("unknown-call", f"call_id: no live call {call_id!r} at site {self.site_id}")
        return call

    def key_used(self, key: str) -> bool:
        return key in self._by_key or key in self._ended_keys

    def call_for_key(self, key: str) -> str | None:
        """The call a previous offer with this key created, live or ended."""
        live = self._by_key.get(key)
        if live is not None:
            return live
        ended = self._ended_keys.get(key)
        return ended[0] if ended else None

    def ended_outcome(self, key: str) -> tuple[str, Outcome] | None:
        return self._ended_keys.get(key)

    def resume_seq(self, call: Call) -> None:
        """A call that was here before continues its journal numbers."""
        call.seq = self._ended_seq.pop(call.call_id, 0)

    def admit(self, call: Call, *, keyed: bool = True) -> None:
        self.live[call.call_id] = call
        if keyed:
            self._by_key[call.idempotency_key] = call.call_id

    def ended(self, call: Call, outcome: Outcome) -> None:
        """A call of our trunk ended: forget it, remember its key and journal number."""
        self.live.pop(call.call_id, None)
        self._by_key.pop(call.idempotency_key, None)
        self._ended_keys[call.idempotency_key] = (call.call_id, outcome)
        self._remember_seq(call)
        _bound(self._ended_keys)

    def left(self, call: Call) -> None:
        """A call served here for another site left: only its journal number is remembered."""
        del self.live[call.call_id]
        self._remember_seq(call)

    def next_seq_after_end(self, call_id: str) -> int | None:
        """The next journal number of a call that ended or left here (None: not remembered)."""
        seq = self._ended_seq.get(call_id)
        if seq is None:
            return None
        self._ended_seq[call_id] = seq + 1
        return seq + 1

    def _remember_seq(self, call: Call) -> None:
        self._ended_seq[call.call_id] = call.seq
        _bound(self._ended_seq)


def _bound(memory: dict[str, _V]) -> None:
    if len(memory) > MAX_REMEMBERED_KEYS:
        # dicts keep insertion order: forget the oldest.
        del memory[next(iter(memory))]
