"""The site's audit journal of supervisor and administrator actions (SPEC F25, F45): who did what
to whom, when, from where, and whether it was allowed.

Entries come from the call control (Audit effects of what it did) and from the adapters (requests
refused for want of a role, which change nothing and so produce no effect). They are kept in a
bounded in-memory journal and logged; `forward` is the hook for central's audit log (another
part ships them there; until then it is None).
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace

from site_node.callcontrol.domain import Audit

log = logging.getLogger(__name__)
MAX_ENTRIES = 10_000


class SiteAudit:
    def __init__(self, site_id: str, forward: Callable[[Audit], None] | None = None) -> None:
        self.site_id = site_id
        self.entries: deque[Audit] = deque(maxlen=MAX_ENTRIES)
        # Central's audit log, once something ships entries there (called for every entry).
        self.forward = forward
        # Where the request being carried out came from (set by the adapter around it).
        self._origin = ""

    @contextlib.contextmanager
    def acting_from(self, origin: str) -> Iterator[None]:
        """Entries recorded inside (the call control's Audit effects) name this origin."""
        before, self._origin = self._origin, origin
        try:
            yield
        finally:
            self._origin = before

    def record(self, entry: Audit, origin: str = "") -> None:
        origin = origin or self._origin
        if origin and not entry.origin:
            entry = replace(entry, origin=origin)
        self.entries.append(entry)
        log.info(
            "audit site=%s actor=%s action=%s target=%s call=%s outcome=%s from=%s %s",
            self.site_id, entry.actor, entry.action, entry.target, entry.call_id, entry.outcome, entry.origin,
            entry.detail,
        )  # fmt: skip
        if self.forward is not None:
            self.forward(entry)
