"""Databases for central's tests: a SQLite file, and a fresh PostgreSQL database per test."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from central.db.engine import create_engine
from central.db.migrate import upgrade
from central.store import Store
from tests.fixtures.postgres import PostgresServer

_numbers = itertools.count()


async def fresh_postgres_database(server: PostgresServer) -> str:
    name = f"central_{os.getpid()}_{next(_numbers)}"
    admin = create_async_engine(server.url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()
    return make_url(server.url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('central') / 'central.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return await fresh_postgres_database(server)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade(database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def store(engine: AsyncEngine) -> Store:
    return Store(engine)
