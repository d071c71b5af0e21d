"""Composition root of a site node: builds every part from the config, starts and stops them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from site_node.call_tracer import CallTracer, ShipTracing
from site_node.callcontrol import Switchboard
from site_node.callcontrol.domain import AskRoute, LegToOrigin, LegToTarget, OfferRemote
from site_node.grpc_api.admin_service import SiteAdmin
from site_node.grpc_api.desktop_service import AgentDesktop
from site_node.grpc_api.peers import PeerLinks, SitePeer
from site_node.grpc_api.summary import site_summary
from site_node.grpc_api.trunk_service import TrunkIngress
from site_node.links.central_link import CentralLink
from site_node.links.customers import CentralCustomers
from site_node.links.leader_watch import LeaderWatch
from site_node.links.membership import Membership
from site_node.metrics import ShipperFigures, SiteCollector
from site_node.records.outbox import Outbox
from site_node.records.shipper import Shipper
from site_node.runtime import SiteRuntime
from vcc import membership
from vcc.config import ProvinceConfig
from vcc.metrics import CLIENT_INTERCEPTORS, Metrics, MetricsServer
from vcc.rpc import Server
from vcc.tracing import Tracing
from vcc.v1 import cti_pb2_grpc, peer_pb2_grpc, site_admin_pb2, site_admin_pb2_grpc, trunk_pb2_grpc

log = logging.getLogger(__name__)

SERVICES = (
    "vcc.v1.TrunkIngressService",
    "vcc.v1.AgentDesktopService",
    "vcc.v1.SiteAdminService",
    "vcc.v1.SitePeerService",
)
# On a graceful stop, how long the outbox may take to reach central.
DRAIN_ON_STOP_S = 3.0


class SiteNode:
    def __init__(
        self,
        province: ProvinceConfig,
        site_id: str,
        metrics_listen: str | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.province = province
        self.site = province.site(site_id)
        self.started_at = time.time()
        self.address = self.site.listen
        self._tasks: list[asyncio.Task[None]] = []
        self.metrics = Metrics(f"site:{site_id}")
        listen = self.site.metrics_listen if metrics_listen is None else metrics_listen
        self.metrics_server = MetricsServer(self.metrics, listen) if listen else None
        # The process's entry point builds it from `tracing:` of the config (site_node.main).
        self.tracing = tracing or Tracing.disabled(f"site:{site_id}")

    async def start(self) -> None:
        site = self.site
        # Every channel this node's links open from here on times its RPCs (vcc.metrics).
        # Tracing first: its client span is open while the metrics interceptor times the call.
        CLIENT_INTERCEPTORS.set([*self.tracing.client_interceptors(), *self.metrics.client_interceptors()])
        outbox_path = Path(site.outbox_path or f"vcc-outbox-{site.id}.db")
        outbox_path.parent.mkdir(parents=True, exist_ok=True)
        self.outbox = await Outbox.open(outbox_path)
        etcd = self.province.etcd
        # Which central replica leads (falls back to central.listen while etcd names none).
        self.leader = LeaderWatch(
            list(etcd.endpoints),
            membership.central_leader_key(etcd.prefix, self.province.province.id),
            self.province.central.listen,
        )
        self.customers = CentralCustomers(self.leader.address)
        sites = self.province.sites
        self.switchboard = Switchboard(
            site,
            self.province.province.service_number,
            routing=self.province.routing,
            agent_sites={a.code: s.id for s in sites for a in s.agents},
            site_groups={s.id: frozenset(g.id for g in s.skill_groups) for s in sites},
        )
        calls = CallTracer(self.tracing.tracer, site.id) if self.tracing.enabled else None
        self.runtime = SiteRuntime(self.switchboard, self.outbox, self.customers.lookup, tracer=calls)
        self.server = Server(
            SERVICES, [*self.tracing.server_interceptors(), self.metrics.server_interceptor()]
        )
        trunk_pb2_grpc.add_TrunkIngressServiceServicer_to_server(TrunkIngress(self.runtime), self.server.grpc)
        cti_pb2_grpc.add_AgentDesktopServiceServicer_to_server(AgentDesktop(self.runtime), self.server.grpc)
        site_admin_pb2_grpc.add_SiteAdminServiceServicer_to_server(
            SiteAdmin(self.runtime, self.summary), self.server.grpc
        )
        self.peer = SitePeer(self.runtime)
        peer_pb2_grpc.add_SitePeerServiceServicer_to_server(self.peer, self.server.grpc)
        port = await self.server.start(site.listen)
        self.address = f"{site.listen.rsplit(':', 1)[0]}:{port}"
        self.shipper = Shipper(
            self.outbox,
            site.id,
            self.leader.address,
            tracing=ShipTracing(self.tracing.tracer, calls) if calls is not None else None,
        )
        self.membership = Membership(
            list(etcd.endpoints),
            membership.site_key(etcd.prefix, self.province.province.id, site.id),
            etcd.lease_ttl_s,
            self.summary,
        )
        self.central_link = CentralLink(self.runtime, self.leader.address, self.summary)
        self.peer_links = PeerLinks(self.runtime, self._peer_address)
        self.runtime.province = _Province(self)
        self.metrics.register(
            SiteCollector(
                self.switchboard,
                clock=time.time,
                outbox_pending=lambda: self.outbox.pending_count,
                outbox_dead=lambda: self.outbox.dead_letter_count,
                shipper=lambda: ShipperFigures(
                    self.shipper.shipped, self.shipper.failures, self.shipper.dead_lettered
                ),
                leader_epoch=lambda: self.leader.leader.epoch if self.leader.leader is not None else None,
                central_connected=lambda: self.central_link.connected,
            )
        )
        if self.metrics_server is not None:
            await self.metrics_server.start()
        self._tasks = [
            asyncio.create_task(self.leader.run(), name="central-leader-watch"),
            asyncio.create_task(self.shipper.run(), name="shipper"),
            asyncio.create_task(self.membership.run(), name="membership"),
            asyncio.create_task(self.central_link.run(), name="central-link"),
        ]
        log.info(
            "site %s serving on %s (outbox %s, metrics %s)",
            site.id,
            self.address,
            outbox_path,
            self.metrics_url or "off",
        )

    @property
    def metrics_url(self) -> str:
        return self.metrics_server.url if self.metrics_server is not None and self.metrics_server.port else ""

    def _peer_address(self, site_id: str) -> str | None:
        for s in self.province.sites:
            if s.id == site_id:
                return s.listen
        return None

    def summary(self) -> site_admin_pb2.SiteSummary:
        return site_summary(
            self.switchboard,
            name=self.site.name,
            address=self.address,
            started_at=self.started_at,
            now=time.time(),
            outbox_pending=self.outbox.pending_count,
        )

    async def stop(self) -> None:
        """Graceful stop: NOT_SERVING, calls end with records kept, outbox drained (bounded)."""
        log.info("site %s stopping", self.site.id)
        await self.server.set_serving(False)
        await self.runtime.close()
        await self.server.stop(grace_s=1.0)
        await self.shipper.stop(drain_s=DRAIN_ON_STOP_S)
        await self.membership.close()
        # The background tasks end before the channels they use are closed.
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.peer_links.close()
        await self.central_link.close()
        await self.customers.close()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        await self.outbox.close()
        # The last spans (the shutdown's) are flushed off the loop.
        await asyncio.to_thread(self.tracing.shutdown)


class _Province:
    """Routes the switchboard's outward effects to central and the peer sites."""

    def __init__(self, node: SiteNode) -> None:
        self._node = node

    def ask_route(self, ask: AskRoute) -> None:
        self._node.central_link.ask_route(ask)

    def offer_remote(self, offer: OfferRemote) -> None:
        self._node.peer_links.offer(offer)

    def to_target(self, message: LegToTarget) -> None:
        self._node.peer_links.send(message)

    def to_origin(self, message: LegToOrigin) -> None:
        self._node.peer.send(message)

    def state_changed(self) -> None:
        self._node.central_link.state_changed()
