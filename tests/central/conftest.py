"""Databases for central's tests: a SQLite file, and a fresh PostgreSQL database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from central.db.engine import create_engine
from central.db.migrate import upgrade
from central.store import Store
from tests.fixtures.postgres import PostgresServer, create_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('central') / 'central.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return await create_database(server, "central")


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade(database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def store(engine: AsyncEngine) -> Store:
    return Store(engine)
