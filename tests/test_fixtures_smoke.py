"""The real servers the suite depends on start and answer."""

from __future__ import annotations

import aetcd
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.fixtures.postgres import PostgresServer
from tools.province.etcd_server import EtcdServer


async def test_etcd_answers(etcd_server: EtcdServer) -> None:
    host, port = etcd_server.endpoint.split(":")
    async with aetcd.Client(host=host, port=int(port)) as client:
        await client.put(b"/smoke", b"ok")
        got = await client.get(b"/smoke")
        assert got is not None and got.value == b"ok"


async def test_postgres_through_cockroachdb_dialect(postgres_server: PostgresServer) -> None:
    engine = create_async_engine(postgres_server.url)
    async with engine.connect() as conn:
        assert (await conn.execute(sa.text("select 41 + 1"))).scalar_one() == 42
    await engine.dispose()
