"""`vcc bench stats`: the statistics' two benchmarks (issue 6).

- ingest: call events stored per second at central on PostgreSQL. A temporary PostgreSQL server
  (tools/province/postgres_server.py), etcd and a real central process (tools/cluster.Cluster, no site
  process); several concurrent "sites" in this process drive `CentralService.IngestCallEvents`
  over gRPC as site outboxes do: one batch in flight per site, each batch the next events of
  overlapping calls in time order (a call's events spread over several batches, as they leave a
  real outbox), eight events per answered call. A batch refused with UNAVAILABLE (a serialization
  conflict between concurrent batches) is sent again, as the shipper does; retries are reported.
- dashboard latency: from an event at a site to the dashboard showing it. A real site process
  and central (SQLite) with the dashboard on; a caller dials, presses the menu digit and is
  queued (nobody is ready to take it); the time from the site's own stamp of `queued` to the
  receipt of the first `/api/stream` payload that shows the site's calls waiting one higher; then
  the caller hangs up, and the time from the hang-up to the payload showing it one lower. One
  call at a time, with a random pause between them so the samples do not lock onto the push
  period. Site and bench share this machine's clock.

The bench client runs on the same cores as the cluster; the figures include it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import ssl
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from central.web.live_delta import StreamReader
from tools.bench.cluster import cheap_password_hash
from tools.province.certs import site_stem
from tools.province.cluster import Cluster
from tools.province.generate import (
    DEMO_OPERATOR,
    DEMO_OPERATOR_PASSWORD,
    SiteSpec,
    generate_province,
    write_province,
)
from tools.province.netutil import free_port
from tools.province.postgres_server import create_database, start_temporary
from tools.simulation.report import percentiles_ms
from vcc import rpc
from vcc.https import client_verify, web_url
from vcc.tls import TRUNK, central_server, site_server
from vcc.v1 import central_pb2, central_pb2_grpc, common_pb2, trunk_pb2, trunk_pb2_grpc

Progress = Callable[[str], None]
RPC_DEADLINE_S = 30.0
INGEST_SITES = ("gz", "sz", "fs", "dg", "zh", "st")
K = common_pb2
# One answered call as a site records it: (seconds after arrival, kind).
ANSWERED_CALL = (
    (0.0, K.CALL_EVENT_KIND_ARRIVED),
    (0.05, K.CALL_EVENT_KIND_IVR_STARTED),
    (3.0, K.CALL_EVENT_KIND_DIGITS),
    (3.01, K.CALL_EVENT_KIND_QUEUED),
    (8.0, K.CALL_EVENT_KIND_RINGING),
    (11.0, K.CALL_EVENT_KIND_ANSWERED),
    (190.0, K.CALL_EVENT_KIND_CALLER_HUNG_UP),
    (190.01, K.CALL_EVENT_KIND_ENDED),
)
LATENCY_WAIT_S = 15.0
MAX_ATTEMPTS = 50


# -- ingest ------------------------------------------------------------------------------------------


def site_batches(
    site_id: str, calls: int, batch_events: int, *, rate_per_s: float = 5.0, run: str = ""
) -> list[central_pb2.IngestCallEventsRequest]:
    """The site's events of `calls` answered calls arriving `rate_per_s`, in time order, in batches."""
    start = time.time() - calls / rate_per_s - 300.0
    timeline: list[tuple[float, int, common_pb2.CallEvent]] = []
    for n in range(calls):
        call_id = f"bench-{run}-{site_id}-{n:07d}"
        arrived = start + n / rate_per_s
        for seq, (offset, kind) in enumerate(ANSWERED_CALL, start=1):
            event = common_pb2.CallEvent(
                call_id=call_id, site_id=site_id, seq=seq, kind=kind, at=rpc.timestamp(arrived + offset)
            )
            if kind in (K.CALL_EVENT_KIND_ARRIVED,):
                event.ani = f"1380000{n % 10_000:04d}"
                event.dnis = "10000"
            elif kind == K.CALL_EVENT_KIND_DIGITS:
                event.data["digits"] = "1"
            elif kind in (K.CALL_EVENT_KIND_QUEUED, K.CALL_EVENT_KIND_RINGING, K.CALL_EVENT_KIND_ANSWERED):
                event.skill_group = "general"
                if kind != K.CALL_EVENT_KIND_QUEUED:
                    event.agent_code = f"{10 + n % 5:02d}{1 + n % 20:02d}"
            elif kind == K.CALL_EVENT_KIND_ENDED:
                event.outcome = K.CALL_OUTCOME_ANSWERED
            timeline.append((arrived + offset, seq, event))
    timeline.sort(key=lambda item: (item[0], item[1]))
    events = [e for _, _, e in timeline]
    return [
        central_pb2.IngestCallEventsRequest(site_id=site_id, events=events[i : i + batch_events])
        for i in range(0, len(events), batch_events)
    ]


