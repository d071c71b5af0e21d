"""The dashboard on a real SQLite database and a real LiveState fed by the test."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from central.audit import AuditEntry
from central.db.engine import create_engine
from central.db.migrate import upgrade
from central.live_state import LiveState
from central.records import CallEvent, EventKind, Outcome
from central.stats.intervals import INTERVAL_S, StatsPolicy, interval_start
from central.stats.service import StatsService
from central.store import Store
from central.web.login import OperatorSessions
from central.web.server import Dashboard
from tools.province.certs import issue, make_ca
from tools.province.chromium import CHROMIUM
from vcc.config import OperatorConfig
from vcc.https import client_context
from vcc.passwords import hash_password
from vcc.tls import TlsFiles
from vcc.v1 import site_admin_pb2

SITES = [("gz", "Guangzhou"), ("sz", "Shenzhen"), ("fs", "Foshan")]
OPERATOR, OPERATOR_PASSWORD = "ops", "ops-test-pass"

SCREENSHOTS = Path(os.environ.get("VCC_SCREENSHOT_DIR", Path(__file__).parents[2] / "run" / "screenshots"))


@pytest.fixture(scope="session")
def web_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """Central's certificate of a province CA: the dashboard is served over HTTPS, as central does."""
    folder = tmp_path_factory.mktemp("web-certs")
    make_ca(folder, "gd")
    issued = issue(folder, "central", "1")
    return TlsFiles(folder / "ca.crt", issued.cert, issued.key)


@pytest.fixture
def screenshots() -> Path:
    """Where the browser tests keep their pictures (run/screenshots unless VCC_SCREENSHOT_DIR)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def need_chromium() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run deploy/install-system-deps.sh (make test does)")


def summary(site_id: str, waiting: int = 1, ready: int = 3, talking: int = 2) -> site_admin_pb2.SiteSummary:
    return site_admin_pb2.SiteSummary(
        site_id=site_id,
        name=dict(SITES)[site_id],
        agents_by_state={"READY": ready, "TALKING": talking, "NOT_READY": 1},
        calls_waiting=waiting,
        calls_in_progress=waiting + talking,
        resources=[
            site_admin_pb2.ResourceUsage(id="pstn", kind="trunk", busy=waiting + talking, total=30),
            site_admin_pb2.ResourceUsage(id="tie:x", kind="tie", busy=1, total=10),
        ],
        skill_groups=[
            site_admin_pb2.SkillGroupSummary(
                skill_group="general", calls_waiting=waiting, oldest_wait_s=3.0 * waiting, agents_ready=ready
            ),
        ],
    )


@dataclass
class Fixture:
    dashboard: Dashboard
    live: LiveState
    store: Store
    base: str
    tokens: dict[str, int | None]
    seqs: dict[str, int]
    clock: Callable[[], float]
    # What each site's next published summary says is waiting.
    waiting: dict[str, int] = field(default_factory=dict)
    # The province CA the dashboard's certificate is checked with (tools and Chromium).
    ca: Path = Path()
    # An operator's session cookie (the dashboard shows nothing without one).
    cookie: str = ""
    audit: list[AuditEntry] = field(default_factory=list)

    def http(self, **kw: object) -> httpx.AsyncClient:
        """An HTTPS client of the dashboard trusting the province CA, not logged in."""
        kw.setdefault("timeout", 10)
        return httpx.AsyncClient(base_url=self.base, verify=client_context(self.ca), **kw)  # type: ignore[arg-type]

    def client(self, **kw: object) -> httpx.AsyncClient:
        """An HTTPS client logged in as the operator."""
        return self.http(timeout=5, cookies={"vcc_ops": self.cookie}, **kw)

    def publish(self, site_id: str, **kw: int) -> None:
        """The site's stream delivers a new summary."""
        self.seqs[site_id] = self.seqs.get(site_id, 0) + 1
        token = self.tokens[site_id]
        assert token is not None
        ok = self.live.update(site_id, token, self.seqs[site_id], summary(site_id, **kw), self.clock())
        assert ok

    def kill(self, site_id: str) -> None:
        """The site dies: its stream breaks (and it has no etcd key in these tests)."""
        token = self.tokens[site_id]
        assert token is not None
        self.live.close_stream(site_id, token)

    async def answered_call(self, call_id: str, site_id: str = "gz", wait_s: float = 2.0) -> None:
        now = self.clock()
        K = EventKind

        def e(kind: EventKind, at: float, seq: int, **kw: object) -> CallEvent:
            return CallEvent(call_id=call_id, site_id=site_id, seq=seq, kind=kind, at=at, **kw)  # type: ignore[arg-type]

        await self.store.ingest(
            site_id,
            [
                e(K.ARRIVED, now - wait_s - 10, 1, ani="13800000001", dnis="10000"),
                e(K.ANSWERED, now - 10, 2, agent_code="0101", skill_group="general"),
                e(K.ENDED, now, 3, outcome=Outcome.ANSWERED),
            ],
        )


