"""The composition root of central: database, migrations, store, membership, gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from central.db.engine import create_engine, is_sqlite
from central.db.migrate import upgrade
from central.grpc_api import SERVICE_NAME, CentralService
from central.live_state import LiveState
from central.stats.service import StatsService
from central.web.server import Dashboard
from central.membership import MembershipWatcher
from central.membership_view import MembershipView
from central.router import Router
from central.store import Store
from vcc.config import ProvinceConfig
from vcc.rpc import Server
from vcc.v1 import central_pb2_grpc

log = logging.getLogger(__name__)

# A database that is still starting (a cluster coming up) gets this long before central gives up.
DATABASE_WAIT_S = 60.0
STOP_GRACE_S = 3.0


class CentralApp:
    """start() wires and serves; stop() undoes it in reverse order."""

    def __init__(self, config: ProvinceConfig, seed_customers: int = 0, listen: str | None = None) -> None:
        self.config = config
        self._seed_customers = seed_customers
        self._listen = listen or config.central.listen
        self.engine: AsyncEngine | None = None
        self.store: Store | None = None
        self.membership: MembershipWatcher | None = None
        self.server: Server | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self.live_state: LiveState | None = None
        self.router: Router | None = None
        self._router_task: asyncio.Task[None] | None = None
        self.dashboard: Dashboard | None = None
        self.port = 0
        self.dashboard_port = 0

    async def start(self) -> int:
        """Migrate, sync the config, start watching etcd and serving; returns the bound port."""
        url = self.config.central.database_url
        await _with_database_retry(url, lambda: upgrade(url))
        self.engine = create_engine(url)
        self.store = Store(self.engine)
        await self.store.sync_province(self.config)
        if self._seed_customers:
            await self.store.seed_demo_customers(self._seed_customers, [s.name for s in self.config.sites])
            log.info("%d demo customers in place", self._seed_customers)

        view = MembershipView((s.id, s.name) for s in self.config.sites)
        self.membership = MembershipWatcher(
            view, self.config.etcd.endpoints, self.config.etcd.prefix, self.config.province.id
        )
        self._watch_task = asyncio.create_task(self.membership.run(), name="central-membership")

        self.live_state = LiveState(
            ((s.id, s.name) for s in self.config.sites),
            self.membership.sites,
            self.config.routing.max_state_age_s,
        )
        self.router = Router(self.config.routing, self.live_state, self.store, self.config.sites)
        self._router_task = asyncio.create_task(self.router.run(), name="central-router")

        service = CentralService(
            self.store,
            self.config.province.id,
            [s.id for s in self.config.sites],
            self.membership.sites,
            self.router,
        )
        self.server = Server([SERVICE_NAME])
        central_pb2_grpc.add_CentralServiceServicer_to_server(service, self.server.grpc)
        self.port = await self.server.start(self._listen)
        log.info("central of province %s serving on port %d", self.config.province.id, self.port)
        if self.config.central.dashboard_listen:
            host, port = self.config.central.dashboard_listen.rsplit(":", 1)
            self.dashboard = Dashboard(
                self.live_state,
                StatsService(self.engine),
                host=host,
                port=int(port),
                province_name=self.config.province.name,
            )
            self.dashboard_port = await self.dashboard.start()
            log.info("dashboard on http://%s:%d/", host, self.dashboard_port)
        return self.port

    async def stop(self) -> None:
        """NOT_SERVING, then the server stops with a grace period, the watch ends, the pool closes."""
        if self.dashboard is not None:
            await self.dashboard.stop()
            self.dashboard = None
        if self.server is not None:
            await self.server.stop(STOP_GRACE_S)
            self.server = None
        if self._router_task is not None:
            # Cancelling writes the decisions still queued.
            self._router_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._router_task
            self._router_task = None
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
            self._watch_task = None
        if self.engine is not None:
            await self.engine.dispose()
            self.engine = None
        log.info("central stopped")


async def _with_database_retry(url: str, step: Callable[[], Awaitable[None]]) -> None:
    # A database server that is not up yet refuses connections; a bad SQLite path never heals.
    transient: tuple[type[Exception], ...] = (
        (OSError,) if is_sqlite(url) else (OSError, OperationalError, InterfaceError)
    )
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(DATABASE_WAIT_S),
        wait=wait_exponential(multiplier=0.2, max=3.0),
        retry=retry_if_exception_type(transient),
        before_sleep=lambda state: (
            log.warning("database not reachable yet: %s", state.outcome.exception())
            if state.outcome
            else None
        ),
        reraise=True,
    ):
        with attempt:
            await step()
