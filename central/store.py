"""Central data access: call events and records, customers, the province's sites and agents.

Every operation is one transaction, retried as a whole (bounded) when the database reports
a serialization failure (SQLSTATE 40001), a deadlock (40P01) or, on SQLite, a busy lock.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.cache_key import CacheKey
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    stop_any,
    wait_random_exponential,
)

from central import paging
from central.customer_cache import CUSTOMER_CACHE_ENV, CustomerCache
from central.customers import Customer, customer_from_row, customer_row, demo_customers
from central.db import models
from central.db.engine import one_statement_reader, writer
from central.records import CallEvent, CallLeg, CallRecord, CallState, Outcome, fold
from routing.global_router import Candidate, Decision
from vcc.call_events import EventKind
from vcc.config import ProvinceConfig
from vcc.errors import FailedPrecondition, Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

# Rows per statement: well under the bind-parameter limits of SQLite and PostgreSQL (32k).
CHUNK = 500
# Whole-transaction attempts before a conflict is reported to the caller (who retries later).
MAX_ATTEMPTS = 12
# How long a transaction keeps trying while the database is away, before UNAVAILABLE.
DATABASE_RETRY_S = 3.0
_RETRY_SQLSTATES = {"40001", "40P01"}

_EVENTS = models.Base.metadata.tables["call_events"]
_CALLS = models.Base.metadata.tables["calls"]
_LEGS = models.Base.metadata.tables["call_legs"]
_CUSTOMERS = models.Base.metadata.tables["customers"]
_PHONES = models.Base.metadata.tables["customer_phones"]
_SITES = models.Base.metadata.tables["sites"]
_SKILL_GROUPS = models.Base.metadata.tables["skill_groups"]
_AGENTS = models.Base.metadata.tables["agents"]
_DECISIONS = models.Base.metadata.tables["routing_decisions"]
_LEADERSHIP = models.Base.metadata.tables["central_leadership"]
# Decisions listed for one call at most: a call that waits long is re-asked, but only moves and
# the first answer are recorded, so real calls stay far below this.
MAX_DECISIONS_PER_CALL = 1000

# The statements of the hot paths (every call's screen pop, every ingested batch), built once with
# bound parameters: SQLAlchemy then finds their compiled form by a memoized cache key instead of
# walking a fresh statement each time (that walk was about 9 % of central's CPU under load).
# The customer one of whose numbers is :phone, a row per number of theirs (primary first): one
# statement, so one trip to the database's thread instead of two.
_NUMBERS = _PHONES.alias("numbers")
_CUSTOMER_BY_PHONE = (
    sa.select(_CUSTOMERS, _NUMBERS.c.phone.label("number"))
    .join(_PHONES, _PHONES.c.customer_id == _CUSTOMERS.c.customer_id)
    .join(_NUMBERS, _NUMBERS.c.customer_id == _CUSTOMERS.c.customer_id)
    .where(_PHONES.c.phone == sa.bindparam("phone"))
    .order_by(_NUMBERS.c.position)
)
# Calls whose stored events the leader keeps (about 3 KB each): several seconds of calls at a
# thousand calls a second, as long as a call's events take to arrive.
JOURNEYS_KEPT = 10_000
# "0": read every call's events back at each batch, new calls' too (the way before; a benchmark's
# comparison).
JOURNEYS_ENV = "VCC_INGEST_JOURNEYS"
# "0": the ON CONFLICT statements compiled at every execute (the way before; a comparison).
COMPILED_ENV = "VCC_INGEST_COMPILED"
_EVENTS_OF = sa.select(_EVENTS).where(_EVENTS.c.call_id.in_(sa.bindparam("call_ids", expanding=True)))
# Which of these calls have a record (and so stored events: a call's events and its record are
# written in one transaction, and neither is ever deleted).
_RECORDED = sa.select(_CALLS.c.call_id).where(_CALLS.c.call_id.in_(sa.bindparam("call_ids", expanding=True)))


@dataclass(frozen=True)
class IngestResult:
    stored: int
    duplicates: int


@dataclass
class StoreFigures:
    """What the store counts of its own work, read by central's metrics at each scrape."""

    # Transactions run again, by why: "conflict" (SQLSTATE 40001, a locked SQLite) or "unavailable".
    retries: dict[str, int] = field(default_factory=lambda: {"conflict": 0, "unavailable": 0})
    # Per site: events stored, duplicates ignored, and the age of the oldest event of its latest
    # batch when that batch was committed (the ingest lag).
    stored: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    lag_s: dict[str, float] = field(default_factory=dict)

    def ingested(self, site_id: str, result: IngestResult, lag_s: float) -> None:
        self.stored[site_id] = self.stored.get(site_id, 0) + result.stored
        self.duplicates[site_id] = self.duplicates.get(site_id, 0) + result.duplicates
        self.lag_s[site_id] = lag_s


