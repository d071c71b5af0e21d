"""Composition root of a site node: builds every part from the config, starts and stops them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from functools import partial
from pathlib import Path

from site_node.audit import SiteAudit
from site_node.call_tracer import CallTracer, ShipTracing
from site_node.callcontrol import Switchboard
from site_node.callcontrol.domain import AskRoute, Audit, LegToOrigin, LegToTarget, OfferRemote, ReportRoute
from site_node.grpc_api.admin_service import SiteAdmin
from site_node.grpc_api.desktop_service import AgentDesktop
from site_node.grpc_api.peers import PeerLinks, SitePeer
from site_node.grpc_api.summary import presence, site_summary
from site_node.grpc_api.trunk_service import TrunkIngress
from site_node.links.audit_sink import AuditSink
from site_node.links.central_link import CentralLink
from site_node.links.customers import CentralCustomers
from site_node.links.leader_watch import LeaderWatch
from site_node.links.membership import Membership
from site_node.media.control import MediaControl
from site_node.media.dtmf import DtmfListener
from site_node.media.engine import MediaEngine
from site_node.media.prompts import prompt_path, site_prompts
from site_node.metrics import ShipperFigures, SiteCollector
from site_node.records.outbox import Outbox
from site_node.records.shipper import Shipper
from site_node.runtime import SiteRuntime
from site_node.sip.phones import AgentPhones
from site_node.sip.registrar import Registrar
from site_node.sip.trunk import SipTrunk
from site_node.web.server import DeskServer
from vcc import membership, tls
from vcc.authz import Authorizer
from vcc.config import ProvinceConfig
from vcc.metrics import CLIENT_INTERCEPTORS, Metrics, MetricsServer
from vcc.rpc import Server
from vcc.tracing import Tracing
from vcc.v1 import (
    common_pb2,
    cti_pb2_grpc,
    peer_pb2_grpc,
    site_admin_pb2,
    site_admin_pb2_grpc,
    trunk_pb2_grpc,
)

log = logging.getLogger(__name__)

SERVICES = (
    "vcc.v1.TrunkIngressService",
    "vcc.v1.AgentDesktopService",
    "vcc.v1.SiteAdminService",
    "vcc.v1.SitePeerService",
)
# On a graceful stop, how long the outbox may take to reach central.
DRAIN_ON_STOP_S = 3.0


def site_tls(province: ProvinceConfig, site_id: str) -> tls.TlsFiles | None:
    """The site's certificate (None: TLS not configured for the province)."""
    if province.tls is None:
        return None
    return tls.node_files(province.tls.ca_file, f"{tls.SITE}-{site_id}")


