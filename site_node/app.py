"""Composition root of a site node: builds every part from the config, starts and stops them."""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

from site_node.audit import SiteAudit
from site_node.call_tracer import CallTracer, ShipTracing
from site_node.callcontrol import Switchboard
from site_node.callcontrol.domain import AskRoute, LegToOrigin, LegToTarget, OfferRemote, ReportRoute
from site_node.grpc_api.admin_service import SiteAdmin
from site_node.grpc_api.desktop_service import AgentDesktop
from site_node.grpc_api.dialout_service import DialOuts
from site_node.grpc_api.peers import PeerLinks, SitePeer
from site_node.grpc_api.recordings_service import SiteRecordings
from site_node.grpc_api.summary import presence, site_summary
from site_node.grpc_api.trunk_service import TrunkIngress
from site_node.grpc_api.voicemail_service import VoicemailDesk
from site_node.links.audit_sink import AuditSink, AuditStore, audit_path
from site_node.links.central_link import CentralLink
from site_node.links.customers import CentralCustomers
from site_node.links.desk_data import CentralDeskData
from site_node.links.flow_catalog import FlowCatalog, FlowCatalogWatcher
from site_node.links.ivr_lookups import CentralLookups
from site_node.links.leader_watch import LeaderWatch
from site_node.links.membership import Membership
from site_node.links.province_agents import ProvinceAgents
from site_node.links.recording_index import RecordingIndexShipper
from site_node.media import ports as bridge_ports
from site_node.media.control import MediaControl
from site_node.media.dtmf import DtmfListener
from site_node.media.engine import MediaEngine
from site_node.media.prompts import prompt_path, site_prompts
from site_node.message_store import MessageStore, messages_path
from site_node.metrics import ShipperFigures, SiteCollector
from site_node.person_revocation import PersonRevocation
from site_node.records.open_items import end_calls_left_up, restore_open_items
from site_node.records.outbox import Outbox
from site_node.records.shipper import Shipper
from site_node.roster import Roster, RosterStore, overlay_path
from site_node.runtime import SiteRuntime
from site_node.sip.bridging import CallBridges
from site_node.sip.consults import ConsultVoice
from site_node.sip.phones import AgentPhones
from site_node.sip.recorder import CallRecorder
from site_node.sip.registrar import Registrar
from site_node.sip.supervision import SupervisorMedia
from site_node.sip.ties import TieTrunks
from site_node.sip.trunk import SipTrunk
from site_node.web.server import DeskServer
from vcc import membership, tls
from vcc.authz import Authorizer
from vcc.config import ProvinceConfig
from vcc.metrics import CLIENT_INTERCEPTORS, Metrics, MetricsServer
from vcc.person_assertion import PersonSigner
from vcc.rpc import Server
from vcc.server_edge import server_interceptors
from vcc.shutdown import Stopping
from vcc.tracing import Tracing
from vcc.v1 import (
    common_pb2,
    cti_pb2_grpc,
    dialout_pb2_grpc,
    peer_pb2_grpc,
    recordings_pb2_grpc,
    site_admin_pb2,
    site_admin_pb2_grpc,
    trunk_pb2_grpc,
    voicemail_pb2_grpc,
)

log = logging.getLogger(__name__)