@dataclass(frozen=True)
class RecordedDecision:
    """A routing decision as central keeps it: the policy's answer, when, and for which call."""

    decision_id: str
    # "" for a pre-route (no call yet) or a pooled pull (the origin picks the call).
    call_id: str
    at: float
    decision: Decision


class DatabaseUnavailable(Unavailable):
    def __init__(self, detail: str) -> None:
        super().__init__("database-unavailable", f"the central database is unavailable: {detail}")


class Fenced(FailedPrecondition):
    """A write from a central replica whose leadership epoch is no longer the newest."""

    def __init__(self, epoch: int, stored: int) -> None:
        super().__init__(
            "fenced-leader",
            f"this central replica led epoch {epoch}, the database has seen epoch {stored}: not the leader",
        )
        self.epoch = epoch
        self.stored = stored


class Store:
    """Async data access over one AsyncEngine (see central.db.engine.create_engine).

    Fencing: once `take_over(epoch)` made this store the writer of a leader's term, every write
    transaction first checks, in the same transaction, that the database's epoch is still that one,
    and raises Fenced otherwise (a newer leader took over). A store that never took over (a single
    central without election, tests) writes unfenced.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._reader = engine
        self._writer = writer(engine)
        self._one_statement = one_statement_reader(engine)
        self._dialect = engine.dialect.name
        self.epoch: int | None = None
        self.figures = StoreFigures()
        self._statements: dict[tuple[str, tuple[str, ...], str, bool], sa.Insert] = {}
        self._compile_once = os.environ.get(COMPILED_ENV, "") != "0"
        # Keyed by the id of a statement of _statements (kept as long as the store).
        self._driver_statements: dict[int, tuple[str, tuple[str, ...]]] = {}
        # Told the records of each ingested batch's calls once their transaction committed (central's
        # running figures): the same records the `calls` table now holds.
        self.record_listeners: list[Callable[[Sequence[CallRecord]], None]] = []
        # The leader's own copy of every stored event of the calls it ingested lately (all of each
        # call's, in journey order): refolding a call whose next events arrive then reads nothing
        # back (reading them was a fifth of central's CPU). Kept only by a fenced writer (no other
        # process writes these calls' events while its epoch holds), emptied at each takeover,
        # and a call's copy is trusted only by a transaction's first attempt.
        self._journeys: OrderedDict[str, list[CallEvent]] = OrderedDict()
        self._keep_journeys = os.environ.get(JOURNEYS_ENV, "") != "0"
        self._journeys_term = 0
        # Calls being ingested now, and how many times; a call two ingests overlapped on is not
        # kept (either may have folded without the other's events).
        self._ingesting: dict[str, int] = {}
        self._overlapped: set[str] = set()
        # The screen pop's customers by number, kept by a leader only (see take_over).
        self.customers = CustomerCache()
        self._cache_customers = os.environ.get(CUSTOMER_CACHE_ENV, "") != "0"

    # -- fencing -----------------------------------------------------------------------------

    async def take_over(self, epoch: int) -> None:
        """Raise the database's epoch to ours (never lowers it: an older epoch raises Fenced)."""

        async def attempt(conn: AsyncConnection) -> None:
            await conn.execute(self._insert_ignore(_LEADERSHIP, ["id"]), [{"id": 1, "epoch": 0}])
            stored = await _stored_epoch(conn)
            if stored > epoch:
                raise Fenced(epoch, stored)
            if stored < epoch:
                await conn.execute(sa.update(_LEADERSHIP).where(_LEADERSHIP.c.id == 1).values(epoch=epoch))

        await self._transaction(attempt, write=True, fenced=False)
        self._journeys.clear()
        self._journeys_term += 1
        self.epoch = epoch
        self.customers.lead(self._cache_customers)
        log.info("database fenced at leadership epoch %d", epoch)

    def deposed(self) -> None:
        """This replica leads no more: its look-ups read the database again (another leader writes)."""
        self.customers.lead(False)

    async def leadership_epoch(self) -> int:
        return await self._transaction(_stored_epoch)

    # -- call events and records -------------------------------------------------------------

    async def ingest(self, site_id: str, events: Sequence[CallEvent]) -> IngestResult:
        """Store a site's events; each (call, site, seq) lands once however often it is sent.

        The records of the batch's calls are folded again from all their stored events, in the
        same transaction, even when every event was a duplicate: a batch re-sent after a commit
        whose outcome was unknown (the database went away mid-commit) then repairs its records.
        """
        for e in events:
            if e.site_id != site_id:
                raise ValueError(f"event {e.key} is not from site {site_id!r}")
        unique = sorted({e.key: e for e in events}.values(), key=lambda e: e.key)

        calls = sorted({e.call_id for e in unique})
        keep = self._keep_journeys and self.epoch is not None
        # Taken out while the transaction runs: a failure (even one whose commit happened) leaves
        # them out, and the next batch of those calls reads them from the database.
        known = {c: self._journeys.pop(c) for c in calls if c in self._journeys} if keep else {}
        term = self._journeys_term
        for c in calls:
            if self._ingesting.get(c, 0):
                self._overlapped.add(c)
                known.pop(c, None)
            self._ingesting[c] = self._ingesting.get(c, 0) + 1
        tries = 0

        folded: list[CallRecord] = []
        journeys: dict[str, list[CallEvent]] = {}

        async def attempt(conn: AsyncConnection) -> int:
            nonlocal tries
            tries += 1
            # Decided inside the transaction, before it reads or writes: SQLite holds the write
            # lock since BEGIN IMMEDIATE, and PostgreSQL took the transaction's snapshot at its
            # first statement (the fencing check; only a fenced leader keeps copies). Another
            # ingest of one of these calls that began before now marked the call overlapped, and
            # its copy is not trusted (an overflowed call's record once missed the other city's
            # last event); one that begins later waits for ours (SQLite) or conflicts with ours on
            # the call's record (PostgreSQL). A retry after a commit of unknown outcome may find
            # its own events stored already: it trusts nothing.
            trusted = {c: ev for c, ev in known.items() if c not in self._overlapped} if tries == 1 else {}
            found = await self._stored_journeys(conn, [c for c in calls if c not in trusted])
            found.update((c, list(before)) for c, before in trusted.items())
            # What the database lacks of the batch (exactly: nothing else writes these calls'
            # events while this transaction runs, or one of the two fails and is retried).
            have = {e.key for journey in found.values() for e in journey}
            fresh = [e for e in unique if e.key not in have]
            events = self._insert_ignore(_EVENTS, ["call_id", "site_id", "seq"])
            await self._execute_rows(conn, events, [_event_row(e) for e in fresh])
            for e in fresh:
                # As the database gives them back (data's JSON, the types of each column).
                found.setdefault(e.call_id, []).append(_as_stored(e))
            for journey in found.values():
                journey.sort(key=_journey_order)
            if calls:
                # Only the attempt that commits is kept (a retried one folded in vain).
                folded[:] = await self._refold(conn, calls, found)
                journeys.clear()
                journeys.update(found)
            return len(fresh)

        try:
            stored = await self._transaction(attempt, write=True)
            # Not across a takeover (another leader may have written these calls' events meanwhile).
            if keep and term == self._journeys_term:
                for c in calls:
                    if c not in self._overlapped:
                        self._journeys[c] = journeys[c]
                while len(self._journeys) > JOURNEYS_KEPT:
                    self._journeys.popitem(last=False)
        finally:
            for c in calls:
                left = self._ingesting.pop(c) - 1
                if left:
                    self._ingesting[c] = left
                else:
                    self._overlapped.discard(c)
        for listener in self.record_listeners:
            listener(folded)
        result = IngestResult(stored=stored, duplicates=len(events) - stored)
        if events:
            self.figures.ingested(site_id, result, max(0.0, time.time() - min(e.at for e in events)))
        return result

    async def get_call(self, call_id: str) -> CallRecord | None:
        """The record of one call with its legs and events, or None."""

        async def attempt(conn: AsyncConnection) -> CallRecord | None:
            row = (await conn.execute(sa.select(_CALLS).where(_CALLS.c.call_id == call_id))).first()
            if row is None:
                return None
            legs = (
                await conn.execute(
                    sa.select(_LEGS)
                    .where(_LEGS.c.call_id == call_id)
                    .order_by(_LEGS.c.first_at, _LEGS.c.site_id)
                )
            ).all()
            events = await self._events_of(conn, [call_id])
            return replace(
                _record(row._mapping),
                legs=tuple(_leg(leg._mapping) for leg in legs),
                events=tuple(events.get(call_id, [])),
            )

        return await self._transaction(attempt)

    async def list_calls(
        self,
        entry_site_id: str = "",
        ended_only: bool = False,
        page_size: int = 100,
        page_token: str = "",
        with_events: bool = False,
        open_only: bool = False,
    ) -> tuple[list[CallRecord], str]:
        """One page of records in arrival order, and the token of the next page ("" at the end)."""
        if page_size < 1:
            raise ValueError("page_size must be positive")
        cursor = paging.decode(page_token) if page_token else None

        async def attempt(conn: AsyncConnection) -> tuple[list[CallRecord], str]:
            query = sa.select(_CALLS).order_by(_CALLS.c.first_event_at, _CALLS.c.call_id).limit(page_size + 1)
            if entry_site_id:
                query = query.where(_CALLS.c.entry_site_id == entry_site_id)
            if ended_only:
                query = query.where(_CALLS.c.state == CallState.ENDED.value)
            if open_only:
                query = query.where(_CALLS.c.state != CallState.ENDED.value)
            if cursor is not None:
                query = query.where(
                    sa.tuple_(_CALLS.c.first_event_at, _CALLS.c.call_id)
                    > sa.tuple_(sa.literal(cursor.first_event_at), sa.literal(cursor.call_id))
                )
            rows = (await conn.execute(query)).all()
            records = [_record(r._mapping) for r in rows[:page_size]]
            if with_events and records:
                events = await self._events_of(conn, [r.call_id for r in records])
                records = [replace(r, events=tuple(events.get(r.call_id, []))) for r in records]
            next_token = ""
            if len(rows) > page_size:
                last = records[-1]
                next_token = paging.encode(paging.Cursor(last.first_event_at, last.call_id))
            return records, next_token

        return await self._transaction(attempt)

    async def count_calls(self) -> int:
        async def attempt(conn: AsyncConnection) -> int:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(_CALLS))).scalar_one())

        return await self._transaction(attempt)

    async def _refold(
        self, conn: AsyncConnection, call_ids: list[str], events: dict[str, list[CallEvent]]
    ) -> list[CallRecord]:
        records = [fold(events[c]) for c in call_ids]
        call_rows = [_call_row(r) for r in records]
        leg_rows = [_leg_row(r.call_id, leg) for r in records for leg in r.legs]
        await self._execute_rows(conn, self._upsert(_CALLS, ["call_id"]), call_rows)
        await self._execute_rows(conn, self._upsert(_LEGS, ["call_id", "site_id"]), leg_rows)
        return records

    async def _execute_rows(self, conn: AsyncConnection, stmt: sa.Insert, rows: list[dict[str, Any]]) -> None:
        """`stmt` once per row: the driver's own executemany of its SQL (compiled once), the
        rows as tuples; SQLAlchemy's binding of each row's parameters was a third of the ingest's
        CPU. With VCC_INGEST_COMPILED=0, SQLAlchemy executes it (the way before)."""
        if not rows:
            return
        if not self._compile_once:
            for chunk in _chunks(rows):
                await conn.execute(stmt, chunk)
            return
        sql, names = self._driver_sql(stmt)
        await conn.exec_driver_sql(sql, [tuple(row[n] for n in names) for row in rows])

    def _driver_sql(self, stmt: sa.Insert) -> tuple[str, tuple[str, ...]]:
        """The statement's SQL in the driver's paramstyle, and the order of its parameters."""
        found = self._driver_statements.get(id(stmt))
        if found is None:
            compiled = stmt.compile(dialect=self._writer.dialect)
            names = tuple(compiled.positiontup or ())
            if len(names) != len(compiled.binds):
                raise AssertionError(f"not a positional statement: {compiled}")
            found = self._driver_statements[id(stmt)] = (str(compiled), names)
        return found

    async def _stored_journeys(
        self, conn: AsyncConnection, call_ids: list[str]
    ) -> dict[str, list[CallEvent]]:
        """Each call's stored events, in journey order.

        Only the calls with a record are read (see _RECORDED: a call without one has no events
        stored); reading every new call's events back was most of the ingest's reading."""
        if not self._keep_journeys:
            return await self._events_of(conn, call_ids)
        recorded: list[str] = []
        for chunk in _chunks(call_ids):
            recorded += (await conn.execute(_RECORDED, {"call_ids": chunk})).scalars().all()
        return await self._events_of(conn, recorded)

    async def _events_of(self, conn: AsyncConnection, call_ids: list[str]) -> dict[str, list[CallEvent]]:
        """Each call's stored events, in journey order."""
        found: dict[str, list[CallEvent]] = {}
        for chunk in _chunks(call_ids):
            for row in (await conn.execute(_EVENTS_OF, {"call_ids": chunk})).all():
                e = _event(row._mapping)
                found.setdefault(e.call_id, []).append(e)
        for journey in found.values():
            journey.sort(key=_journey_order)
        return found

    # -- customers ---------------------------------------------------------------------------

    async def lookup_customer(self, phone: str) -> Customer | None:
        """The customer one of whose numbers is `phone` (the screen pop); the leader answers what
        it looked up lately from memory (central.customer_cache: forgotten at every write)."""
        known, customer = self.customers.get(phone)
        if known:
            return customer
        ticket = self.customers.ticket()

        async def attempt(conn: AsyncConnection) -> Customer | None:
            rows = (await conn.execute(_CUSTOMER_BY_PHONE, {"phone": phone})).all()
            if not rows:
                return None
            return customer_from_row(rows[0]._mapping, [r.number for r in rows])

        customer = await self._transaction(attempt, one_statement=True)
        self.customers.keep(ticket, phone, customer)
        return customer

    async def upsert_customers(self, customers: Sequence[Customer]) -> None:
        """Create or replace customers by customer_id, with all their numbers (the demo's seed)."""
        rows = [customer_row(c) for c in customers]
        phones = [
            {"phone": p, "customer_id": c.customer_id, "position": i}
            for c in customers
            for i, p in enumerate(c.numbers)
        ]
        ids = [c.customer_id for c in customers]

        async def attempt(conn: AsyncConnection) -> None:
            for some_ids in _chunks(ids):
                await conn.execute(sa.delete(_PHONES).where(_PHONES.c.customer_id.in_(some_ids)))
            for some_rows in _chunks(rows):
                await conn.execute(self._upsert(_CUSTOMERS, ["customer_id"]), some_rows)
            for some_phones in _chunks(phones):
                await conn.execute(self._upsert(_PHONES, ["phone"]), some_phones)

        with self.customers.writing():
            await self._transaction(attempt, write=True)

    async def seed_demo_customers(self, count: int, cities: Sequence[str] | None = None) -> None:
        """The demo customers (central.customers.demo_customers); cities default to the sites' names."""
        if cities is None:

            async def site_names(conn: AsyncConnection) -> list[str]:
                rows = await conn.execute(sa.select(_SITES.c.name).order_by(_SITES.c.site_id))
                return [name for (name,) in rows.all()]

            cities = await self._transaction(site_names)
        wanted = demo_customers(count, cities)

        async def existing(conn: AsyncConnection) -> set[str]:
            found: set[str] = set()
            for chunk in _chunks([c.customer_id for c in wanted]):
                rows = await conn.execute(
                    sa.select(_CUSTOMERS.c.customer_id).where(_CUSTOMERS.c.customer_id.in_(chunk))
                )
                found.update(rows.scalars().all())
            return found

        # Only the missing ones: a demo customer edited since (a newer version) keeps its edits.
        known = await self._transaction(existing)
        await self.upsert_customers([c for c in wanted if c.customer_id not in known])

    # -- the province ------------------------------------------------------------------------

    async def sync_province(self, config: ProvinceConfig) -> None:
        """Make sites, skill groups and agents match the province config.

        Sites stay when they leave the config (call records refer to them); skill groups and
        agents of the config's sites that are no longer configured are removed.
        """
        sites: list[dict[str, Any]] = [
            {"site_id": s.id, "name": s.name, "listen": s.listen} for s in config.sites
        ]
        groups: list[dict[str, Any]] = [
            {
                "site_id": s.id,
                "skill_group_id": g.id,
                "name": g.name,
                "strategy": g.strategy,
                "priority": g.priority,
            }
            for s in config.sites
            for g in s.skill_groups
        ]
        agents: list[dict[str, Any]] = [
            {
                "code": a.code,
                "site_id": s.id,
                "name": a.name,
                "role": a.role,
                "skills": json.dumps(dict(sorted(a.skills.items()))),
            }
            for s in config.sites
            for a in s.agents
        ]
        site_ids = [s.id for s in config.sites]

        async def attempt(conn: AsyncConnection) -> None:
            for chunk in _chunks(sites):
                await conn.execute(self._upsert(_SITES, ["site_id"]), chunk)
            await conn.execute(
                sa.delete(_SKILL_GROUPS).where(
                    _SKILL_GROUPS.c.site_id.in_(site_ids),
                    sa.tuple_(_SKILL_GROUPS.c.site_id, _SKILL_GROUPS.c.skill_group_id).not_in(
                        [(g["site_id"], g["skill_group_id"]) for g in groups]
                    ),
                )
            )
            for chunk in _chunks(groups):
                await conn.execute(self._upsert(_SKILL_GROUPS, ["site_id", "skill_group_id"]), chunk)
            await conn.execute(sa.delete(_AGENTS).where(_AGENTS.c.code.not_in([a["code"] for a in agents])))
            for chunk in _chunks(agents):
                await conn.execute(self._upsert(_AGENTS, ["code"]), chunk)

        await self._transaction(attempt, write=True)

    async def agents(self) -> list[dict[str, Any]]:
        """The agents as synced from the config (code, site_id, name, role, skills)."""

        async def attempt(conn: AsyncConnection) -> list[dict[str, Any]]:
            rows = (await conn.execute(sa.select(_AGENTS).order_by(_AGENTS.c.code))).all()
            return [{**r._mapping, "skills": json.loads(r.skills)} for r in rows]

        return await self._transaction(attempt)

    # -- routing decisions -------------------------------------------------------------------

    async def record_decisions(self, decisions: Sequence[RecordedDecision]) -> None:
        """Store decisions; one already stored (same decision id) is left as it is."""
        rows = [_decision_row(d) for d in decisions]

        async def attempt(conn: AsyncConnection) -> None:
            for chunk in _chunks(rows):
                await conn.execute(self._insert_ignore(_DECISIONS, ["decision_id"]), chunk)

        if rows:
            await self._transaction(attempt, write=True)

    async def decisions_of(self, call_ids: Sequence[str]) -> dict[str, list[RecordedDecision]]:
        """Each call's decisions, oldest first (at most MAX_DECISIONS_PER_CALL per call)."""
        wanted = sorted(set(call_ids))

        async def attempt(conn: AsyncConnection) -> dict[str, list[RecordedDecision]]:
            found: dict[str, list[RecordedDecision]] = {}
            for chunk in _chunks(wanted):
                query = sa.select(_DECISIONS).where(_DECISIONS.c.call_id.in_(chunk))
                if len(chunk) == 1:
                    query = query.order_by(_DECISIONS.c.at).limit(MAX_DECISIONS_PER_CALL)
                for row in (await conn.execute(query)).all():
                    d = _recorded(row._mapping)
                    found.setdefault(d.call_id, []).append(d)
            for found_for_call in found.values():
                found_for_call.sort(key=lambda d: (d.at, d.decision_id))
                del found_for_call[MAX_DECISIONS_PER_CALL:]
            return found

        return await self._transaction(attempt) if wanted else {}

    async def decisions_by_id(self, decision_ids: Sequence[str]) -> dict[str, RecordedDecision]:
        wanted = sorted(set(decision_ids))

        async def attempt(conn: AsyncConnection) -> dict[str, RecordedDecision]:
            found: dict[str, RecordedDecision] = {}
            for chunk in _chunks(wanted):
                query = sa.select(_DECISIONS).where(_DECISIONS.c.decision_id.in_(chunk))
                for row in (await conn.execute(query)).all():
                    d = _recorded(row._mapping)
                    found[d.decision_id] = d
            return found

        return await self._transaction(attempt) if wanted else {}

    # -- plumbing ----------------------------------------------------------------------------

    async def transaction(self, work: Callable[[AsyncConnection], Awaitable[T]], write: bool = False) -> T:
        """One transaction, retried as a whole on conflicts and fenced like every write here:
        the service desk's stores (central.servicedesk) run their SQL through it. A write may
        change customers: the look-ups' memory forgets everything around it."""
        if not write:
            return await self._transaction(work)
        with self.customers.writing():
            return await self._transaction(work, write=True)

    def upsert(self, table: sa.Table, keys: list[str]) -> sa.Insert:
        return self._upsert(table, keys)

    def insert_ignore(self, table: sa.Table, keys: list[str]) -> sa.Insert:
        return self._insert_ignore(table, keys)

    async def _transaction(
        self,
        work: Callable[[AsyncConnection], Awaitable[T]],
        write: bool = False,
        fenced: bool = True,
        *,
        one_statement: bool = False,
    ) -> T:
        """`work` in a transaction (a read that is `one_statement`: see engine.ONE_STATEMENT)."""
        engine = self._writer if write else (self._one_statement if one_statement else self._reader)
        epoch = self.epoch
        if write and fenced and epoch is not None:
            work = self._fenced(epoch, work)
        try:
            async for attempt in AsyncRetrying(
                # Conflicts clear in milliseconds; a database that went away gets a few seconds
                # before the site is told UNAVAILABLE (its outbox keeps the records meanwhile).
                stop=stop_any(stop_after_attempt(MAX_ATTEMPTS), stop_after_delay(DATABASE_RETRY_S)),
                wait=wait_random_exponential(multiplier=0.01, max=0.5),
                retry=retry_if_exception(_is_transient),
                before_sleep=self._retrying,
                reraise=True,
            ):
                with attempt:
                    async with engine.begin() as conn:
                        result = await work(conn)
                    return result
        except DBAPIError as exc:
            if _is_transient(exc):
                raise DatabaseUnavailable(str(exc.orig)) from exc
            raise
        except (OSError, TimeoutError) as exc:
            raise DatabaseUnavailable(str(exc) or type(exc).__name__) from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _retrying(self, state: Any) -> None:
        reason = _log_retry(state)
        self.figures.retries[reason] = self.figures.retries.get(reason, 0) + 1

    def _fenced(
        self, epoch: int, work: Callable[[AsyncConnection], Awaitable[T]]
    ) -> Callable[[AsyncConnection], Awaitable[T]]:
        async def checked(conn: AsyncConnection) -> T:
            # In the write's own transaction: a takeover that commits first makes this one fail
            # here, or (PostgreSQL, SERIALIZABLE) conflict and retry into this check.
            stored = await _stored_epoch(conn)
            if stored != epoch:
                raise Fenced(epoch, stored)
            return await work(conn)

        return checked

    # Statements carry no rows: rows go as executemany parameters, so each statement is compiled
    # once (SQLAlchemy's cache) instead of once per batch, which dominated central's ingest CPU.

    def _insert_ignore(self, table: sa.Table, keys: list[str]) -> sa.Insert:
        cache_key = (table.name, tuple(keys), "ignore", False)
        stmt = self._statements.get(cache_key)
        if stmt is None:
            dialect_insert = sqlite.insert if self._dialect == "sqlite" else postgresql.insert
            stmt = dialect_insert(table).on_conflict_do_nothing(index_elements=keys)
            self._statements[cache_key] = _compiled_once(stmt, cache_key) if self._compile_once else stmt
        return stmt

    def _upsert(self, table: sa.Table, keys: list[str]) -> sa.Insert:
        cache_key = (table.name, tuple(keys), "upsert", False)
        stmt = self._statements.get(cache_key)
        if stmt is None:
            columns = [c.name for c in table.columns if c.name not in keys]
            if self._dialect == "sqlite":
                lite = sqlite.insert(table)
                stmt = lite.on_conflict_do_update(
                    index_elements=keys, set_={c: lite.excluded[c] for c in columns}
                )
            else:
                pg = postgresql.insert(table)
                stmt = pg.on_conflict_do_update(
                    index_elements=keys, set_={c: pg.excluded[c] for c in columns}
                )
            self._statements[cache_key] = _compiled_once(stmt, cache_key) if self._compile_once else stmt
        return stmt


