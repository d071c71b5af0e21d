"""The screen pop's look-ups at a real CentralService (grpc.aio on 127.0.0.1:0, SQLite store): the
numbers of calls arriving together go in one LookupCustomers, a number is never asked twice at
once, and every waiter hears its own answer or its own failure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from central.grpc_api import SERVICE_NAME, CentralService
from central.membership_view import MembershipView
from site_node.links import customers as customers_module
from site_node.links.customers import BATCH_ENV, CentralCustomers, batched_from_env
from tests.central.province import central_store
from tools.province.netutil import free_port
from vcc import rpc
from vcc.v1 import central_pb2, central_pb2_grpc

KNOWN = ["13800000000", "13800000001", "13800000002"]
UNKNOWN = "13900001234"


class _OlderCentral(central_pb2_grpc.CentralServiceServicer):
    """A central from before LookupCustomers (an upgrade under way): the base answers UNIMPLEMENTED."""

    def __init__(self, real: CentralService) -> None:
        self._real = real

    async def LookupCustomer(self, request: Any, context: Any) -> Any:
        return await self._real.LookupCustomer(request, context)


class _ShortCentral(CentralService):
    """A broken central: one answer whatever the count of numbers asked."""

    async def LookupCustomers(self, request: Any, context: Any) -> central_pb2.LookupCustomersResponse:
        return central_pb2.LookupCustomersResponse(matches=[central_pb2.CustomerMatch(found=False)])


async def _serve(tmp_path: Path, kind: str = "real") -> AsyncIterator[str]:
    engine, store, config = await central_store(tmp_path, customers=len(KNOWN))
    view = MembershipView((s.id, s.name) for s in config.sites)
    made = (_ShortCentral if kind == "short" else CentralService)(
        store, config.province.id, [s.id for s in config.sites], view.sites
    )
    server = rpc.Server([SERVICE_NAME])
    servicer = _OlderCentral(made) if kind == "older" else made  # type: ignore[abstract]
    central_pb2_grpc.add_CentralServiceServicer_to_server(servicer, server.grpc)
    port = await server.start("127.0.0.1:0")
    yield f"127.0.0.1:{port}"
    await server.stop(0)
    await engine.dispose()


@pytest.fixture
async def central(tmp_path: Path) -> AsyncIterator[str]:
    async for address in _serve(tmp_path):
        yield address


@pytest.fixture
async def older_central(tmp_path: Path) -> AsyncIterator[str]:
    async for address in _serve(tmp_path, "older"):
        yield address


@pytest.fixture
async def short_central(tmp_path: Path) -> AsyncIterator[str]:
    async for address in _serve(tmp_path, "short"):
        yield address


async def _ids(lookups: CentralCustomers, phones: list[str]) -> list[str | None]:
    found = await asyncio.gather(*(lookups.lookup(p) for p in phones))
    return [c.customer_id if c is not None else None for c in found]


async def test_calls_arriving_together_are_looked_up_in_one_request(central: str) -> None:
    lookups = CentralCustomers(central, batched=True)
    try:
        phones = [KNOWN[1], UNKNOWN, KNOWN[0], KNOWN[1], KNOWN[2]]
        assert await _ids(lookups, phones) == ["demo-0001", None, "demo-0000", "demo-0001", "demo-0002"]
        assert lookups.requests == 1
        # Answered numbers are cached (the unknown one too): no request more.
        assert await _ids(lookups, [UNKNOWN, KNOWN[2]]) == [None, "demo-0002"]
        assert lookups.requests == 1
        # A record edited at the desk is asked again.
        lookups.forget([KNOWN[2]])
        assert await _ids(lookups, [KNOWN[2]]) == ["demo-0002"]
        assert lookups.requests == 2
    finally:
        await lookups.close()


async def test_a_number_asked_while_its_request_is_under_way_is_not_asked_again(central: str) -> None:
    lookups = CentralCustomers(central, batched=True, linger_s=0)
    try:
        first = asyncio.ensure_future(lookups.lookup(KNOWN[0]))
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # the request is on its way
        assert lookups.requests == 1
        second = lookups.lookup(KNOWN[0])
        assert [(await first).customer_id, (await second).customer_id] == ["demo-0000", "demo-0000"]  # type: ignore[union-attr]
        assert lookups.requests == 1
    finally:
        await lookups.close()


async def test_calls_arriving_within_the_linger_share_a_request_and_a_full_one_goes_at_once(
    central: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = CentralCustomers(central, batched=True, linger_s=0.05)
    try:
        first = asyncio.ensure_future(lookups.lookup(KNOWN[0]))
        for _ in range(5):
            await asyncio.sleep(0)  # other turns of the loop, within the linger
        second = asyncio.ensure_future(lookups.lookup(KNOWN[1]))
        assert lookups.requests == 0
        assert [(await f).customer_id for f in (first, second)] == ["demo-0000", "demo-0001"]  # type: ignore[union-attr]
        assert lookups.requests == 1
    finally:
        await lookups.close()
    monkeypatch.setattr(customers_module, "MAX_PER_REQUEST", 2)
    patient = CentralCustomers(central, batched=True, linger_s=60.0)
    try:
        # Two numbers fill a request: it goes without waiting out the minute.
        async with asyncio.timeout(10):
            assert await _ids(patient, KNOWN[:2]) == ["demo-0000", "demo-0001"]
    finally:
        await patient.close()


@pytest.mark.parametrize(("raw", "linger"), [("", 0.01), ("0", 0.0), ("0.2", 0.2)])
def test_the_linger_setting(monkeypatch: pytest.MonkeyPatch, raw: str, linger: float) -> None:
    monkeypatch.setenv(customers_module.LINGER_ENV, raw)
    assert customers_module.linger_from_env() == linger


@pytest.mark.parametrize("raw", ["0.3", "-1", "soon"])
def test_a_bad_linger_refuses_the_start(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(customers_module.LINGER_ENV, raw)
    with pytest.raises(ValueError, match=customers_module.LINGER_ENV):
        CentralCustomers("127.0.0.1:1")


async def test_more_numbers_than_one_request_takes_go_in_several(
    central: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(customers_module, "MAX_PER_REQUEST", 2)
    lookups = CentralCustomers(central, batched=True)
    try:
        phones = [*KNOWN, UNKNOWN, "13900000001"]
        assert await _ids(lookups, phones) == ["demo-0000", "demo-0001", "demo-0002", None, None]
        assert lookups.requests == 3
    finally:
        await lookups.close()


async def test_switched_off_each_call_asks_on_its_own(central: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BATCH_ENV, "0")
    lookups = CentralCustomers(central)
    try:
        assert await _ids(lookups, [KNOWN[0], UNKNOWN, KNOWN[1]]) == ["demo-0000", None, "demo-0001"]
        assert lookups.requests == 3
    finally:
        await lookups.close()


@pytest.mark.parametrize(("raw", "batched"), [("", True), ("1", True), ("0", False), (" 0 ", False)])
def test_the_switch_reads_0_or_1(monkeypatch: pytest.MonkeyPatch, raw: str, batched: bool) -> None:
    monkeypatch.setenv(BATCH_ENV, raw)
    assert batched_from_env() is batched


@pytest.mark.parametrize("raw", ["yes", "2", "off"])
def test_a_bad_switch_refuses_the_start(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(BATCH_ENV, raw)
    with pytest.raises(ValueError, match=BATCH_ENV):
        CentralCustomers("127.0.0.1:1")


async def test_an_older_central_gets_one_lookup_per_call(older_central: str) -> None:
    lookups = CentralCustomers(older_central, batched=True)
    try:
        assert await _ids(lookups, [KNOWN[0], UNKNOWN]) == ["demo-0000", None]
        # The refused batch, then one per number; later calls ask one by one at once.
        assert lookups.requests == 3
        assert await _ids(lookups, [KNOWN[1]]) == ["demo-0001"]
        assert lookups.requests == 4
    finally:
        await lookups.close()


async def test_central_unknown_fails_every_waiter_and_caches_nothing(central: str) -> None:
    address: list[str | None] = [None]
    lookups = CentralCustomers(lambda: address[0], batched=True)
    try:
        results = await asyncio.gather(*(lookups.lookup(p) for p in KNOWN[:2]), return_exceptions=True)
        assert all(isinstance(r, grpc.aio.AioRpcError) for r in results), results
        address[0] = central
        assert await _ids(lookups, KNOWN[:2]) == ["demo-0000", "demo-0001"]
    finally:
        await lookups.close()


async def test_close_cancels_the_lookups_not_sent_yet(central: str) -> None:
    lookups = CentralCustomers(central, batched=True)
    waiting = lookups.lookup(KNOWN[0])
    await lookups.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert lookups.requests == 0


async def test_a_wrong_count_of_answers_fails_the_waiters(short_central: str) -> None:
    lookups = CentralCustomers(short_central, batched=True)
    try:
        results = await asyncio.gather(*(lookups.lookup(p) for p in KNOWN[:2]), return_exceptions=True)
        assert all(isinstance(r, ValueError) for r in results), results
    finally:
        await lookups.close()


async def test_a_central_that_refuses_connections_fails_the_lookups_at_once() -> None:
    lookups = CentralCustomers(f"127.0.0.1:{free_port()}", batched=True)
    try:
        channel = lookups.channel()
        async with asyncio.timeout(30):
            while (
                state := channel.get_state(try_to_connect=True)
            ) != grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                await channel.wait_for_state_change(state)
        asked = lookups.requests
        answer = lookups.lookup(KNOWN[0])
        # Failed before any request, as gRPC itself would fail one on this channel now.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await answer
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert lookups.requests == asked
    finally:
        await lookups.close()