@dataclass
class _SiteRun:
    batches: list[central_pb2.IngestCallEventsRequest]
    stored: int = 0
    duplicates: int = 0
    retries: int = 0
    batch_s: list[float] = field(default_factory=list)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.UNAVAILABLE


async def _ship(central: str, site: _SiteRun, start: asyncio.Event) -> None:
    """As a site's shipper does: one batch in flight; UNAVAILABLE (central busy, a serialization
    conflict in the database) sends the same batch again after a short pause. Dials as the site
    (its own certificate: central takes a site's records from that site only)."""
    persona = site_stem(site.batches[0].site_id) if site.batches else None
    async with rpc.channel(central, expect=central_server(), persona=persona) as ch:
        stub = central_pb2_grpc.CentralServiceStub(ch)
        await start.wait()
        for request in site.batches:
            began = time.perf_counter()
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_retryable),
                stop=stop_after_attempt(MAX_ATTEMPTS),
                wait=wait_random_exponential(multiplier=0.02, max=0.5),
                reraise=True,
            ):
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        site.retries += 1
                    reply = await stub.IngestCallEvents(request, timeout=RPC_DEADLINE_S)
            site.batch_s.append(time.perf_counter() - began)
            site.stored += reply.stored
            site.duplicates += reply.duplicates


async def ingest(
    *,
    sites: int = 4,
    calls_per_site: int = 1500,
    batch_events: int = 200,
    warmup_calls: int = 100,
    progress: Progress = lambda _: None,
) -> dict[str, Any]:
    """Events and calls stored per second at central (PostgreSQL) from `sites` concurrent sites."""
    if not 1 <= sites <= len(INGEST_SITES):
        raise ValueError(f"sites: 1 to {len(INGEST_SITES)}")
    site_ids = INGEST_SITES[:sites]
    progress("ingest: starting a temporary PostgreSQL server")
    server = await asyncio.to_thread(start_temporary)
    tmp = Path(tempfile.mkdtemp(prefix="vcc-bench-stats-"))
    try:
        url = await create_database(server, prefix="vcc_bench")
        raw = generate_province(
            [SiteSpec(s, s, trunk_channels=10, agents={"general": 1}) for s in site_ids],
            etcd_endpoint="127.0.0.1:2379",
            central_listen=f"127.0.0.1:{free_port()}",
            database_url=url,
            outbox_dir=tmp / "outbox",
            password_hash=cheap_password_hash(),
        )
        config = await asyncio.to_thread(write_province, raw, tmp / "province.yaml")
        progress(f"ingest: starting etcd and central on PostgreSQL; {sites} sites in this process")
        async with await Cluster.start(config, tmp / "cluster", sites=[]) as cluster:
            central = cluster.config.central.listen
            # Warm-up (connections, the database's first pages), not measured.
            warm = [_SiteRun(site_batches(s, warmup_calls, batch_events, run="warm")) for s in site_ids]
            go = asyncio.Event()
            go.set()
            await asyncio.gather(*(_ship(central, w, go) for w in warm))
            runs = [_SiteRun(site_batches(s, calls_per_site, batch_events, run="run")) for s in site_ids]
            total_events = sum(len(b.events) for r in runs for b in r.batches)
            progress(
                f"ingest: {total_events} events of {sites * calls_per_site} calls, {batch_events} a batch"
            )
            start = asyncio.Event()
            tasks = [asyncio.create_task(_ship(central, r, start)) for r in runs]
            await asyncio.sleep(0.2)  # every channel connected before the clock starts
            began = time.perf_counter()
            start.set()
            await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - began
            stored = sum(r.stored for r in runs)
            records = await _count_records(central, site_ids)
    finally:
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(shutil.rmtree, server.root.parent, True)
        await asyncio.to_thread(shutil.rmtree, tmp, True)
    calls = sites * calls_per_site
    return {
        "database": "postgresql",
        "sites": sites,
        "calls": calls,
        "events": total_events,
        "events_per_call": len(ANSWERED_CALL),
        "batch_events": batch_events,
        "elapsed_s": elapsed,
        "events_per_s": total_events / elapsed,
        "calls_per_s": calls / elapsed,
        "stored": stored,
        "duplicates": sum(r.duplicates for r in runs),
        # Batches sent again after UNAVAILABLE (counted in the elapsed time, as a site lives it).
        "retries": sum(r.retries for r in runs),
        "records_at_central": records,
        "batch_ms": percentiles_ms(s for r in runs for s in r.batch_s),
        "ok": stored == total_events and records == calls + sites * warmup_calls,
    }


