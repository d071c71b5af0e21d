"""Central's audit log: append-only, idempotent by entry id; and its gRPC service.

Entries come from the sites (logins, failed logins, lockouts, supervisor actions: AuditService.
RecordAudit, each site only for itself) and from central itself (certificates refused by the
authorization table, `record_denied`). Nothing here updates or deletes a row.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from central.db.models import AuditLogEntry, Base
from central.store import _is_transient
from vcc import person_assertion
from vcc.authz import Identity, require_site
from vcc.errors import InvalidArgument
from vcc.person_assertion import ACTING, Revocations
from vcc.rpc import maps_errors, timestamp, unix_s
from vcc.v1 import audit_pb2, audit_pb2_grpc

log = logging.getLogger(__name__)

# How often each replica reads the revocations the others took (its own take effect at once).
REVOCATIONS_REFRESH_S = 1.0
SERVICE_NAME = "vcc.v1.AuditService"
MAX_BATCH = 500
MAX_PAGE = 1000
DEFAULT_PAGE = 100
# Column sizes (the migration's): longer values are cut, never refused (an audit keeps what it can).
_SIZES = {
    "entry_id": 64,
    "actor": 128,
    "action": 64,
    "target": 256,
    "source": 256,
    "outcome": 16,
    "site_id": 32,
}
MAX_DETAIL_BYTES = 4096

_TABLE = Base.metadata.tables[AuditLogEntry.__tablename__]


@dataclass(frozen=True)
class AuditEntry:
    at: float
    actor: str
    action: str
    target: str = ""
    source: str = ""
    outcome: str = "ok"
    site_id: str = ""
    detail: dict[str, str] = field(default_factory=dict)
    entry_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def row(self) -> dict[str, Any]:
        row: dict[str, Any] = {k: str(getattr(self, k))[:n] for k, n in _SIZES.items()}
        row["at"] = self.at
        row["detail"] = json.dumps(self.detail, ensure_ascii=False, sort_keys=True)[:MAX_DETAIL_BYTES]
        return row


def entry_to_proto(e: AuditEntry) -> audit_pb2.AuditEntry:
    return audit_pb2.AuditEntry(
        entry_id=e.entry_id,
        at=timestamp(e.at),
        actor=e.actor,
        action=e.action,
        target=e.target,
        source=e.source,
        outcome=e.outcome,
        site_id=e.site_id,
        detail=e.detail,
    )


def entry_from_proto(p: audit_pb2.AuditEntry, site_id: str) -> AuditEntry:
    if not p.entry_id or len(p.entry_id) > _SIZES["entry_id"]:
        raise InvalidArgument("bad-entry-id", "entries.entry_id: required, at most 64 characters")
    # The site is the certificate's (checked by the caller), whatever the entry says.
    return AuditEntry(
        at=unix_s(p.at),
        actor=p.actor,
        action=p.action,
        target=p.target,
        source=p.source,
        outcome=p.outcome,
        site_id=site_id,
        detail=dict(p.detail),
        entry_id=p.entry_id,
    )


class AuditLog:
    """Append and read; there is no update or delete."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        insert = sqlite.insert if engine.dialect.name == "sqlite" else postgresql.insert
        self._insert = insert(_TABLE).on_conflict_do_nothing(index_elements=["entry_id"])

    async def append(self, entries: Sequence[AuditEntry]) -> int:
        """Store the entries not stored yet; returns how many were new."""
        if not entries:
            return 0
        rows = [e.row() for e in entries]
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(5),
            wait=wait_random_exponential(multiplier=0.01, max=0.5),
            retry=retry_if_exception(_is_transient),
            reraise=True,
        ):
            with attempt:
                async with self._engine.begin() as conn:
                    before = await _count(conn, [e.entry_id for e in entries])
                    await conn.execute(self._insert, rows)
                    return len({e.entry_id for e in entries}) - before
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def list(
        self, *, since: float | None = None, who: str = "", limit: int = DEFAULT_PAGE
    ) -> list[AuditEntry]:
        query = sa.select(_TABLE).order_by(_TABLE.c.at.desc(), _TABLE.c.seq.desc()).limit(limit)
        if since is not None:
            query = query.where(_TABLE.c.at >= since)
        if who:
            query = query.where(_TABLE.c.actor.contains(who, autoescape=True))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_entry(r) for r in rows]

    async def revocations(self, since: float) -> Sequence[AuditEntry]:
        """The sites' entries since `since` that revoke an agent's person assertions."""
        query = sa.select(_TABLE).where(
            _TABLE.c.at >= since, _TABLE.c.action.in_(sorted(person_assertion.REVOKING_ACTIONS))
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_entry(r) for r in rows if r["site_id"]]

    async def record(self, entry: AuditEntry) -> None:
        """Append one of central's own entries; a failure is logged, never raised (an audit that
        cannot be written must not stop what it records)."""
        try:
            await self.append([entry])
        except Exception as exc:
            log.error("audit: could not record %s %s: %s", entry.actor, entry.action, exc)

    async def record_denied(self, method: str, who: Identity | None, peer: str, reason: str) -> None:
        """The authorization table refused a certificate, or a handler refused what a call named
        (central's interceptor hook); a call made for a person names the person, then the certificate."""
        person = ACTING.get()
        actor = str(who) if who is not None else "unknown"
        entry = AuditEntry(
            at=time.time(),
            actor=f"{person} via {actor}" if person is not None else actor,
            action="permission-denied",
            target=method,
            source=peer,
            outcome="refused",
            detail={"reason": reason},
        )
        await self.record(entry)


