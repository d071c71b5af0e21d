"""The site's one audit path (SPEC F25, F45, issue 11): who did what to whom, when, from where,
and whether it was allowed, for every kind of entry: the call control's (Audit effects of
supervisor actions), the adapters' (requests refused for want of a role, administrators' changes)
and the credential check's (logins, failed logins, lockouts), and the site's own alerts.

Each entry is kept in a bounded in-memory journal (the console's `/api/audit`), logged, and handed
to the sink that ships it to central's audit log (site_node.links.audit_sink.AuditSink).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Protocol

from site_node.callcontrol.domain import Audit

log = logging.getLogger(__name__)
MAX_ENTRIES = 10_000


class Sink(Protocol):
    """Where entries go on to central (AuditSink)."""

    def record(
        self,
        actor: str,
        action: str,
        *,
        target: str = "",
        source: str = "",
        outcome: str = "ok",
        detail: dict[str, str] | None = None,
    ) -> None: ...


class SiteAudit:
    def __init__(
        self, site_id: str, sink: Sink | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.site_id = site_id
        self.entries: deque[Audit] = deque(maxlen=MAX_ENTRIES)
        # Central's audit log (None: kept and logged here only, as in unit tests).
        self.sink = sink
        self._clock = clock
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

    async def delivered(self, timeout_s: float) -> bool:
        """Whether central took every entry recorded so far (True without a sink: nothing to wait for)."""
        wait = getattr(self.sink, "delivered", None)
        return True if wait is None else bool(await wait(timeout_s))

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
        if self.sink is not None:
            detail = (
                {"call_id": entry.call_id, "detail": entry.detail}
                if entry.call_id
                else {"detail": entry.detail}
            )
            self.sink.record(
                f"agent:{entry.actor}", entry.action, target=entry.target, source=entry.origin,
                outcome="ok" if entry.outcome == "done" else entry.outcome, detail=detail,
            )  # fmt: skip

    def event(
        self,
        actor: str,
        action: str,
        *,
        target: str = "",
        source: str = "",
        outcome: str = "ok",
        detail: dict[str, str] | None = None,
    ) -> None:
        """An entry named as central keeps it (actor `agent:<code>` or `site/<id>`): logins, failed
        logins, lockouts, the site's alerts. Journaled here too."""
        text = " ".join(f"{k}={v}" for k, v in sorted((detail or {}).items()))
        self.entries.append(
            Audit(self._clock(), actor.removeprefix("agent:"), action, target, detail=text,
                  outcome="done" if outcome == "ok" else outcome, origin=source)
        )  # fmt: skip
        if self.sink is not None:
            self.sink.record(actor, action, target=target, source=source, outcome=outcome, detail=detail)
