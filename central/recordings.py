"""Central's index of call recordings (SPEC F26) and its gRPC service.

Each site reports the recordings it made (RecordingIndexService.IndexRecordings, only for its own
site; idempotent by call and site: a batch re-sent after a lost reply lands once); operators
search by call, agent, caller number and time. The files stay at the sites (a site's
SiteRecordingService.FetchRecording); the index says where each one is and its checksum.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from central.db.models import Base
from central.db.recording_models import RecordingIndexEntry
from central.store import _is_transient
from vcc.authz import require_site
from vcc.errors import InvalidArgument
from vcc.rpc import maps_errors, timestamp, unix_s
from vcc.v1 import recordings_pb2, recordings_pb2_grpc

SERVICE_NAME = "vcc.v1.RecordingIndexService"
MAX_BATCH = 500
MAX_PAGE = 1000
DEFAULT_PAGE = 100
_CALL_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
_AGENT = re.compile(r"^[0-9A-Za-z_-]{1,32}$")
_NUMBER = re.compile(r"^[0-9+*#]{1,32}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FILE = re.compile(r"^[0-9A-Za-z_.-]{1,128}$")

_TABLE = Base.metadata.tables[RecordingIndexEntry.__tablename__]


@dataclass(frozen=True)
class Recording:
    call_id: str
    site_id: str
    agent_codes: tuple[str, ...]
    caller_number: str
    started_at: float
    duration_s: float
    file: str
    sha256: str
    size_bytes: int

    def row(self, indexed_at: float) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "site_id": self.site_id,
            "agents": "," + ",".join(self.agent_codes) + "," if self.agent_codes else "",
            "caller_number": self.caller_number,
            "started_at": self.started_at,
            "duration_s": self.duration_s,
            "file": self.file,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "indexed_at": indexed_at,
        }


def to_proto(r: Recording) -> recordings_pb2.Recording:
    return recordings_pb2.Recording(
        call_id=r.call_id,
        site_id=r.site_id,
        agent_codes=list(r.agent_codes),
        caller_number=r.caller_number,
        started_at=timestamp(r.started_at),
        duration_s=r.duration_s,
        file=r.file,
        sha256=r.sha256,
        size_bytes=r.size_bytes,
    )


def from_proto(p: recordings_pb2.Recording, site_id: str) -> Recording:
    """A site's report, checked field by field (a bad one refuses the whole batch)."""
    checks = (
        (_CALL_ID.match(p.call_id), "recordings.call_id: 1-64 letters, digits, - or _"),
        (all(_AGENT.match(a) for a in p.agent_codes), "recordings.agent_codes: agent codes"),
        (len(p.agent_codes) <= 16, "recordings.agent_codes: at most 16"),
        (not p.caller_number or _NUMBER.match(p.caller_number), "recordings.caller_number: digits"),
        (p.HasField("started_at"), "recordings.started_at: required"),
        (0 <= p.duration_s <= 86400, "recordings.duration_s: 0 to 86400"),
        (_FILE.match(p.file), "recordings.file: a file name"),
        (_SHA256.match(p.sha256), "recordings.sha256: 64 hex digits"),
    )
    for ok, why in checks:
        if not ok:
            raise InvalidArgument("bad-recording", why)
    # The site is the certificate's (checked by the caller), whatever the report says.
    return Recording(
        call_id=p.call_id,
        site_id=site_id,
        agent_codes=tuple(p.agent_codes),
        caller_number=p.caller_number,
        started_at=unix_s(p.started_at),
        duration_s=p.duration_s,
        file=p.file,
        sha256=p.sha256,
        size_bytes=p.size_bytes,
    )