def _compiled_once(stmt: sa.Insert, identity: tuple[object, ...]) -> sa.Insert:
    """`stmt` with a cache key of its own, so that SQLAlchemy compiles it once per dialect.

    The dialects' ON CONFLICT inserts have none (SQLAlchemy 2.0 compiles them at every execute:
    [no key] in its log, a third of the ingest's CPU). Ours are built once per Store and never
    changed, and carry no values of their own (rows always come as execute parameters), so their
    identity is an exact key; the key is the one SQLAlchemy's own memo of it would hold."""
    key = CacheKey(("vcc.store", *identity), [])
    stmt.__dict__["_generate_cache_key"] = lambda: key
    return stmt


async def _stored_epoch(conn: AsyncConnection) -> int:
    row = (await conn.execute(sa.select(_LEADERSHIP.c.epoch).where(_LEADERSHIP.c.id == 1))).first()
    return int(row[0]) if row is not None else 0


def _is_conflict(exc: BaseException) -> bool:
    """A transaction another one got in the way of: running it again will do."""
    if not isinstance(exc, DBAPIError):
        return False
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if code in _RETRY_SQLSTATES:
        return True
    return isinstance(exc, OperationalError) and "database is locked" in str(exc.orig)


# SQLSTATE classes of a server that is away or not ready: connection exceptions (08),
# shutdown or starting up (57P01-57P03).
_UNREACHABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def _is_transient(exc: BaseException) -> bool:
    """Worth running the transaction again: a conflict, or a database that is (briefly) away."""
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if _is_conflict(exc) or exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError)):
        return True
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return isinstance(code, str) and code.startswith(_UNREACHABLE_SQLSTATES)


