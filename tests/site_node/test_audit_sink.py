"""A site's audit entries on disk until central has them: a site that stops (or crashes) before
central took them sends them at its next start, each once; acknowledged entries leave the disk.
Real SQLite files, central's real AuditService and audit log over real gRPC (in-process)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from central.audit import AuditLog, AuditService
from central.db.engine import create_engine
from central.db.migrate import upgrade
from site_node.links.audit_sink import AuditSink, AuditStore
from vcc import rpc
from vcc.v1 import audit_pb2_grpc


@pytest.fixture
async def central(tmp_path: Path) -> AsyncIterator[tuple[str, AuditLog]]:
    url = f"sqlite+aiosqlite:///{tmp_path}/central.db"
    await upgrade(url)
    engine = create_engine(url)
    log = AuditLog(engine)
    server = rpc.Server([])
    audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditService(log, ["gz"]), server.grpc)
    port = await server.start("127.0.0.1:0")
    yield f"127.0.0.1:{port}", log
    await server.stop(0)
    await engine.dispose()


async def test_unsent_entries_survive_a_restart_and_reach_central_once(
    tmp_path: Path, central: tuple[str, AuditLog]
) -> None:
    address, log = central
    store = AuditStore(tmp_path / "gz-outbox-audit.db")
    away = AuditSink("gz", lambda: None, store=store)  # central unknown: nothing can be sent
    for n in range(3):
        away.record(f"agent:010{n}", "login-failed", target=f"010{n}", outcome="refused")
    assert not await away.flush_once()
    await away.close(drain_s=0.2)  # the site stops with its entries unsent

    back = AuditSink("gz", lambda: address, store=store)
    assert back.restored == 3 and back.pending == 3
    back.record("agent:0109", "login", target="0109")
    await back.persist()
    assert await back.flush_once()
    assert back.pending == 0 and store.load(100) == []
    got = sorted((e.actor, e.action) for e in await log.list(limit=50))
    assert got == [
        ("agent:0100", "login-failed"),
        ("agent:0101", "login-failed"),
        ("agent:0102", "login-failed"),
        ("agent:0109", "login"),
    ]
    # A third start finds nothing left to send.
    assert AuditSink("gz", lambda: address, store=store).pending == 0
    await back.close()


async def test_entries_dropped_from_a_full_queue_leave_the_disk_too(tmp_path: Path) -> None:
    store = AuditStore(tmp_path / "a.db")
    sink = AuditSink("gz", lambda: None, max_pending=2, store=store)
    for n in range(4):
        sink.record("agent:0101", f"action-{n}")
    await sink.persist()
    assert [e.action for e in store.load(10)] == ["action-2", "action-3"] and sink.dropped == 2


async def test_delivered_waits_for_centrals_acknowledgement_and_no_longer(
    tmp_path: Path, central: tuple[str, AuditLog]
) -> None:
    """What a logout waits on (site_node.person_revocation): True once central stored every entry
    recorded so far; False at once with no central known, and after its bound when central is
    known but away (the entries stay queued)."""
    import asyncio

    address, log = central
    alone = AuditSink("gz", lambda: None)
    alone.record("site/gz", "person-revoked", target="0101")
    assert not await alone.delivered(30.0)  # no central: answered at once (else the test times out)
    away = AuditSink("gz", lambda: "127.0.0.1:1")
    away.record("site/gz", "person-revoked", target="0102")
    sending = asyncio.create_task(away.run())
    assert not await away.delivered(0.3)
    assert away.pending == 1
    sending.cancel()
    await asyncio.gather(sending, return_exceptions=True)
    sink = AuditSink("gz", lambda: address)
    assert await sink.delivered(0.1)  # nothing recorded: nothing to wait for
    sending = asyncio.create_task(sink.run())
    sink.record("site/gz", "person-revoked", target="0103")
    assert await sink.delivered(10.0)
    assert [e.target for e in await log.list(limit=10)] == ["0103"]
    sending.cancel()
    await asyncio.gather(sending, return_exceptions=True)
    await sink.close()
    await away.close(drain_s=0.1)