class SiteNode:
    def __init__(
        self,
        province: ProvinceConfig,
        site_id: str,
        tls_files: tls.TlsFiles | None = None,
        metrics_listen: str | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.province = province
        self.site = province.site(site_id)
        self.tls = tls_files or site_tls(province, site_id)
        self.started_at = time.time()
        self.address = self.site.listen
        self._tasks: list[asyncio.Task[None]] = []
        self.desk: DeskServer | None = None
        self.desktop_url = ""
        self.sip: SipTrunk | None = None
        self.sip_address = ""
        self.phones: AgentPhones | None = None
        self.registrar: Registrar | None = None
        self.media: MediaEngine | None = None
        self.dtmf: DtmfListener | None = None
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
        if site.sip is not None:
            # Before the gRPC server: a site that reports SERVING answers SIP too.
            await self._start_sip()
        authorizer = Authorizer([s.id for s in self.province.sites])
        self.server = Server(
            SERVICES,
            tls=self.tls,
            interceptors=[
                *self.tracing.server_interceptors(),
                self.metrics.server_interceptor(),
                *([authorizer] if self.tls else []),
            ],
        )
        trunk_pb2_grpc.add_TrunkIngressServiceServicer_to_server(TrunkIngress(self.runtime), self.server.grpc)
        # Logins, failed logins and lockouts go to central's audit log.
        self.audit = AuditSink(site.id, self.leader.address)
        # Supervisor actions journaled at the site, and forwarded to central's audit log.
        self.audit_journal = SiteAudit(site.id, forward=self._forward_audit)
        self.runtime.audit = self.audit_journal.record
        self.desktop = AgentDesktop(self.runtime, self.audit, session_ttl_s=site.session_ttl_s)
        cti_pb2_grpc.add_AgentDesktopServiceServicer_to_server(self.desktop, self.server.grpc)
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
            on_dead_letter=self._dead_letter,
            tracing=ShipTracing(self.tracing.tracer, calls) if calls is not None else None,
        )
        self.membership = Membership(
            list(etcd.endpoints),
            membership.site_key(etcd.prefix, self.province.province.id, site.id),
            etcd.lease_ttl_s,
            self.summary,
        )
        self.central_link = CentralLink(
            self.runtime,
            self.leader.address,
            partial(self.summary, agents=False),
            presence=partial(presence, self.switchboard),
        )
        self.peer_links = PeerLinks(self.runtime, self._peer_address)
        self.runtime.province = _Province(self)
        if site.desktop_listen:
            host, desk_listen_port = site.desktop_listen.rsplit(":", 1)
            self.desk = DeskServer(
                self.province,
                self.runtime,
                self.audit_journal,
                self.desktop.credentials,
                host=host,
                port=int(desk_listen_port),
            )
            desk_port = await self.desk.start()
            self.desktop_url = f"http://{host}:{desk_port}/"
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
                state_stream=lambda: (
                    self.central_link.sent_messages,
                    self.central_link.sent_bytes,
                    self.central_link.full_equivalent_bytes,
                ),
            )
        )
        if self.metrics_server is not None:
            await self.metrics_server.start()
        self._tasks = [
            asyncio.create_task(self.leader.run(), name="central-leader-watch"),
            asyncio.create_task(self.shipper.run(), name="shipper"),
            asyncio.create_task(self.membership.run(), name="membership"),
            asyncio.create_task(self.central_link.run(), name="central-link"),
            asyncio.create_task(self.audit.run(), name="audit-sink"),
        ]
        log.info(
            "site %s serving on %s (outbox %s, metrics %s)%s", site.id, self.address, outbox_path,
            self.metrics_url or "off",
            f", agent desktop on {self.desktop_url}desk" if self.desktop_url else "",
        )  # fmt: skip

    def _dead_letter(self, event: common_pb2.CallEvent, reason: str) -> None:
        """Alert: a record central can never take was parked (it no longer blocks the others)."""
        self.audit.record(
            f"site/{self.site.id}",
            "record-dead-lettered",
            target=f"{event.call_id}#{event.seq}",
            outcome="refused",
            detail={"reason": reason[:200]},
        )

    async def _start_sip(self) -> None:
        """The SIP trunk and the media engine it controls (rtpengine; digits on our own port)."""
        sip = self.site.sip
        assert sip is not None
        self.dtmf = DtmfListener(self._digit)
        dtmf_dest = await self.dtmf.open(sip.media.interface)
        self.media = MediaEngine(
            # Beside the outbox: the run folder of a cluster, the test's folder in tests.
            sip.media,
            dtmf_dest=dtmf_dest,
            log_path=Path(self.site.outbox_path or ".").parent / f"rtpengine-{self.site.id}.log",
        )
        await self.media.start()
        prompts = {kind: prompt_path(sip.prompts_dir, spec) for kind, spec in site_prompts(self.site).items()}
        missing = [str(p) for p in prompts.values() if not p.exists()]
        if missing:
            # Calls still work, in silence; `vcc prompts build` makes the files.
            log.error("prompts missing (run `vcc prompts build`): %s", ", ".join(missing))
        phones = {a.code: a.sip_ha1 for a in self.site.agents if a.sip_ha1}
        self.registrar = Registrar(sip, phones)
        self.sip = SipTrunk(
            self.runtime,
            sip,
            self.province.province.service_number,
            MediaControl(self.media),
            prompts,
            self.registrar,
        )
        self.sip_address = await self.sip.start()
        if phones:
            self.phones = AgentPhones(self.sip, self.registrar)
            self.sip.phones = self.phones
            self.runtime.agent_listeners.append(self.phones.to_agent)

    def _digit(self, sip_call_id: str, digit: str) -> None:
        if self.sip is not None:
            self.sip.digit(sip_call_id, digit)

    @property
    def metrics_url(self) -> str:
        return self.metrics_server.url if self.metrics_server is not None and self.metrics_server.port else ""

    def _peer_address(self, site_id: str) -> str | None:
        for s in self.province.sites:
            if s.id == site_id:
                return s.listen
        return None

    def _forward_audit(self, entry: Audit) -> None:
        detail = (
            {"call_id": entry.call_id, "detail": entry.detail} if entry.call_id else {"detail": entry.detail}
        )
        outcome = "ok" if entry.outcome == "done" else entry.outcome
        self.audit.record(
            f"agent:{entry.actor}", entry.action, target=entry.target, source=entry.origin, outcome=outcome,
            detail=detail,
        )  # fmt: skip

    def summary(self, *, agents: bool = True) -> site_admin_pb2.SiteSummary:
        return site_summary(
            self.switchboard,
            name=self.site.name,
            address=self.address,
            started_at=self.started_at,
            now=time.time(),
            outbox_pending=self.outbox.pending_count,
            agents=agents,
        )

    async def stop(self) -> None:
        """Graceful stop: NOT_SERVING, calls end with records kept, outbox drained (bounded)."""
        log.info("site %s stopping", self.site.id)
        await self.server.set_serving(False)
        if self.desk is not None:
            await self.desk.stop()
        await self.runtime.close()
        if self.phones is not None:
            await self.phones.close()
        if self.sip is not None:
            await self.sip.close()
        if self.media is not None:
            await self.media.stop()
        if self.dtmf is not None:
            self.dtmf.close()
        await self.server.stop(grace_s=1.0)
        await self.shipper.stop(drain_s=DRAIN_ON_STOP_S)
        await self.audit.close(drain_s=1.0)
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

    def report_route(self, report: ReportRoute) -> None:
        self._node.central_link.report_route(report)

    def offer_remote(self, offer: OfferRemote) -> None:
        self._node.peer_links.offer(offer)

    def to_target(self, message: LegToTarget) -> None:
        self._node.peer_links.send(message)

    def to_origin(self, message: LegToOrigin) -> None:
        self._node.peer.send(message)

    def state_changed(self) -> None:
        self._node.central_link.state_changed()