async def _count_records(central: str, site_ids: tuple[str, ...]) -> int:
    count = 0
    async with rpc.channel(central, expect=central_server()) as ch:
        stub = central_pb2_grpc.CentralServiceStub(ch)
        for site_id in site_ids:
            token = ""
            while True:
                page = await stub.ListCallRecords(
                    central_pb2.ListCallRecordsRequest(
                        entry_site_id=site_id, page_size=1000, page_token=token
                    ),
                    timeout=RPC_DEADLINE_S,
                )
                count += len(page.records)
                token = page.next_page_token
                if not token:
                    break
    return count


# -- dashboard latency -------------------------------------------------------------------------------


class _Stream:
    """The dashboard's `/api/stream`, read in the background: the site's latest calls waiting."""

    def __init__(self, base: str, site_id: str, verify: ssl.SSLContext | bool) -> None:
        self._base = base
        self._verify = verify
        self._site_id = site_id
        self.waiting: int | None = None
        self.changed = asyncio.Condition()
        self.payloads = 0

    async def run(self) -> None:
        async with httpx.AsyncClient(
            base_url=self._base, timeout=httpx.Timeout(10.0, read=None), verify=self._verify
        ) as http:
            # The demo operator of generated provinces (the dashboard shows nothing without a login).
            login = {"user": DEMO_OPERATOR, "password": DEMO_OPERATOR_PASSWORD}
            (await http.post("/api/login", json=login)).raise_for_status()
            await self._read(http)

    async def _read(self, http: httpx.AsyncClient) -> None:
        reader = StreamReader()  # the whole snapshot, then its changes, as the page keeps it
        async with http.stream("GET", "/api/stream") as reply:
            async for line in reply.aiter_lines():
                data = reader.line(line)
                if data is None:
                    continue
                site = next(s for s in data["sites"] if s["site_id"] == self._site_id)
                waiting = site["live"]["calls_waiting"] if site["live"] else None
                async with self.changed:
                    self.waiting = waiting
                    self.payloads += 1
                    self.changed.notify_all()

    async def until(self, waiting: int) -> float:
        """Wait for a payload showing `waiting`; the receipt time (unix seconds)."""
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: self.waiting == waiting), LATENCY_WAIT_S)
            return time.time()


@contextlib.asynccontextmanager
async def _reading(stream: _Stream) -> AsyncIterator[None]:
    task = asyncio.create_task(stream.run(), name="bench-sse")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await task


async def _queued_call(
    stub: trunk_pb2_grpc.TrunkIngressServiceAsyncStub, dnis: str, n: int
) -> tuple[Any, float]:
    """A call that dials, presses 1 and is queued; the open call and the site's stamp of `queued`."""
    call = stub.PlaceCall(timeout=120.0)
    await call.write(
        trunk_pb2.PlaceCallRequest(
            offer=trunk_pb2.CallOffer(idempotency_key=uuid.uuid4().hex, ani=f"1380000{n % 10:04d}", dnis=dnis)
        )
    )
    while True:
        response = await call.read()
        if not isinstance(response, trunk_pb2.PlaceCallResponse):
            raise RuntimeError("the call ended before it was queued")
        kind = response.WhichOneof("progress")
        if kind == "prompt":
            await call.write(trunk_pb2.PlaceCallRequest(digits=trunk_pb2.CallerDigits(digits="1")))
        elif kind == "queued":
            return call, rpc.unix_s(response.at) if response.HasField("at") else time.time()
        elif kind == "ended":
            raise RuntimeError(f"the call ended before it was queued: {response.ended}")


