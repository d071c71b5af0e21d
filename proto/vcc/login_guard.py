"""Password guessing, bounded: failures counted per agent code and per source, then lockouts.

Pure: time comes in as an argument, nothing is logged; the lockouts it returns are audited by
the caller (a site's agent logins, central's dashboard logins). A code that does not exist is
counted like one that does, so a lockout says nothing about which codes exist. docs/SECURITY.md
has the figures this policy gives an attacker.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass


@dataclass(frozen=True)
class LoginPolicy:
    # One agent code: this many failures within the window lock it for `code_lockout_s`.
    code_failures: int = 5
    code_window_s: float = 900.0
    code_lockout_s: float = 900.0
    # One source (a desktop server's host): the same, for guesses spread over many codes.
    source_failures: int = 20
    source_window_s: float = 600.0
    source_lockout_s: float = 600.0
    # Keys remembered at most (the oldest forgotten first): bounded memory under a spray.
    max_tracked: int = 100_000


@dataclass(frozen=True)
class Lockout:
    kind: str  # "code" or "source"
    key: str
    until: float


class _Counter:
    """Failure times of one key within its window, and the end of its lockout."""

    __slots__ = ("failures", "locked_until")

    def __init__(self) -> None:
        self.failures: deque[float] = deque()
        self.locked_until = 0.0


class LoginGuard:
    def __init__(self, policy: LoginPolicy = LoginPolicy()) -> None:
        self.policy = policy
        self._codes: OrderedDict[str, _Counter] = OrderedDict()
        self._sources: OrderedDict[str, _Counter] = OrderedDict()

    def refusal(self, now: float, code: str, source: str) -> str:
        """ "" when a login may be tried now; else why not ("code-locked", "source-locked")."""
        if self._locked(self._codes, code, now):
            return "code-locked"
        if self._locked(self._sources, source, now):
            return "source-locked"
        return ""

    def failed(self, now: float, code: str, source: str) -> list[Lockout]:
        """Count a failed login; the lockouts it starts (each once)."""
        p = self.policy
        out = []
        for kind, table, key, limit, window, lock in (
            ("code", self._codes, code, p.code_failures, p.code_window_s, p.code_lockout_s),
            ("source", self._sources, source, p.source_failures, p.source_window_s, p.source_lockout_s),
        ):
            counter = self._counter(table, key)
            while counter.failures and counter.failures[0] <= now - window:
                counter.failures.popleft()
            counter.failures.append(now)
            if len(counter.failures) >= limit and counter.locked_until <= now:
                counter.locked_until = now + lock
                counter.failures.clear()
                out.append(Lockout(kind, key, counter.locked_until))
        return out

    def succeeded(self, code: str) -> None:
        """The right password: the code's failures are forgiven (the source's are not)."""
        self._codes.pop(code, None)

    def _counter(self, table: OrderedDict[str, _Counter], key: str) -> _Counter:
        counter = table.get(key)
        if counter is None:
            counter = table[key] = _Counter()
            if len(table) > self.policy.max_tracked:
                table.popitem(last=False)
        else:
            table.move_to_end(key)
        return counter

    @staticmethod
    def _locked(table: OrderedDict[str, _Counter], key: str, now: float) -> bool:
        counter = table.get(key)
        return counter is not None and counter.locked_until > now