def _log_retry(state: Any) -> str:
    exc = state.outcome.exception()
    log.debug("transaction conflict, attempt %d: %s", state.attempt_number, getattr(exc, "orig", exc))
    return "conflict" if _is_conflict(exc) else "unavailable"


def _chunks(rows: list[T]) -> Iterator[list[T]]:
    for i in range(0, len(rows), CHUNK):
        yield rows[i : i + CHUNK]


def _journey_order(e: CallEvent) -> tuple[float, str, int]:
    return (e.at, e.site_id, e.seq)


def _event_row(e: CallEvent) -> dict[str, Any]:
    return {
        "call_id": e.call_id,
        "site_id": e.site_id,
        "seq": e.seq,
        "kind": e.kind.value,
        "at": e.at,
        "agent_code": e.agent_code,
        "skill_group": e.skill_group,
        "ani": e.ani,
        "dnis": e.dnis,
        "outcome": e.outcome.value,
        # Most events carry no data: its JSON without the encoder (the same text, "{}").
        "data": json.dumps(dict(sorted(e.data.items())), ensure_ascii=False) if e.data else "{}",
    }


def _as_stored(e: CallEvent) -> CallEvent:
    """The event as the database gives it back (`_event` of `_event_row`), without the round
    trip: its data's keys in order (the columns keep every other field as it is)."""
    return replace(e, data=dict(sorted(e.data.items()))) if e.data else e


