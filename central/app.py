"""The composition root of central: database, migrations, store, membership, election, gRPC server.

Several replicas of one province may run; etcd elects one leader (central.leadership). Every
replica serves reads; only the leader ingests, routes and takes the sites' state streams, and
only it runs the dashboard (on `central.dashboard_listen`). A new leader first fences the
database with its epoch, then syncs the province config, then serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from central import audit, recordings
from central.customer_pins import CustomerPins
from central.customers import demo_customers
from central.db.engine import create_engine, is_sqlite
from central.db.migrate import check_current, upgrade
from central.flow_publisher import FlowPublisher
from central.flows import FlowStore
from central.grpc_api import SERVICE_NAME, CentralService
from central.ivr_api import SERVICE_NAME as IVR_SERVICE_NAME
from central.ivr_api import IvrService
from central.ivr_lookups import Lookups
from central.leadership import Leadership
from central.live_state import LiveState
from central.lost_sites import LostSites
from central.membership import MembershipWatcher
from central.membership_view import MembershipView
from central.metrics import CentralCollector
from central.router import Router
from central.servicedesk.desk import ServiceDesk
from central.servicedesk.grpc_api import SERVICE_NAMES as DESK_SERVICES
from central.stats.service import StatsService
from central.store import Store
from central.web.login import OperatorSessions
from central.web.server import Dashboard
from vcc import tls
from vcc.authz import Authorizer
from vcc.config import ProvinceConfig
from vcc.errors import VccError
from vcc.membership import central_leader_key
from vcc.metrics import CLIENT_INTERCEPTORS, Metrics, MetricsServer
from vcc.person_assertion import PersonGate, Revocations
from vcc.rpc import Server
from vcc.server_edge import server_interceptors
from vcc.shutdown import Stopping
from vcc.tracing import Tracing
from vcc.v1 import audit_pb2_grpc, central_pb2_grpc, ivr_pb2_grpc, recordings_pb2_grpc

log = logging.getLogger(__name__)

# A database that is still starting (a cluster coming up) gets this long before central gives up.
DATABASE_WAIT_S = 60.0
STOP_GRACE_S = 3.0
# Deadlines of the stop's other steps (CentralNode.stop): generous for a loaded machine, bounded.
STEP_S = 3.0
WEB_STOP_S = 5.0
ETCD_STOP_S = 6.0
DATABASE_STOP_S = 10.0
TRACE_FLUSH_S = 10.0
# The replica that serves on `central.listen` unless told otherwise.
DEFAULT_REPLICA_ID = "1"
# A new leader retries binding the dashboard's port this long (the old leader may still hold it).
DASHBOARD_WAIT_S = 10.0
# At start, how long past the lease TTL a replica waits to learn who leads before serving anyway.
SETTLE_EXTRA_S = 2.0


def central_tls(config: ProvinceConfig, replica_id: str) -> tls.TlsFiles | None:
    """This replica's certificate (None: TLS not configured for the province)."""
    if config.tls is None:
        return None
    return tls.node_files(config.tls.ca_file, f"{tls.CENTRAL}-{replica_id}")