async def _count(conn: Any, entry_ids: list[str]) -> int:
    query = sa.select(sa.func.count()).select_from(_TABLE).where(_TABLE.c.entry_id.in_(entry_ids))
    return int((await conn.execute(query)).scalar_one())


class RevocationFeed:
    """The agents whose person assertions central refuses (vcc.person_assertion.Revocations), from
    the sites' audit entries: those this replica takes at once, the others' from the database (every
    REVOCATIONS_REFRESH_S, and at start: a new leader or a follower knows them too).

    `current()` is the guarantee: it returns once this replica holds every revocation committed
    before it was called (a read of the database that started after the call), so a check made
    after it refuses every session that ended before the call, on any replica, whichever replica
    took the site's entry. Concurrent callers share reads (one in flight, then one for all who
    came during it)."""

    def __init__(self, log_: AuditLog, revocations: Revocations) -> None:
        self._log = log_
        self.revocations = revocations
        # When the newest finished read started (monotonic): everything committed before is held.
        self._held_since = float("-inf")
        self._reading: asyncio.Task[None] | None = None

    def note(self, entries: Sequence[AuditEntry]) -> None:
        for e in entries:
            agent = person_assertion.revoked_agent(e.action, e.target, e.detail)
            if agent and e.site_id:
                self.revocations.note(e.site_id, agent, e.at)

    async def refresh(self) -> None:
        started = time.monotonic()
        # The sites' clocks may be behind central's: a skew more than the assertions allow.
        since = time.time() - person_assertion.REVOCATION_KEPT_S - person_assertion.SKEW_S
        self.note(await self._log.revocations(since))
        self.revocations.prune()
        self._held_since = max(self._held_since, started)

    async def current(self) -> None:
        """Until every revocation committed before this call is held (raises when the database
        cannot be read: the caller refuses rather than trust an old list)."""
        asked = time.monotonic()
        while self._held_since < asked:
            reading = self._reading
            if reading is None or reading.done():
                self._reading = reading = asyncio.create_task(self.refresh(), name="central-revocations-read")
                reading.add_done_callback(self._done_reading)
            # A read that started before this call may miss what committed just before it: wait
            # for it, then for one of our own (the loop).
            await asyncio.shield(reading)

    def _done_reading(self, task: asyncio.Task[None]) -> None:
        if self._reading is task:
            self._reading = None
        if not task.cancelled():
            task.exception()  # (raised to the waiters; seen here so that asyncio does not log it)

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # the database away: the next round tries again
                log.warning("person revocations not read: %s", exc)
            await asyncio.sleep(REVOCATIONS_REFRESH_S)


class AuditService(audit_pb2_grpc.AuditServiceServicer):
    def __init__(
        self, log_: AuditLog, site_ids: Sequence[str], *, revocations: RevocationFeed | None = None
    ) -> None:
        self._log = log_
        self._sites = frozenset(site_ids)
        self._revocations = revocations

    @maps_errors
    async def RecordAudit(
        self, request: audit_pb2.RecordAuditRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> audit_pb2.RecordAuditResponse:
        if request.site_id not in self._sites:
            raise InvalidArgument("unknown-site", f"site_id: no site {request.site_id!r}")
        if len(request.entries) > MAX_BATCH:
            raise InvalidArgument("batch-too-large", f"entries: at most {MAX_BATCH}")
        await require_site(context, request.site_id)
        entries = [entry_from_proto(e, request.site_id) for e in request.entries]
        stored = await self._log.append(entries)
        if self._revocations is not None:
            # Before the site hears back: a logout that waited for this is refused everywhere now.
            self._revocations.note(entries)
        return audit_pb2.RecordAuditResponse(stored=stored, duplicates=len(entries) - stored)

    @maps_errors
    async def ListAudit(
        self, request: audit_pb2.ListAuditRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> audit_pb2.ListAuditResponse:
        limit = request.page_size or DEFAULT_PAGE
        if limit > MAX_PAGE:
            raise InvalidArgument("bad-page-size", f"page_size: at most {MAX_PAGE}")
        since = unix_s(request.since) if request.HasField("since") else None
        entries = await self._log.list(since=since, who=request.who, limit=limit)
        return audit_pb2.ListAuditResponse(entries=[entry_to_proto(e) for e in entries])


def _entry(r: Any) -> AuditEntry:
    """One stored row as the entry it was."""
    return AuditEntry(
        at=r["at"],
        actor=r["actor"],
        action=r["action"],
        target=r["target"],
        source=r["source"],
        outcome=r["outcome"],
        site_id=r["site_id"],
        detail=json.loads(r["detail"] or "{}"),
        entry_id=r["entry_id"],
    )