def _event(row: Mapping[str, Any] | sa.RowMapping) -> CallEvent:
    return CallEvent(
        call_id=row["call_id"],
        site_id=row["site_id"],
        seq=int(row["seq"]),
        kind=EventKind(row["kind"]),
        at=float(row["at"]),
        agent_code=row["agent_code"],
        skill_group=row["skill_group"],
        ani=row["ani"],
        dnis=row["dnis"],
        outcome=Outcome(row["outcome"]),
        data=json.loads(row["data"]),
    )


def _call_row(r: CallRecord) -> dict[str, Any]:
    return {
        "call_id": r.call_id,
        "entry_site_id": r.entry_site_id,
        "ani": r.ani,
        "dnis": r.dnis,
        "skill_group": r.skill_group,
        "state": r.state.value,
        "outcome": r.outcome.value,
        "served_site_id": r.served_site_id,
        "agent_code": r.agent_code,
        "arrived_at": r.arrived_at,
        "answered_at": r.answered_at,
        "ended_at": r.ended_at,
        "wait_s": r.wait_s,
        "talk_s": r.talk_s,
        "event_count": r.event_count,
        "first_event_at": r.first_event_at,
    }


def _record(row: sa.RowMapping) -> CallRecord:
    return CallRecord(
        call_id=row["call_id"],
        entry_site_id=row["entry_site_id"],
        ani=row["ani"],
        dnis=row["dnis"],
        skill_group=row["skill_group"],
        state=CallState(row["state"]),
        outcome=Outcome(row["outcome"]),
        served_site_id=row["served_site_id"],
        agent_code=row["agent_code"],
        arrived_at=row["arrived_at"],
        answered_at=row["answered_at"],
        ended_at=row["ended_at"],
        wait_s=float(row["wait_s"]),
        talk_s=float(row["talk_s"]),
        event_count=int(row["event_count"]),
        first_event_at=float(row["first_event_at"]),
    )


