"""The leader's customers by phone number (the screen pop's look-up), invalidated by every write.

Every call's screen pop asks central for the caller's record: a database transaction each (about
a ninth of central's CPU under load, most of it aiosqlite's thread hand-offs). The leader keeps
what it looked up, found or not, and forgets all of it whenever a write goes through this
replica's store (before the write starts and again once it ended, committed or not), so nothing a
write replaced is served after the write returned. A look-up that read the database while a
write ran, or before one started and ended, keeps nothing of what it read (the generation it
started at has gone).

Other replicas write through their own store (a back-office tool pointed at a follower): what
they change reaches the leader's screen pop within `ttl_s` (30 s) at most. Only a leader keeps entries
(`enabled`), and a new term starts empty.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

from central.customers import Customer

# Numbers kept (the least recently used go first): a Customer is about 1 KB.
CUSTOMERS_KEPT = 20_000
# How long an entry is trusted at most: the bound for writes made through another replica. A hit
# does not renew it (a number asked all day is read again every CUSTOMER_TTL_S).
CUSTOMER_TTL_S = 30.0
# "0": every look-up reads the database (the way before; a benchmark's comparison).
CUSTOMER_CACHE_ENV = "VCC_CUSTOMER_CACHE"


class CustomerCache:
    def __init__(
        self,
        kept: int = CUSTOMERS_KEPT,
        ttl_s: float = CUSTOMER_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kept = kept
        self._ttl_s = ttl_s
        self._clock = clock
        # phone -> (kept until, the customer or None for "no such number").
        self._entries: OrderedDict[str, tuple[float, Customer | None]] = OrderedDict()
        self._generation = 0
        self._writes = 0
        self.enabled = False
        # Figures: look-ups answered from here, and those that read the database.
        self.hits = 0
        self.misses = 0

    def get(self, phone: str) -> tuple[bool, Customer | None]:
        """(True, the customer or None) when known here, else (False, None)."""
        entry = self._entries.get(phone) if self.enabled else None
        if entry is None or entry[0] < self._clock():
            self.misses += 1
            return False, None
        self._entries.move_to_end(phone)
        self.hits += 1
        return True, entry[1]

    def ticket(self) -> int | None:
        """Taken before reading the database: what `keep` needs (None: keep nothing)."""
        return self._generation if self.enabled and not self._writes else None

    def keep(self, ticket: int | None, phone: str, customer: Customer | None) -> None:
        """Remember what a look-up read, unless a write began since its ticket."""
        if ticket is None or ticket != self._generation or self._writes or not self.enabled:
            return
        self._entries[phone] = (self._clock() + self._ttl_s, customer)
        self._entries.move_to_end(phone)
        while len(self._entries) > self._kept:
            self._entries.popitem(last=False)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Around a write: nothing kept before it is served after, nothing read during it is kept."""
        self._forget()
        self._writes += 1
        try:
            yield
        finally:
            self._writes -= 1
            self._forget()

    def lead(self, leading: bool) -> None:
        """On (a leader's term begins) or off (deposed, or another term): empty either way."""
        self.enabled = leading
        self._forget()

    def _forget(self) -> None:
        self._generation += 1
        self._entries.clear()
