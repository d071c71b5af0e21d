"""A stop always ends: a stuck step is cancelled at its deadline and the steps after it still run."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from site_node.app import SiteNode
from site_node.records.outbox import Outbox
from tests.integration.support import password_hash
from tools.province.etcd_server import EtcdServer
from tools.province.generate import SiteSpec, generate_province
from tools.province.netutil import free_port
from vcc import shutdown
from vcc.config import parse_province
from vcc.shutdown import Stopping


async def _slow_to_unwind(ends: list[str]) -> None:
    """Outlives its deadline, then takes a moment to unwind when cancelled (within the grace)."""
    try:
        await asyncio.sleep(3600)
    finally:
        await asyncio.sleep(0.05)
        ends.append("unwound")


async def _deaf(release: asyncio.Event) -> None:
    """Deaf to cancellation until the test releases it (a step stuck beyond help)."""
    while not release.is_set():
        with contextlib.suppress(asyncio.CancelledError):
            await release.wait()


async def test_a_stuck_step_is_cut_at_its_deadline_and_the_rest_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutdown, "UNWIND_S", 0.2)
    ran: list[str] = []
    ends: list[str] = []
    stop = Stopping("test")

    async def fine(name: str) -> None:
        ran.append(name)

    async def broken() -> None:
        raise RuntimeError("boom")

    assert await stop.step("first", fine("first"), 1.0)
    assert not await stop.step("slow", _slow_to_unwind(ends), 0.1)
    assert not await stop.step("failing", broken(), 1.0)
    release = asyncio.Event()
    deaf = asyncio.ensure_future(_deaf(release))
    await asyncio.sleep(0)  # running, and deaf to cancellation
    assert not await stop.tasks("deaf task", [deaf], 0.1)
    assert await stop.step("last", fine("last"), 1.0)
    assert ran == ["first", "last"]
    assert stop.overrun == ["slow", "deaf task"]
    assert stop.failed == ["failing"]
    assert ends == ["unwound"]  # cancelled at its deadline, it unwound before the stop went on
    assert not deaf.done()  # left behind, and the stop went on anyway
    release.set()
    await deaf


async def test_a_site_stops_although_its_etcd_client_and_a_task_are_stuck(
    tmp_path: Path, etcd_server: EtcdServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(shutdown, "UNWIND_S", 0.2)
    monkeypatch.setattr("site_node.app.ETCD_STOP_S", 0.5)
    monkeypatch.setattr("site_node.app.STEP_S", 0.5)
    config = generate_province(
        [SiteSpec("gz", "Guangzhou", trunk_channels=2, agents={"general": 1})],
        etcd_endpoint=etcd_server.endpoint,
        central_listen=f"127.0.0.1:{free_port()}",  # nobody there: the shipper has nowhere to ship
        database_url="sqlite+aiosqlite:///unused.db",
        password_hash=password_hash(),
        outbox_dir=tmp_path,
    )
    site = SiteNode(parse_province(config), "gz")
    await site.start()
    real_close = site.membership.close
    release = asyncio.Event()
    deaf = asyncio.create_task(_deaf(release), name="deaf-watch")
    await asyncio.sleep(0)
    site._tasks.append(deaf)

    async def stuck_close() -> None:
        await _deaf(release)

    site.membership.close = stuck_close  # type: ignore[method-assign]
    started = time.monotonic()
    await asyncio.wait_for(site.stop(), 120)  # the guarantee: it ends (no figure asserted)
    took = time.monotonic() - started
    assert site.stop_overruns == ["etcd membership", "background tasks"], (site.stop_overruns, took)
    # The warning names the task that would not end (the next hang says where it is).
    assert "still running after their cancellation: deaf-watch" in caplog.text
    # The steps after the stuck ones ran: the outbox is closed and opens again cleanly.
    assert site.outbox._closing
    again = await Outbox.open(site.outbox.path)
    await again.close()
    release.set()
    await deaf
    await real_close()
