"""Fixtures shared by the whole suite: a real etcd and a real PostgreSQL server (one of each per
pytest-xdist worker); and how `make test` spreads the suite over two workers."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.postgres import PostgresServer, start_temporary
from tools.province.etcd_server import EtcdServer

# Where a long test phase waits: threads and asyncio tasks, dumped before pytest-timeout fires.
pytest_plugins = ["tests.fixtures.hangdump"]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`make test` (-n 2 --dist loadgroup): the clusters in one lane, the rest beside it."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from tests.fixtures.lanes import ClusterLaneScheduling

    return ClusterLaneScheduling(config, log)


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    server = EtcdServer(data_dir=tmp_path_factory.mktemp("etcd") / "data").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_temporary()
    yield server
    server.stop()
    shutil.rmtree(Path(server.root).parent, ignore_errors=True)