async def _hang_up(call: Any) -> None:
    with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
        await call.write(trunk_pb2.PlaceCallRequest(hang_up=trunk_pb2.CallerHangUp()))
        await call.done_writing()
        while await call.read() is not grpc.aio.EOF:
            pass


async def dashboard_latency(*, samples: int = 100, progress: Progress = lambda _: None) -> dict[str, Any]:
    """Site event → dashboard payload: p50/p99 for a call queued, and for a call leaving the queue."""
    tmp = Path(tempfile.mkdtemp(prefix="vcc-bench-dash-"))
    port = free_port()
    try:
        raw = generate_province(
            [SiteSpec("gz", "gz", trunk_channels=20, agents={"general": 1})],
            etcd_endpoint="127.0.0.1:2379",
            central_listen=f"127.0.0.1:{free_port()}",
            database_url=f"sqlite+aiosqlite:///{tmp / 'central.db'}",
            outbox_dir=tmp / "outbox",
            password_hash=cheap_password_hash(),
            dashboard_listen=f"127.0.0.1:{port}",
        )
        config = await asyncio.to_thread(write_province, raw, tmp / "province.yaml")
        progress("dashboard latency: starting etcd, central (dashboard on) and one site")
        async with await Cluster.start(config, tmp / "cluster") as cluster:
            base = web_url(cluster.config, f"127.0.0.1:{port}", "")
            verify = client_verify(cluster.config)
            await _wait_dashboard(base, verify)
            stream = _Stream(base, "gz", verify)
            rng = random.Random(6)
            queued_s: list[float] = []
            left_s: list[float] = []
            dnis = cluster.config.province.service_number
            async with (
                _reading(stream),
                rpc.channel(cluster.config.site("gz").listen, persona=TRUNK, expect=site_server("gz")) as ch,
            ):
                stub = trunk_pb2_grpc.TrunkIngressServiceStub(ch)
                await stream.until(0)
                progress(f"dashboard latency: {samples} calls, one at a time")
                for n in range(samples):
                    await asyncio.sleep(rng.uniform(0.0, 0.6))
                    call, queued_at = await _queued_call(stub, dnis, n)
                    queued_s.append(await stream.until(1) - queued_at)
                    await asyncio.sleep(rng.uniform(0.0, 0.6))
                    hung_up_at = time.time()
                    await _hang_up(call)
                    left_s.append(await stream.until(0) - hung_up_at)
            payloads = stream.payloads
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, True)
    return {
        "samples": samples,
        "push_interval_s": 0.5,
        "payloads_read": payloads,
        "queued_to_shown_ms": percentiles_ms(queued_s),
        "hang_up_to_shown_ms": percentiles_ms(left_s),
        "all_ms": percentiles_ms(queued_s + left_s),
    }


async def _wait_dashboard(base: str, verify: ssl.SSLContext | bool, timeout_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with httpx.AsyncClient(base_url=base, timeout=2.0, verify=verify) as http:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get("/healthz")).status_code == 200:
                    return
            if loop.time() > deadline:
                raise RuntimeError(f"the dashboard at {base} did not answer within {timeout_s:.0f}s")
            await asyncio.sleep(0.1)


async def stats_bench(
    *,
    sites: int = 4,
    calls_per_site: int = 1500,
    batch_events: int = 200,
    samples: int = 100,
    progress: Progress = lambda _: None,
) -> dict[str, Any]:
    """Both benches, one after the other."""
    return {
        "ingest": await ingest(
            sites=sites, calls_per_site=calls_per_site, batch_events=batch_events, progress=progress
        ),
        "dashboard_latency": await dashboard_latency(samples=samples, progress=progress),
    }
