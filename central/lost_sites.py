"""Calls left open at a city that is down, and their closure once an operator says it is lost.

A call's caller (its trunk, its dialog) is held by the city it entered. When that city dies,
nobody else can end the call: if the city comes back it ends what its last run left up
(site_node/records/open_items.py), and its own events are the call's end. If it never comes
back, the record would stay open for ever. So central shows such a call as *open at a city that
is down since T* (never an outcome it invents), and an operator who decommissions the city
closes them (`vcc records close-lost-site`): one closure event per call, written by central
under its own site id (central.records.CENTRAL_SITE, seq 1: written at most once), outcome
SITE_LOST, audited. The closure is final (central.records.fold): the city's own events that
still arrive later are kept in the journal and end nothing again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from central.audit import AuditEntry
from central.db import models
from central.membership_view import SiteLiveness
from central.records import CENTRAL_SITE, CallEvent, CallRecord, CallState, Outcome
from central.store import Store
from vcc.call_events import EventKind
from vcc.errors import FailedPrecondition, NotFound, Unavailable

log = logging.getLogger(__name__)

CLOSURE_REASON = "site-lost"
AUDIT_ACTION = "site-lost-close"
# Closures go to the store in batches of this many calls (one transaction each).
BATCH = 500
# A closure sorts just after the last event central held of the call.
_AFTER_S = 1e-6
_CALLS = models.Base.metadata.tables["calls"]


@dataclass(frozen=True)
class DownSite:
    """The city that holds an open call is down, since `down_since` (None: not known)."""

    site_id: str
    down_since: float | None


class SiteUp(FailedPrecondition):
    def __init__(self, site_id: str) -> None:
        super().__init__(
            "site-up",
            f"site {site_id} is up (its membership lease lives): its calls are its own to end; "
            "close a city's calls only once it is down for good",
        )


class MembershipUnknown(Unavailable):
    def __init__(self, site_id: str) -> None:
        super().__init__(
            "membership-unknown",
            f"central cannot see etcd now, so it cannot tell whether site {site_id} is down; try again",
        )


def open_at_down_site(record: CallRecord, sites: Sequence[SiteLiveness]) -> DownSite | None:
    """The down city this open call waits on, or None (ended, or its city is up or unknown)."""
    if record.state is CallState.ENDED:
        return None
    for site in sites:
        if site.site_id == record.entry_site_id:
            return None if site.up else DownSite(site.site_id, site.down_since)
    return None


def closure(record: CallRecord, closed_at: float, actor: str, reason: str) -> CallEvent:
    """Central's SITE_LOST end of one open call, stamped just after the last moment it was heard of
    (its talk and wait are then what is known, not stretched to the operator's command)."""
    last = max((e.at for e in record.events), default=record.first_event_at)
    return CallEvent(
        call_id=record.call_id,
        site_id=CENTRAL_SITE,
        seq=1,
        kind=EventKind.ENDED,
        at=last + _AFTER_S,
        outcome=Outcome.SITE_LOST,
        data={
            "reason": CLOSURE_REASON,
            "site": record.entry_site_id,
            "closed_at": f"{closed_at:.6f}",
            "closed_by": actor,
            "note": reason,
        },
    )


class LostSites:
    """Finds a down city's open calls and closes them, on the leader's fenced store."""

    def __init__(
        self,
        store: Store,
        sites: Callable[[], list[SiteLiveness]],
        audit: Callable[[AuditEntry], Awaitable[None]] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._sites = sites
        self._audit = audit
        self._clock = clock

    def down(self, record: CallRecord) -> DownSite | None:
        return open_at_down_site(record, self._sites())

    async def open_call_ids(self, site_id: str) -> list[str]:
        """Calls that entered at `site_id` and have not ended, in arrival order."""
        query = (
            sa.select(_CALLS.c.call_id)
            .where(_CALLS.c.entry_site_id == site_id, _CALLS.c.state != CallState.ENDED.value)
            .order_by(_CALLS.c.first_event_at, _CALLS.c.call_id)
        )

        async def work(conn: AsyncConnection) -> list[str]:
            return [str(r[0]) for r in (await conn.execute(query)).all()]

        return await self._store.transaction(work)

    def check_down(self, site_id: str) -> SiteLiveness:
        """The site, if etcd says it is down; else a clear refusal."""
        site = next((s for s in self._sites() if s.site_id == site_id), None)
        if site is None:
            raise NotFound("unknown-site", f"site_id: no site {site_id!r} in the province config")
        if site.up:
            raise SiteUp(site_id)
        if not site.down_in_etcd:
            raise MembershipUnknown(site_id)
        return site

    async def close(
        self, site_id: str, actor: str, source: str, reason: str
    ) -> tuple[list[str], float | None]:
        """Close every call still open at the down city `site_id`: (the calls closed, down since).
        Refused (and audited) while the site is up or its state is unknown."""
        try:
            site = self.check_down(site_id)
        except (SiteUp, MembershipUnknown) as exc:
            await self._record(actor, source, site_id, "refused", {"reason": exc.error_id, "note": reason})
            raise
        now = self._clock()
        closed: list[str] = []
        call_ids = await self.open_call_ids(site_id)
        for start in range(0, len(call_ids), BATCH):
            events = []
            for call_id in call_ids[start : start + BATCH]:
                record = await self._store.get_call(call_id)
                if record is not None and record.state is not CallState.ENDED:
                    events.append(closure(record, now, actor, reason))
            if events:
                await self._store.ingest(CENTRAL_SITE, events)
                closed += [e.call_id for e in events]
        detail = {"calls": str(len(closed)), "note": reason, "first_calls": ",".join(closed[:20])}
        if site.down_since is not None:
            detail["down_since"] = f"{site.down_since:.3f}"
        await self._record(actor, source, site_id, "ok", detail)
        log.warning(
            "site %s lost for good: %d open calls closed (%s) by %s", site_id, len(closed), reason, actor
        )
        return closed, site.down_since

    async def _record(
        self, actor: str, source: str, site_id: str, outcome: str, detail: dict[str, str]
    ) -> None:
        if self._audit is not None:
            await self._audit(
                AuditEntry(
                    self._clock(), actor, AUDIT_ACTION, f"site {site_id}", source, outcome, detail=detail
                )
            )
