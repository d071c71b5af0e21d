"""Central's IVR flows and service catalog in the database: versions stored once, never changed.

A flow version, once stored, is what every site that started a call on it runs: pushing the
same version again with other content is refused, and versions only grow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from central.db import models
from central.store import Store
from vcc.errors import AlreadyExists, FailedPrecondition
from vcc.ivr.catalog import ServiceCatalog
from vcc.ivr.flow import Flow
from vcc.ivr.keys import canonical_catalog, canonical_flow, digest

_FLOWS = models.Base.metadata.tables["ivr_flows"]
_CATALOGS = models.Base.metadata.tables["ivr_service_catalogs"]


@dataclass(frozen=True)
class StoredFlow:
    flow_id: str
    version: int
    description: str
    digest: str
    nodes: int
    pushed_at: float
    document: str
    canonical: str


@dataclass(frozen=True)
class StoredCatalog:
    revision: int
    digest: str
    pushed_at: float
    document: str
    canonical: str


class FlowStore:
    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock

    async def add_flow(self, flow: Flow, document: str) -> tuple[StoredFlow, bool]:
        """Store a new version; (stored, created). The same content again is not an error."""
        canonical = canonical_flow(flow)
        row: dict[str, Any] = {
            "flow_id": flow.id,
            "version": flow.version,
            "description": flow.description,
            "document": document,
            "canonical": canonical,
            "digest": digest(canonical),
            "nodes": len(flow.nodes),
            "pushed_at": self._clock(),
        }

        async def attempt(conn: AsyncConnection) -> tuple[StoredFlow, bool]:
            same = await _flow_row(conn, flow.id, flow.version)
            if same is not None:
                if same.digest != row["digest"]:
                    raise AlreadyExists(
                        "flow-version-exists",
                        f"flow {flow.id} version {flow.version} is stored with other content; "
                        "push it as a new version",
                    )
                return same, False
            newest = await _newest_version(conn, flow.id)
            if newest is not None and flow.version < newest:
                raise FailedPrecondition(
                    "flow-version-stale",
                    f"flow {flow.id}: version {flow.version} is older than the newest, {newest}",
                )
            await conn.execute(sa.insert(_FLOWS), [row])
            return _stored_flow(row), True

        return await self._store.transaction(attempt, write=True)

    async def flow(self, flow_id: str, version: int = 0) -> StoredFlow | None:
        """One version (0: the newest)."""

        async def attempt(conn: AsyncConnection) -> StoredFlow | None:
            wanted = version or await _newest_version(conn, flow_id)
            return None if wanted is None else await _flow_row(conn, flow_id, wanted)

        return await self._store.transaction(attempt)

    async def flows(self, flow_id: str = "") -> list[StoredFlow]:
        """Every version, newest first (of one flow, or of all in flow order)."""

        async def attempt(conn: AsyncConnection) -> list[StoredFlow]:
            query = sa.select(_FLOWS).order_by(_FLOWS.c.flow_id, _FLOWS.c.version.desc())
            if flow_id:
                query = query.where(_FLOWS.c.flow_id == flow_id)
            return [_stored_flow(dict(r)) for r in (await conn.execute(query)).mappings()]

        return await self._store.transaction(attempt)

    async def newest_versions(self) -> dict[str, int]:
        async def attempt(conn: AsyncConnection) -> dict[str, int]:
            query = sa.select(_FLOWS.c.flow_id, sa.func.max(_FLOWS.c.version)).group_by(_FLOWS.c.flow_id)
            return {str(f): int(v) for f, v in (await conn.execute(query)).all()}

        return await self._store.transaction(attempt)

    async def add_catalog(self, catalog: ServiceCatalog, document: str) -> tuple[StoredCatalog, bool]:
        """A new revision, unless the catalog in force says the same (then it, and False)."""

        async def attempt(conn: AsyncConnection) -> tuple[StoredCatalog, bool]:
            current = await _catalog_row(conn)
            revision = 1 if current is None else current.revision + 1
            canonical = canonical_catalog(catalog, revision)
            if current is not None and current.canonical == canonical_catalog(catalog, current.revision):
                return current, False
            row: dict[str, Any] = {
                "revision": revision,
                "document": document,
                "canonical": canonical,
                "digest": digest(canonical),
                "pushed_at": self._clock(),
            }
            await conn.execute(sa.insert(_CATALOGS), [row])
            return _stored_catalog(row), True

        return await self._store.transaction(attempt, write=True)

    async def catalog(self) -> StoredCatalog | None:
        return await self._store.transaction(_catalog_row)


async def _flow_row(conn: AsyncConnection, flow_id: str, version: int) -> StoredFlow | None:
    query = sa.select(_FLOWS).where(_FLOWS.c.flow_id == flow_id, _FLOWS.c.version == version)
    row = (await conn.execute(query)).mappings().first()
    return None if row is None else _stored_flow(dict(row))


async def _newest_version(conn: AsyncConnection, flow_id: str) -> int | None:
    query = sa.select(sa.func.max(_FLOWS.c.version)).where(_FLOWS.c.flow_id == flow_id)
    newest = (await conn.execute(query)).scalar_one_or_none()
    return None if newest is None else int(newest)


async def _catalog_row(conn: AsyncConnection) -> StoredCatalog | None:
    query = sa.select(_CATALOGS).order_by(_CATALOGS.c.revision.desc()).limit(1)
    row = (await conn.execute(query)).mappings().first()
    return None if row is None else _stored_catalog(dict(row))


def _stored_flow(row: dict[str, Any]) -> StoredFlow:
    return StoredFlow(
        flow_id=str(row["flow_id"]),
        version=int(row["version"]),
        description=str(row["description"]),
        digest=str(row["digest"]),
        nodes=int(row["nodes"]),
        pushed_at=float(row["pushed_at"]),
        document=str(row["document"]),
        canonical=str(row["canonical"]),
    )


def _stored_catalog(row: dict[str, Any]) -> StoredCatalog:
    return StoredCatalog(
        revision=int(row["revision"]),
        digest=str(row["digest"]),
        pushed_at=float(row["pushed_at"]),
        document=str(row["document"]),
        canonical=str(row["canonical"]),
    )