def _leg_row(call_id: str, leg: CallLeg) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "site_id": leg.site_id,
        "first_at": leg.first_at,
        "last_at": leg.last_at,
        "event_count": leg.event_count,
        "agent_code": leg.agent_code,
    }


def _leg(row: sa.RowMapping) -> CallLeg:
    return CallLeg(
        site_id=row["site_id"],
        first_at=float(row["first_at"]),
        last_at=float(row["last_at"]),
        event_count=int(row["event_count"]),
        agent_code=row["agent_code"],
    )


def _decision_row(r: RecordedDecision) -> dict[str, Any]:
    d = r.decision
    return {
        "decision_id": r.decision_id,
        "call_id": r.call_id,
        "at": r.at,
        "origin_site_id": d.origin,
        "target_site_id": d.target,
        "mode": d.mode,
        "skill_group": d.skill_group,
        "reason": d.reason,
        "candidates": json.dumps([asdict(c) for c in d.candidates], ensure_ascii=False),
    }


def _recorded(row: sa.RowMapping) -> RecordedDecision:
    candidates = tuple(Candidate(**c) for c in json.loads(row["candidates"]))
    return RecordedDecision(
        decision_id=row["decision_id"],
        call_id=row["call_id"],
        at=float(row["at"]),
        decision=Decision(
            origin=row["origin_site_id"],
            target=row["target_site_id"],
            mode=row["mode"],
            reason=row["reason"],
            skill_group=row["skill_group"],
            candidates=candidates,
        ),
    )