class RecordingIndex:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        insert = sqlite.insert if engine.dialect.name == "sqlite" else postgresql.insert
        self._insert = insert(_TABLE).on_conflict_do_nothing(index_elements=["call_id", "site_id"])

    async def add(self, recordings: Sequence[Recording]) -> int:
        """Store the ones not stored yet; how many were new."""
        if not recordings:
            return 0
        now = time.time()
        rows = [r.row(now) for r in recordings]
        keys = {(r.call_id, r.site_id) for r in recordings}
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(5),
            wait=wait_random_exponential(multiplier=0.01, max=0.5),
            retry=retry_if_exception(_is_transient),
            reraise=True,
        ):
            with attempt:
                async with self._engine.begin() as conn:
                    before = await self._count(conn, keys)
                    await conn.execute(self._insert, rows)
                    return len(keys) - before
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _count(self, conn: Any, keys: set[tuple[str, str]]) -> int:
        t = _TABLE.c
        query = (
            sa.select(sa.func.count())
            .select_from(_TABLE)
            .where(sa.tuple_(t.call_id, t.site_id).in_(list(keys)))
        )
        return int((await conn.execute(query)).scalar_one())

    async def search(
        self,
        *,
        call_id: str = "",
        agent_code: str = "",
        caller_number: str = "",
        since: float | None = None,
        until: float | None = None,
        limit: int = DEFAULT_PAGE,
    ) -> list[Recording]:
        t = _TABLE.c
        query = sa.select(_TABLE).order_by(t.started_at.desc(), t.call_id).limit(limit)
        if call_id:
            query = query.where(t.call_id == call_id)
        if agent_code:
            query = query.where(t.agents.contains(f",{agent_code},", autoescape=True))
        if caller_number:
            query = query.where(t.caller_number == caller_number)
        if since is not None:
            query = query.where(t.started_at >= since)
        if until is not None:
            query = query.where(t.started_at < until)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            Recording(
                call_id=r["call_id"],
                site_id=r["site_id"],
                agent_codes=tuple(a for a in r["agents"].split(",") if a),
                caller_number=r["caller_number"],
                started_at=r["started_at"],
                duration_s=r["duration_s"],
                file=r["file"],
                sha256=r["sha256"],
                size_bytes=r["size_bytes"],
            )
            for r in rows
        ]


class RecordingIndexService(recordings_pb2_grpc.RecordingIndexServiceServicer):
    def __init__(self, index: RecordingIndex, site_ids: Sequence[str]) -> None:
        self._index = index
        self._sites = frozenset(site_ids)

    @maps_errors
    async def IndexRecordings(
        self, request: recordings_pb2.IndexRecordingsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> recordings_pb2.IndexRecordingsResponse:
        if request.site_id not in self._sites:
            raise InvalidArgument("unknown-site", f"site_id: no site {request.site_id!r}")
        if len(request.recordings) > MAX_BATCH:
            raise InvalidArgument("batch-too-large", f"recordings: at most {MAX_BATCH}")
        await require_site(context, request.site_id)
        recordings = [from_proto(r, request.site_id) for r in request.recordings]
        stored = await self._index.add(recordings)
        unique = len({r.call_id for r in recordings})
        return recordings_pb2.IndexRecordingsResponse(stored=stored, duplicates=unique - stored)

    @maps_errors
    async def ListRecordings(
        self, request: recordings_pb2.ListRecordingsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> recordings_pb2.ListRecordingsResponse:
        limit = request.page_size or DEFAULT_PAGE
        if limit > MAX_PAGE:
            raise InvalidArgument("bad-page-size", f"page_size: at most {MAX_PAGE}")
        for value, pattern, field in (
            (request.call_id, _CALL_ID, "call_id"),
            (request.agent_code, _AGENT, "agent_code"),
            (request.caller_number, _NUMBER, "caller_number"),
        ):
            if value and not pattern.match(value):
                raise InvalidArgument("bad-filter", f"{field}: {value!r} cannot match any recording")
        found = await self._index.search(
            call_id=request.call_id,
            agent_code=request.agent_code,
            caller_number=request.caller_number,
            since=unix_s(request.since) if request.HasField("since") else None,
            until=unix_s(request.until) if request.HasField("until") else None,
            limit=limit,
        )
        return recordings_pb2.ListRecordingsResponse(recordings=[to_proto(r) for r in found])