class CentralApp:
    """start() wires and serves; stop() undoes it in reverse order."""

    def __init__(
        self,
        config: ProvinceConfig,
        seed_customers: int = 0,
        listen: str | None = None,
        replica_id: str = DEFAULT_REPLICA_ID,
        metrics_listen: str | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.config = config
        self._seed_customers = seed_customers
        self._listen = listen or config.central.listen
        self.replica_id = replica_id
        # The steps of the last stop() that missed their deadline (vcc.shutdown).
        self.stop_overruns: list[str] = []
        self.leadership: Leadership | None = None
        self._leadership_task: asyncio.Task[None] | None = None
        self._collector: CentralCollector | None = None
        self._dashboard_lock = asyncio.Lock()
        self._seeded = False
        self._dashboard_tasks: set[asyncio.Task[None]] = set()
        self.engine: AsyncEngine | None = None
        self.store: Store | None = None
        self.membership: MembershipWatcher | None = None
        self.server: Server | None = None
        self.tls_files: tls.TlsFiles | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self.live_state: LiveState | None = None
        self.router: Router | None = None
        self._router_task: asyncio.Task[None] | None = None
        self._revocations_task: asyncio.Task[None] | None = None
        self.revocations: audit.RevocationFeed | None = None
        self.dashboard: Dashboard | None = None
        self.flows: FlowStore | None = None
        self.flow_publisher: FlowPublisher | None = None
        self._republish_tasks: set[asyncio.Task[None]] = set()
        self.desk: ServiceDesk | None = None
        self.port = 0
        self.dashboard_port = 0
        self.metrics = Metrics(f"central:{replica_id}")
        # central.metrics_listen is replica 1's; another replica has one only when given its own.
        if metrics_listen is None and replica_id == DEFAULT_REPLICA_ID:
            metrics_listen = config.central.metrics_listen
        self.metrics_server = MetricsServer(self.metrics, metrics_listen) if metrics_listen else None
        # The process's entry point builds it from `tracing:` of the config (central.main).
        self.tracing = tracing or Tracing.disabled(f"central:{replica_id}")

    async def start(self) -> int:
        """Migrate, sync the config, start watching etcd and serving; returns the bound port."""
        # Credentials come from central's own environment or file, never the shared province file.
        url = self.config.central.effective_database_url()
        if self.config.central.schema_mode == "require":
            # Migrations are their own step (`vcc central migrate`): never DDL from a replica.
            await with_database_retry(url, lambda: check_current(url))
        else:
            await with_database_retry(url, lambda: upgrade(url))
        CLIENT_INTERCEPTORS.set([*self.tracing.client_interceptors(), *self.metrics.client_interceptors()])
        self.engine = create_engine(url)
        self.store = Store(self.engine)
        self.audit = audit.AuditLog(self.engine)

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
        self.router = Router(
            self.config.routing, self.live_state, self.store, self.config.sites, tracer=self.tracing.tracer
        )
        self._router_task = asyncio.create_task(self.router.run(), name="central-router")

        etcd = self.config.etcd
        self.leadership = Leadership(
            etcd.endpoints,
            central_leader_key(etcd.prefix, self.config.province.id),
            self.replica_id,
            "",
            etcd.lease_ttl_s,
            on_elected=self._elected,
            on_deposed=self._deposed,
        )
        service = CentralService(
            self.store,
            self.config.province.id,
            [s.id for s in self.config.sites],
            self.membership.sites,
            self.router,
            leadership=self.leadership,
            lost=LostSites(self.store, self.membership.sites, self.audit.record),
        )
        self.flows = FlowStore(self.store, time.time)
        self.flow_publisher = FlowPublisher(etcd.endpoints, etcd.prefix, self.config.province.id)
        files = central_tls(self.config, self.replica_id)
        self.tls_files = files
        site_ids = [s.id for s in self.config.sites]
        # Agents whose sessions ended: their sites' person assertions are refused from then on.
        self.revocations = audit.RevocationFeed(self.audit, Revocations())
        with contextlib.suppress(Exception):  # (logged by the task's first round, which tries again)
            await self.revocations.refresh()
        self._revocations_task = asyncio.create_task(self.revocations.run(), name="central-revocations")
        self.pins = CustomerPins(self.engine, self.store, self.audit)
        ivr = IvrService(
            self.flows,
            self.config,
            self.flow_publisher,
            leadership=self.leadership,
            lookups=Lookups(self.store, self.pins),
            audit=self.audit.record,
        )
        # Certificates the table refuses are audited (who tried what, from where).
        authorizer = Authorizer(
            site_ids, on_denied=self.audit.record_denied, persons=self._person_gate(files)
        )
        self.server = Server(
            [SERVICE_NAME, IVR_SERVICE_NAME, audit.SERVICE_NAME, recordings.SERVICE_NAME, *DESK_SERVICES],
            tls=files,
            interceptors=server_interceptors(self.tracing, self.metrics, authorizer if files else None),
        )
        central_pb2_grpc.add_CentralServiceServicer_to_server(service, self.server.grpc)
        audit_pb2_grpc.add_AuditServiceServicer_to_server(
            audit.AuditService(self.audit, site_ids, revocations=self.revocations), self.server.grpc
        )
        ivr_pb2_grpc.add_IvrServiceServicer_to_server(ivr, self.server.grpc)
        # The index of the sites' call recordings.
        recordings_pb2_grpc.add_RecordingIndexServiceServicer_to_server(
            recordings.RecordingIndexService(recordings.RecordingIndex(self.engine), site_ids),
            self.server.grpc,
        )
        # Customers, tickets, knowledge, history (settings from central's environment).
        self.desk = ServiceDesk(self.store, [s.id for s in self.config.sites])
        self.desk.add_to(self.server.grpc, self.pins)
        self.port = await self.server.start(self._listen)
        collector = CentralCollector(
            replica_id=self.replica_id,
            clock=time.time,
            leadership=lambda: self.leadership,
            live_state=self.live_state,
            store=self.store,
            site_ids=[s.id for s in self.config.sites],
        )
        self.metrics.register(collector)
        self._collector = collector
        if self.metrics_server is not None:
            await self.metrics_server.start()
        # Serving only once this replica knows who leads: a client is then not bounced at once.
        await self.server.set_serving(False)
        self.leadership.address = f"{self._listen.rsplit(':', 1)[0]}:{self.port}"
        self._leadership_task = asyncio.create_task(self.leadership.run(), name="central-leadership")
        await self._settle(etcd.lease_ttl_s + SETTLE_EXTRA_S)
        await self.server.set_serving(True)
        log.info(
            "central of province %s, replica %s, serving on port %d (%s, metrics %s)",
            self.config.province.id,
            self.replica_id,
            self.port,
            self.leadership.role,
            self.metrics_url or "off",
        )
        return self.port

    def _person_gate(self, files: tls.TlsFiles | None) -> PersonGate | None:
        """Who may act for which person at the service desk: the config's people, and the agents a
        site's live presence shows (added at runtime by its administrator, role `agent`)."""
        if files is None:
            return None
        roles = {s.id: {a.code: a.role for a in s.agents} for s in self.config.sites}

        def roster_agent(site_id: str, code: str) -> bool:
            live = self.live_state
            return live is not None and code in live.site(site_id, time.time()).presence

        assert self.revocations is not None
        return PersonGate(
            files.ca,
            roles,
            roster_agent=roster_agent,
            revocations=self.revocations.revocations,
            current=self.revocations.current,
        )

    @property
    def metrics_url(self) -> str:
        return self.metrics_server.url if self.metrics_server is not None and self.metrics_server.port else ""

    async def _settle(self, timeout_s: float) -> None:
        """Until this replica leads or knows the leader's address (bounded: etcd may be away)."""
        leadership = self.leadership
        assert leadership is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not (leadership.is_leader or leadership.leader_address()):
            leadership.changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.warning(
                    "replica %s: no leader known after %.0fs; serving anyway", self.replica_id, timeout_s
                )
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await leadership.changed.wait()

    async def _elected(self, epoch: int) -> None:
        """Before acting as leader: fence the database, sync the province, start the dashboard."""
        assert self.store is not None
        await self.store.take_over(epoch)
        await self.store.sync_province(self.config)
        if self._collector is not None and self.engine is not None:
            # Today's figures as the records give them, before this replica ingests anything.
            await self._collector.seed(StatsService(self.engine, self._collector.policy))
        # The province config central now serves from (a configuration push), in the audit log.
        await self.audit.record(
            audit.AuditEntry(
                at=time.time(),
                actor=f"central/{self.replica_id}",
                action="config-sync",
                target=f"province {self.config.province.id}",
                detail={"epoch": str(epoch), "sites": ",".join(s.id for s in self.config.sites)},
            )
        )
        if self._seed_customers and not self._seeded:
            await self.store.seed_demo_customers(self._seed_customers, [s.name for s in self.config.sites])
            await self.pins.seed_demo([c.customer_id for c in demo_customers(self._seed_customers, [])])
            self._seeded = True
            log.info("%d demo customers in place", self._seed_customers)
        if self.desk is not None:
            # Only the leader sends notifications and escalates: never twice for one ticket.
            self.desk.start_background()
        if self.config.central.dashboard_listen:
            # In the background: the deposed leader may still hold the port for a moment.
            self._spawn_dashboard()
        # In the background: etcd being slow must not hold up the new leader's service.
        task = asyncio.create_task(self._republish_flows(), name="central-republish-flows")
        self._republish_tasks.add(task)
        task.add_done_callback(self._republish_tasks.discard)

    async def _republish_flows(self) -> None:
        """Sites learn flows from etcd: a new leader writes again what etcd lacks (never blocks leading)."""
        if self.flows is None or self.flow_publisher is None:
            return
        try:
            await self.flow_publisher.republish(self.flows)
        except VccError as exc:
            log.warning("IVR flows not republished to etcd: %s (the next push or leader retries)", exc)

    async def _deposed(self, epoch: int) -> None:
        if self.store is not None:
            self.store.deposed()
        if self._collector is not None:
            self._collector.deposed()
        if self.desk is not None:
            await self.desk.stop_background()
        await self._stop_dashboard()

    def _spawn_dashboard(self) -> None:
        task = asyncio.create_task(self._start_dashboard(), name="central-dashboard")
        self._dashboard_tasks.add(task)
        task.add_done_callback(self._dashboard_tasks.discard)

    async def _start_dashboard(self) -> None:
        assert self.live_state is not None and self.engine is not None
        host, port = self.config.central.dashboard_listen.rsplit(":", 1)
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(DASHBOARD_WAIT_S),
            wait=wait_exponential(multiplier=0.1, max=1.0),
            retry=retry_if_exception_type(OSError),
            reraise=True,
        ):
            with attempt:
                async with self._dashboard_lock:
                    if self.dashboard is not None:
                        return
                    dashboard = Dashboard(
                        self.live_state,
                        StatsService(self.engine),
                        host=host,
                        port=int(port),
                        province_name=self.config.province.name,
                        tickets=self.desk.ticket_queries if self.desk is not None else None,
                        # Sessions in the database: a leader change keeps them.
                        operators=OperatorSessions(
                            self.config.operators, self.audit.record, engine=self.engine
                        ),
                        tls=self.tls_files,
                    )
                    self.dashboard_port = await dashboard.start()
                    self.dashboard = dashboard

    async def _stop_dashboard(self) -> None:
        for task in list(self._dashboard_tasks):
            task.cancel()
        async with self._dashboard_lock:
            if self.dashboard is not None:
                await self.dashboard.stop()
                self.dashboard = None

    async def stop(self) -> None:
        """Hand leadership over (lease revoked), then NOT_SERVING, the server stops with a grace
        period, the watch ends, the pool closes. Every step has a deadline (vcc.shutdown)."""
        stop = Stopping(f"central {self.replica_id}")
        if self.leadership is not None:
            await stop.step("leadership handed over", self.leadership.close(), ETCD_STOP_S)
            self._leadership_task = None
        await stop.step("dashboard", self._stop_dashboard(), WEB_STOP_S)
        if self.desk is not None:
            await stop.step("service desk tasks", self.desk.stop_background(), STEP_S)
        if self.server is not None:
            await stop.step("gRPC server", self.server.stop(STOP_GRACE_S), STOP_GRACE_S + STEP_S)
            self.server = None
        if self._router_task is not None:
            # Cancelling writes the decisions still queued: time for the database.
            await stop.tasks("router", [self._router_task], DATABASE_STOP_S)
            self._router_task = None
        if self._watch_task is not None:
            await stop.tasks("sites watch", [self._watch_task], STEP_S)
            self._watch_task = None
        if self._revocations_task is not None:
            await stop.tasks("person revocations", [self._revocations_task], STEP_S)
            self._revocations_task = None
        await stop.tasks("IVR republishing", list(self._republish_tasks), STEP_S)
        if self.flow_publisher is not None:
            await stop.step("IVR publisher", self.flow_publisher.close(), STEP_S)
        if self.metrics_server is not None:
            await stop.step("metrics server", self.metrics_server.stop(), STEP_S)
        if self.engine is not None:
            await stop.step("database pool", self.engine.dispose(), DATABASE_STOP_S)
            self.engine = None
        await stop.step("traces flushed", asyncio.to_thread(self.tracing.shutdown), TRACE_FLUSH_S)
        self.stop_overruns = stop.overrun
        log.info("central stopped in %.1fs", stop.took_s())


async def with_database_retry(url: str, step: Callable[[], Awaitable[None]]) -> None:
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