@contextlib.asynccontextmanager
async def publishing(dash: Fixture, figures: Callable[[str], dict[str, int] | None]) -> AsyncIterator[None]:
    """Every city with a stream publishes `figures(site)` every 0.3 s, as its stream does
    (None: that city is silent)."""

    async def beat() -> None:
        while True:
            for site_id, _ in SITES:
                kw = figures(site_id)
                if dash.tokens.get(site_id) is not None and kw is not None:
                    dash.publish(site_id, **kw)
            await asyncio.sleep(0.3)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@functools.cache
def operator_hash() -> str:
    """One slow hash per test session."""
    return hash_password(OPERATOR_PASSWORD)


def mid_interval_clock() -> Callable[[], float]:
    """Unix time shifted (by less than half an interval) to the middle of a 15-minute interval:
    the calls a test makes (arrived up to a minute ago) fall in the current interval whatever the
    time of day the test runs at. The shift keeps the day: days are whole intervals."""
    now = time.time()
    shift = interval_start(now, INTERVAL_S, StatsPolicy().utc_offset_s) + INTERVAL_S / 2 - now
    return lambda: time.time() + shift


@pytest.fixture
async def dash(tmp_path: Path, web_tls: TlsFiles) -> AsyncIterator[Fixture]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'central.db'}"
    await upgrade(url)
    engine = create_engine(url)
    live = LiveState(SITES, membership=list, max_state_age_s=2.0)
    tokens: dict[str, int | None] = {site_id: live.open_stream(site_id) for site_id, _ in SITES}
    clock = mid_interval_clock()
    stats = StatsService(engine, cache_s=0.2, clock=clock)
    audit: list[AuditEntry] = []

    async def record(entry: AuditEntry) -> None:
        audit.append(entry)

    operators = OperatorSessions(
        [OperatorConfig(login=OPERATOR, password_hash=operator_hash(), role="operations")],
        record,
        engine=engine,  # in the database, as central keeps them
    )
    dashboard = Dashboard(
        live,
        stats,
        province_name="Guangdong",
        push_interval_s=0.3,
        sample_every_s=0.5,
        clock=clock,
        operators=operators,
        tls=web_tls,
    )
    await dashboard.start()
    base = dashboard.url.rstrip("/")
    fx = Fixture(dashboard, live, Store(engine), base, tokens, {}, clock, ca=web_tls.ca, audit=audit)
    async with fx.http() as http:
        reply = await http.post("/api/login", json={"user": OPERATOR, "password": OPERATOR_PASSWORD})
        assert reply.status_code == 200, reply.text
        fx.cookie = reply.cookies["vcc_ops"]
    for site_id, _ in SITES:
        fx.publish(site_id)
    try:
        yield fx
    finally:
        await dashboard.stop()
        await engine.dispose()
