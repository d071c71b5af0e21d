"""What a flow run waits for from the caller: keys (a menu's or an entry's, typed ahead of the
prompt that asks for them and taken in order), a look-up's answer, or its deadline."""

from __future__ import annotations

from typing import Literal

Waiting = Literal["idle", "digits", "lookup", "ended"]


class Listening:
    def __init__(self) -> None:
        self.what: Waiting = "idle"
        self.deadline: float | None = None
        self.timeout_s = 0.0
        # Keys typed ahead of the prompt that asks for them (barge-in), taken in order.
        self.typed = ""
        # A terminator that belongs to the entry just ended, not to the next input.
        self.swallow = ""
        # The entry so far, and the wrong entries and silences at the current input.
        self.collected = ""
        self.retries = 0

    def wait(self, what: Waiting, timeout_s: float, now: float) -> None:
        self.what = what
        self.timeout_s = timeout_s
        self.deadline = now + timeout_s

    def played(self, now: float) -> None:
        """The prompts before an input ended: the caller's time to answer counts from now."""
        if self.what == "digits":
            self.deadline = now + self.timeout_s

    def due(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def next_key(self) -> str | None:
        """The next key typed for the input waiting now (None: none left, or no input waits)."""
        while self.typed and self.what == "digits":
            key, self.typed = self.typed[0], self.typed[1:]
            if key.isspace():
                continue
            swallow, self.swallow = self.swallow, ""
            if key == swallow:
                continue
            return key
        return None

    def stop(self) -> None:
        """The call left the flow: keys typed since are heard by nobody."""
        self.what = "ended"
        self.deadline = None
        self.typed = ""