SERVICES = (
    "vcc.v1.TrunkIngressService",
    "vcc.v1.AgentDesktopService",
    "vcc.v1.SiteAdminService",
    "vcc.v1.SitePeerService",
    "vcc.v1.SiteRecordingService",
    "vcc.v1.VoicemailService",
    "vcc.v1.DialOutService",
)
# On a graceful stop, how long the outbox may take to reach central.
DRAIN_ON_STOP_S = 3.0
# Deadlines of the stop's steps (SiteNode.stop): generous for a loaded machine, never unbounded.
STEP_S = 3.0
WEB_STOP_S = 5.0  # uvicorn's own graceful shutdown is 2 s
CALLS_STOP_S = 10.0
MEDIA_STOP_S = 8.0
ETCD_STOP_S = 6.0
OUTBOX_CLOSE_S = 15.0
TRACE_FLUSH_S = 10.0
RECORDER_STOP_S = 8.0  # the WAVs being made are finished (the recorder waits 5 s)


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
        # The steps of the last stop() that missed their deadline (vcc.shutdown).
        self.stop_overruns: list[str] = []
        # ... and those that failed (a part that raised while stopping).
        self.stop_failures: list[str] = []
        # The gRPC server listens (start() got that far): stop() says NOT_SERVING first.
        self._serving = False
        self.desk: DeskServer | None = None
        self.roster: Roster | None = None
        self.desktop_url = ""
        self.sip: SipTrunk | None = None
        self.sip_address = ""
        self.phones: AgentPhones | None = None
        # Supervision's voice (monitor, whisper, barge-in, intercept) when phones are bound.
        self.supervisor_media: SupervisorMedia | None = None
        # The voice of consultations and conferences with other cities (phones and ties both).
        self.consult_voice: ConsultVoice | None = None
        self.bridges: CallBridges | None = None
        self.registrar: Registrar | None = None
        self.media: MediaEngine | None = None
        self.dtmf: DtmfListener | None = None
        self.recorder: CallRecorder | None = None
        self.ties: TieTrunks | None = None
        self.recording_index: RecordingIndexShipper | None = None
        self.recordings_dir: Path | None = None
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
        # Central's flows and service catalog, kept current from etcd: a push reaches new calls,
        # calls in the IVR finish the version they started on.
        self.flows = FlowCatalog(site.id)
        self.flow_watcher = FlowCatalogWatcher(
            self.flows, list(etcd.endpoints), etcd.prefix, self.province.province.id
        )
        sites = self.province.sites
        self.switchboard = Switchboard(
            site,
            self.province.province.service_number,
            routing=self.province.routing,
            agent_sites={a.code: s.id for s in sites for a in s.agents},
            site_groups={s.id: frozenset(g.id for g in s.skill_groups) for s in sites},
            flows=self.flows,
        )
        calls = CallTracer(self.tracing.tracer, site.id) if self.tracing.enabled else None
        self.runtime = SiteRuntime(self.switchboard, self.outbox, self.customers.lookup, tracer=calls)
        self.runtime.flow_lookup = CentralLookups(self.customers).lookup
        # The calls a killed last run left up are ended, and the callbacks and voicemail it left
        # open are back, before any call comes.
        end_calls_left_up(site.id, self.outbox)
        restore_open_items(self.runtime, self.outbox)
        if site.sip is not None:
            # Before the gRPC server: a site that reports SERVING answers SIP too.
            await self._start_sip()
        else:
            # No SIP trunk: the same folder beside the outbox, where voicemail audio a trunk
            # gateway delivers is found by the desk and the VoicemailService (empty until then).
            self.recordings_dir = outbox_path.parent / f"recordings-{site.id}"
        authorizer = Authorizer([s.id for s in self.province.sites])
        self.server = Server(
            SERVICES,
            tls=self.tls,
            interceptors=server_interceptors(self.tracing, self.metrics, authorizer if self.tls else None),
        )
        trunk_pb2_grpc.add_TrunkIngressServiceServicer_to_server(TrunkIngress(self.runtime), self.server.grpc)
        # The one audit path: every entry journaled here (SiteAudit) and shipped to central (AuditSink).
        self.audit = AuditSink(site.id, self.leader.address, store=AuditStore(audit_path(outbox_path)))
        self.audit_journal = SiteAudit(site.id, sink=self.audit)
        self.runtime.audit = self.audit_journal.record
        # An agent's person assertions die with its session: central hears of every logout at once.
        self.person_revocation = PersonRevocation(site.id, self.audit_journal)
        self.runtime.agent_listeners.append(self.person_revocation.to_agent)
        # The site's signed word of who acts, on calls made for a person (central's service desk).
        self.person_signer = PersonSigner(self.tls, site.id) if self.tls else None
        self.desktop = AgentDesktop(
            self.runtime, self.audit_journal, session_ttl_s=site.session_ttl_s, signer=self.person_signer
        )
        # Administrators' changes to the agents (added, disabled, passwords, skills), kept beside the
        # outbox and applied over the config before anyone can log in.
        self.roster = Roster(
            site, self.runtime, self.desktop.credentials, RosterStore(overlay_path(outbox_path))
        )
        kept = self.roster.apply_overlay()
        if kept:
            log.info("agents: %d administrator changes applied over the config", kept)
        cti_pb2_grpc.add_AgentDesktopServiceServicer_to_server(self.desktop, self.server.grpc)
        self.dial_outs = DialOuts(self.runtime)
        dialout_pb2_grpc.add_DialOutServiceServicer_to_server(self.dial_outs, self.server.grpc)
        voicemail_pb2_grpc.add_VoicemailServiceServicer_to_server(
            VoicemailDesk(self.runtime, self.desktop, self.recordings_dir), self.server.grpc
        )
        site_admin_pb2_grpc.add_SiteAdminServiceServicer_to_server(
            SiteAdmin(self.runtime, self.summary), self.server.grpc
        )
        recordings_pb2_grpc.add_SiteRecordingServiceServicer_to_server(
            SiteRecordings(self.recordings_dir), self.server.grpc
        )
        self.peer = SitePeer(self.runtime)
        peer_pb2_grpc.add_SitePeerServiceServicer_to_server(self.peer, self.server.grpc)
        port = await self.server.start(site.listen)
        self._serving = True
        self.address = f"{site.listen.rsplit(':', 1)[0]}:{port}"
        self.shipper = Shipper(
            self.outbox,
            site.id,
            self.leader.address,
            on_dead_letter=self._dead_letter,
            tracing=(
                ShipTracing(self.tracing.tracer, calls, self.runtime.observers.catch_up)
                if calls is not None
                else None
            ),
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
        self.peer_links = PeerLinks(
            self.runtime, self._peer_address, self.tracing, pair_streams=site.peer_stream == "pair"
        )
        self.runtime.province = _Province(self)
        self.province_agents = ProvinceAgents(self.runtime.sb.directory, self.customers.channel)
        if site.desktop_listen:
            host, desk_listen_port = site.desktop_listen.rsplit(":", 1)
            self.desk = DeskServer(
                self.province,
                self.runtime,
                self.audit_journal,
                self.desktop.credentials,
                host=host,
                port=int(desk_listen_port),
                roster=self.roster,
                desk_data=CentralDeskData(self.customers.channel, signer=self.person_signer),
                forget_customer=self.customers.forget,
                message_store=MessageStore(messages_path(outbox_path)),
                recordings=self.recordings_dir,
                tls=self.tls,
            )
            # Other cities' agents' messages to ours arrive on the peer service.
            self.peer.deliver = self.desk.deliver
            await self.desk.start()
            self.desktop_url = self.desk.url
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
                prompt_fallbacks=lambda: self.sip.hear.fallbacks if self.sip is not None else 0,
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
            asyncio.create_task(self.flow_watcher.run(), name="ivr-flow-watch"),
            # Other cities' agents added at runtime, from central's directory.
            asyncio.create_task(self.province_agents.run(), name="province-agents"),
        ]
        if self.recording_index is not None:
            self._tasks.append(asyncio.create_task(self.recording_index.run(), name="recording-index"))
        log.info(
            "site %s serving on %s (outbox %s, metrics %s)%s", site.id, self.address, outbox_path,
            self.metrics_url or "off",
            f", agent desktop on {self.desktop_url}desk" if self.desktop_url else "",
        )  # fmt: skip

    def _dead_letter(self, event: common_pb2.CallEvent, reason: str) -> None:
        """Alert: a record central can never take was parked (it no longer blocks the others)."""
        self.audit_journal.event(
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
        # The bridges' legs come from the site's own range, never from rtpengine's.
        bridge_ports.use_range(sip.media.bridge_min, sip.media.port_max, sip.media.interface)
        # Beside the outbox: the run folder of a cluster, the test's folder in tests.
        beside = Path(self.site.outbox_path or ".").parent
        self.recordings_dir = (
            Path(sip.recordings_dir) if sip.recordings_dir else beside / f"recordings-{self.site.id}"
        )
        self.recordings_dir.mkdir(parents=True, exist_ok=True)
        self.media = MediaEngine(
            sip.media,
            dtmf_dest=dtmf_dest,
            log_path=beside / f"rtpengine-{self.site.id}.log",
            recording_dir=self.recordings_dir.resolve(),
        )
        await self.media.start()
        control = MediaControl(self.media)
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
            control,
            prompts,
            self.registrar,
        )
        self.recorder = CallRecorder(control, self.switchboard.resources, self.site.id, self.recordings_dir)
        self.sip.recorder = self.recorder
        self.recording_index = RecordingIndexShipper(
            self.site.id, self.recordings_dir / "index", self.leader.address
        )
        self.recorder.on_indexed = self.recording_index.wake
        self.sip_address = await self.sip.start()
        peers = {
            s.id: s.sip.listen for s in self.province.sites if s.sip is not None and s.id != self.site.id
        }
        if peers:
            self.ties = TieTrunks(self.sip, peers)
            self.sip.ties = self.ties
            self.runtime.agent_listeners.append(self.ties.to_agent)
        if phones:
            self.phones = AgentPhones(self.sip, self.registrar)
            self.sip.phones = self.phones
            self.runtime.agent_listeners.append(self.phones.to_agent)
            if self.ties is not None:
                self.ties.on_media = self.phones.media_ready
            # One mixing bridge per call, shared by its consultation and its supervision.
            self.bridges = CallBridges(self.sip, self.phones, beside)
            self.sip.bridged = self.bridges.bridged
            self.sip.bridge_ended = self.bridges.call_ended
            self.supervisor_media = SupervisorMedia(self.sip, self.phones, self.bridges)
            self.runtime.media = self.supervisor_media.handle
            self.runtime.agent_listeners.append(self.supervisor_media.to_agent)
            # Consultations with voice: with a colleague here, and over the tie trunk when any.
            self.consult_voice = ConsultVoice(self.sip, self.ties, self.phones, self.bridges)
            if self.ties is not None:
                self.ties.consults = self.consult_voice
            self.runtime.agent_listeners.append(self.consult_voice.to_agent)

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

    def _built(self, name: str) -> Any:
        """The part `name` once start() built it, else None (a start that failed half-way)."""
        return vars(self).get(name)

    async def stop(self) -> None:
        """Graceful stop: NOT_SERVING, calls end with records kept, outbox drained (bounded).

        Every step has a deadline (vcc.shutdown): a stuck part is cancelled and left behind with a
        warning, and the steps after it (the outbox's last commit above all) still run. After a
        start that failed half-way it stops each part that start built, and no other."""
        log.info("site %s stopping", self.site.id)
        stop = Stopping(f"site {self.site.id}")
        part = self._built
        if self._serving:
            await stop.step("health NOT_SERVING", self.server.set_serving(False), STEP_S)
        if part("dial_outs") is not None:
            self.dial_outs.close()
        if self.desk is not None:
            await stop.step("desk server", self.desk.stop(), WEB_STOP_S)
        if part("runtime") is not None:
            # The calls end here (their records go to the outbox): ample time, a busy loop is slow.
            await stop.step("calls ended", self.runtime.close(), CALLS_STOP_S)
        if self.supervisor_media is not None:
            await stop.step("supervision's voice", self.supervisor_media.close(), STEP_S)
        if self.consult_voice is not None:
            await stop.step("consultations' voice", self.consult_voice.close(), STEP_S)
        if self.bridges is not None:
            await stop.step("calls' bridges", self.bridges.close(), STEP_S)
        if self.phones is not None:
            await stop.step("agents' phones", self.phones.close(), STEP_S)
        if self.ties is not None:
            await stop.step("tie trunks", self.ties.close(), STEP_S)
        if self.sip is not None:
            await stop.step("SIP trunk", self.sip.close(), STEP_S)
        if self.recorder is not None:
            await stop.step("recorder", self.recorder.close(), RECORDER_STOP_S)
        if self.media is not None:
            await stop.step("media engine", self.media.stop(), MEDIA_STOP_S)
        if self.dtmf is not None:
            self.dtmf.close()
        if part("server") is not None:
            await stop.step("gRPC server", self.server.stop(grace_s=1.0), 1.0 + STEP_S)
        if part("shipper") is not None:
            await stop.step(
                "outbox drained", self.shipper.stop(drain_s=DRAIN_ON_STOP_S), DRAIN_ON_STOP_S + STEP_S
            )
        if part("audit") is not None:
            await stop.step("audit sink", self.audit.close(drain_s=1.0), 1.0 + STEP_S)
        if self.recording_index is not None:
            await stop.step("recording index", self.recording_index.close(drain_s=1.0), 1.0 + STEP_S)
        if part("membership") is not None:
            await stop.step("etcd membership", self.membership.close(), ETCD_STOP_S)
        # The background tasks end before the channels they use are closed.
        await stop.tasks("background tasks", self._tasks, STEP_S)
        if part("peer_links") is not None:
            await stop.step("peer links", self.peer_links.close(), STEP_S)
        if part("central_link") is not None:
            await stop.step("central link", self.central_link.close(), STEP_S)
        if part("customers") is not None:
            await stop.step("customer link", self.customers.close(), STEP_S)
        if self.metrics_server is not None and self.metrics_server.port:
            await stop.step("metrics server", self.metrics_server.stop(), STEP_S)
        if part("outbox") is not None:
            await stop.step("outbox closed", self.outbox.close(), OUTBOX_CLOSE_S)
        # The last spans (the shutdown's) are flushed off the loop.
        await stop.step("traces flushed", asyncio.to_thread(self.tracing.shutdown), TRACE_FLUSH_S)
        self.stop_overruns = stop.overrun
        self.stop_failures = stop.failed
        log.info("site %s stopped in %.1fs", self.site.id, stop.took_s())


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
        if self._node.ties is not None:
            # The caller's voice follows over the SIP tie trunk (when it is a SIP caller).
            self._node.ties.offer_remote(offer)

    def to_target(self, message: LegToTarget) -> None:
        self._node.peer_links.send(message)
        if self._node.ties is not None:
            self._node.ties.to_target(message)

    def to_origin(self, message: LegToOrigin) -> None:
        self._node.peer.send(message)

    def state_changed(self) -> None:
        self._node.central_link.state_changed()
