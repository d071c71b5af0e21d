"""Central's revocations as a guarantee, not a timing: `RevocationFeed.current()` returns only once
this replica holds every revocation committed before the call, whichever replica took the site's
entry (two replicas' feeds on one real SQLite database). The authorizer awaits it before every
person check, so a logout that returned is refused at every replica at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from central.audit import AuditEntry, AuditLog, RevocationFeed
from central.db.engine import create_engine
from central.db.migrate import upgrade
from tests.security.conftest import Certs
from vcc import rpc
from vcc.authz import Authorizer
from vcc.person_assertion import METADATA_KEY, PersonClaim, PersonGate, PersonSigner, Revocations
from vcc.v1 import servicedesk_pb2, servicedesk_pb2_grpc

SERVICE = "vcc.v1.CustomerService"


def claim(issued_at: float) -> PersonClaim:
    return PersonClaim("sz", "0201", "tag", issued_at, issued_at + 300)


def revoked(at: float) -> AuditEntry:
    return AuditEntry(at=at, actor="site/sz", action="person-revoked", target="0201", site_id="sz")


class HeldLog:
    """The audit log, whose next revocation read can be held before it queries the database."""

    def __init__(self, log: AuditLog) -> None:
        self._log = log
        self.hold = asyncio.Event()
        self.hold.set()
        self.reads = 0
        self.reading = asyncio.Event()

    async def revocations(self, since: float) -> list[AuditEntry]:
        self.reads += 1
        self.reading.set()
        await self.hold.wait()
        return list(await self._log.revocations(since))


@pytest.fixture
async def log(tmp_path: Path) -> AuditLog:
    url = f"sqlite+aiosqlite:///{tmp_path / 'central.db'}"
    await upgrade(url)
    return AuditLog(create_engine(url))


async def test_a_revocation_taken_by_another_replica_is_held_when_current_returns(log: AuditLog) -> None:
    issued = time.time() - 10
    leader = RevocationFeed(log, Revocations())
    follower = RevocationFeed(log, Revocations())
    await follower.refresh()  # its last periodic read: before the logout
    # The leader takes the site's entry (RecordAudit): in the database, and in its own set.
    entry = revoked(time.time())
    await log.append([entry])
    leader.note([entry])
    assert leader.revocations.revokes(claim(issued))
    # The follower's periodic read has not come round: without current() it would honour it.
    assert not follower.revocations.revokes(claim(issued))
    await follower.current()
    assert follower.revocations.revokes(claim(issued))
    # An assertion of the next session (issued after the revocation) is honoured.
    assert not follower.revocations.revokes(claim(entry.at + 1))


async def test_a_read_that_started_before_the_call_is_not_enough(log: AuditLog) -> None:
    # A read in flight since before the revocation committed may miss it: a caller after the
    # commit waits for that read and for one of its own.
    held = HeldLog(log)
    feed = RevocationFeed(held, Revocations())  # type: ignore[arg-type]
    issued = time.time() - 10
    held.hold.clear()
    early = asyncio.create_task(feed.current())
    await held.reading.wait()
    await log.append([revoked(time.time())])  # committed while the early read is held
    late = asyncio.create_task(feed.current())
    await asyncio.sleep(0.05)
    assert not late.done()
    held.hold.set()
    await asyncio.gather(early, late)
    assert held.reads == 2
    assert feed.revocations.revokes(claim(issued))


async def test_concurrent_callers_share_reads(log: AuditLog) -> None:
    held = HeldLog(log)
    feed = RevocationFeed(held, Revocations())  # type: ignore[arg-type]
    held.hold.clear()
    first = asyncio.create_task(feed.current())
    await held.reading.wait()
    # Fifty calls arrive while the first read is held: one more read serves them all.
    later = [asyncio.create_task(feed.current()) for _ in range(50)]
    await asyncio.sleep(0.05)
    held.hold.set()
    await asyncio.gather(first, *later)
    assert held.reads == 2


async def test_a_database_that_cannot_be_read_is_an_error_not_an_old_list(log: AuditLog) -> None:
    class Broken:
        async def revocations(self, since: float) -> list[AuditEntry]:
            raise OSError("database away")

    feed = RevocationFeed(Broken(), Revocations())  # type: ignore[arg-type]
    with pytest.raises(OSError, match="database away"):
        await feed.current()
    # The next call tries again (no read left hanging).
    with pytest.raises(OSError, match="database away"):
        await asyncio.wait_for(feed.current(), 5)


class _Customers(servicedesk_pb2_grpc.CustomerServiceServicer):
    def __init__(self) -> None:
        self.served = 0

    async def SearchCustomers(
        self, request: object, context: object
    ) -> servicedesk_pb2.SearchCustomersResponse:
        self.served += 1
        return servicedesk_pb2.SearchCustomersResponse()


async def test_the_authorizer_makes_the_revocations_current_before_a_person_check(certs: Certs) -> None:
    # The revocation lands "in the database" (the hook) after the assertion was issued: the check
    # that follows the hook refuses it; a hook that cannot read refuses UNAVAILABLE. The handler
    # runs only for the call admitted.
    revocations = Revocations()
    mode = {"now": "ok"}

    async def current() -> None:
        if mode["now"] == "broken":
            raise OSError("database away")
        if mode["now"] == "revoke":
            revocations.note("gz", "1001", time.time())

    gate = PersonGate(
        certs.folder / "ca.crt", {"gz": {"1001": "agent"}}, revocations=revocations, current=current
    )
    server = rpc.Server(
        [SERVICE], tls=certs.files("central-1"), interceptors=[Authorizer(["gz"], persons=gate)]
    )
    customers = _Customers()  # type: ignore[abstract]  # (only SearchCustomers is called)
    servicedesk_pb2_grpc.add_CustomerServiceServicer_to_server(customers, server.grpc)
    port = await server.start("127.0.0.1:0")
    token = PersonSigner(certs.files("site-gz"), "gz").sign("1001", "session-1")
    try:
        async with rpc.channel(f"127.0.0.1:{port}", tls=certs.files("desktop-robots")) as ch:
            stub = servicedesk_pb2_grpc.CustomerServiceStub(ch)

            async def code() -> grpc.StatusCode:
                try:
                    await stub.SearchCustomers(
                        servicedesk_pb2.SearchCustomersRequest(phone="139"),
                        timeout=10,
                        metadata=((METADATA_KEY, token),),
                    )
                except grpc.aio.AioRpcError as exc:
                    return exc.code()
                return grpc.StatusCode.OK

            assert await code() == grpc.StatusCode.OK
            mode["now"] = "broken"
            assert await code() == grpc.StatusCode.UNAVAILABLE
            mode["now"] = "revoke"
            assert await code() == grpc.StatusCode.PERMISSION_DENIED
            assert customers.served == 1
    finally:
        await server.stop(0)
