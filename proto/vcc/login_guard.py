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


def limits(policy: LoginPolicy, kind: str) -> tuple[int, float, float]:
    """(failures, window, lockout) of a kind of key: "code" or "source"."""
    if kind == "code":
        return policy.code_failures, policy.code_window_s, policy.code_lockout_s
    return policy.source_failures, policy.source_window_s, policy.source_lockout_s


def count_failure(
    policy: LoginPolicy, kind: str, failures: tuple[float, ...], locked_until: float, now: float
) -> tuple[tuple[float, ...], float, bool]:
    """One more failure of a key: its failures within the window after it, the end of its lockout,
    and whether this failure started the lockout (the failures then start again)."""
    limit, window, lock = limits(policy, kind)
    kept = (*(t for t in failures if t > now - window), now)
    if len(kept) >= limit and locked_until <= now:
        return (), now + lock, True
    return kept, locked_until, False


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
        out = []
        for kind, table, key in (("code", self._codes, code), ("source", self._sources, source)):
            counter = self._counter(table, key)
            failures, counter.locked_until, locked = count_failure(
                self.policy, kind, tuple(counter.failures), counter.locked_until, now
            )
            counter.failures = deque(failures)
            if locked:
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
