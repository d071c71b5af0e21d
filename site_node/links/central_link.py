"""The site's live link to central: its state stream (coalesced, change-driven) and routing.

The state stream carries the site's figures whole in every message, but its agents' presence
only as changes: the first message of a stream is FULL (every agent), then DELTAs hold the agents
whose state changed since the previous message, with a FULL again every FULL_EVERY_S and
whenever central says it lost track (ResyncPresence). Central answers on the same stream with
pooled pulls, the ready overflow targets it pushes (the switchboard offers to them at once), and
acknowledgements of the decisions taken on them (`routed`, re-sent until acknowledged).

The site keeps serving its own callers whatever happens here: when central is unreachable a
routing question is answered "stay", pushed targets are forgotten, and the stream reconnects
with bounded back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from functools import partial
from typing import Any

import grpc
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from site_node.callcontrol.domain import AskRoute, ReportRoute
from site_node.callcontrol.pushed_targets import PushedTarget
from site_node.links.leader_channel import LeaderChannel, dial_central
from site_node.runtime import SiteRuntime
from vcc.errors import VccError
from vcc.rpc import timestamp
from vcc.v1 import central_pb2, central_pb2_grpc, site_admin_pb2

log = logging.getLogger(__name__)

# A busy site sends at most this often, an idle one at least this often (a heartbeat).
MIN_INTERVAL_S = 0.1
HEARTBEAT_S = 1.0
ROUTE_DEADLINE_S = 1.0
# A whole presence every so often even without a resync request (a receiver's safety net).
FULL_EVERY_S = 60.0
# Decisions on pushed targets waiting for central's acknowledgement; beyond, the oldest is given
# up (logged as an error: central has not acknowledged for a long time).
MAX_UNACKED = 10_000
ROUTED_PER_MESSAGE = 256

FULL = central_pb2.PRESENCE_UPDATE_FULL
DELTA = central_pb2.PRESENCE_UPDATE_DELTA


class CentralLink:
    def __init__(
        self,
        runtime: SiteRuntime,
        central_address: Callable[[], str | None],
        summary: Callable[[], site_admin_pb2.SiteSummary],
        presence: Callable[[], Mapping[str, str]] | None = None,
        *,
        channel: Callable[[str], grpc.aio.Channel] | None = None,
        deltas: bool = True,
    ) -> None:
        """`summary`: the site's figures (its `agent_states` are not read); `presence`: agent
        code -> state name of every agent (None: taken from the summary's `agent_states`).
        `channel`: how to dial central (a bench dials as many sites from one process);
        `deltas=False`: every message FULL, as before the stream was change-driven (to compare)."""
        self.rt = runtime
        self._address = central_address
        self._summary = summary
        self._presence = presence
        self._deltas = deltas
        self._changed = asyncio.Event()
        # Central's address answers only with a central replica's certificate (dial_central).
        self._central = LeaderChannel(channel or dial_central)
        self._tasks: set[asyncio.Task[None]] = set()
        self.seq = 0
        self.connected = False
        # The presence central holds (what we sent since the last FULL), and when that FULL was.
        self._sent_presence: dict[str, str] = {}
        self._full_next = True
        self._last_full = 0.0
        self._unacked: OrderedDict[str, central_pb2.RoutedOnTarget] = OrderedDict()
        # What the stream cost: messages and bytes sent, and the bytes the same messages would
        # have taken with every agent in each (the stream before it was change-driven).
        self.sent_messages = 0
        self.sent_bytes = 0
        self.full_equivalent_bytes = 0
        self.resyncs = 0
        self.targets_received = 0

    def state_changed(self) -> None:
        self._changed.set()

    def report_route(self, report: ReportRoute) -> None:
        """A call went to a pushed target: central records it (sent until acknowledged)."""
        self._unacked[report.decision_id] = central_pb2.RoutedOnTarget(
            decision_id=report.decision_id,
            call_id=report.call_id,
            skill_group=report.skill_group,
            target_site_id=report.target_site_id,
            epoch=report.epoch,
            waited_s=report.waited_s,
            at=timestamp(report.at),
            priority=report.priority,
        )
        while len(self._unacked) > MAX_UNACKED:
            lost, _ = self._unacked.popitem(last=False)
            log.error("routing decision %s given up unacknowledged: central has not taken it", lost)
        self._changed.set()

    @property
    def unacked(self) -> int:
        return len(self._unacked)

    def _stub(self) -> central_pb2_grpc.CentralServiceAsyncStub | None:
        address = self._address()
        if address is None:
            return None
        return central_pb2_grpc.CentralServiceStub(self._central.to(address))

    # Routing questions ----------------------------------------------------------------------

    def ask_route(self, ask: AskRoute) -> None:
        self._spawn(self._route(ask))

    async def _route(self, ask: AskRoute) -> None:
        target: str | None = None
        decision_id = ""
        stub = self._stub()
        if stub is not None:
            try:
                reply = await stub.RouteCall(
                    central_pb2.RouteCallRequest(
                        call_id=ask.call_id,
                        site_id=self.rt.sb.site_id,
                        skill_group=ask.skill_group,
                        priority=ask.priority,
                        waited_s=ask.waited_s,
                        exclude_site_ids=ask.exclude,
                    ),
                    timeout=ROUTE_DEADLINE_S,
                )
                target = reply.decision.target_site_id or None
                decision_id = reply.decision.decision_id
            except grpc.aio.AioRpcError as exc:
                # Central is away: the call stays and asks again later.
                log.debug("route for %s: central unavailable (%s)", ask.call_id, exc.code().name)
        with contextlib.suppress(VccError):
            self.rt.do(lambda now: self.rt.sb.route_decided(now, ask.call_id, target, decision_id))

    # The state stream -----------------------------------------------------------------------

    async def run(self) -> None:
        """Stream the site's state to central until cancelled; reconnect on failure."""
        while True:
            try:
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception_type(grpc.aio.AioRpcError),
                    # Short waits: a new central leader must get every site's state within a second.
                    wait=wait_exponential(multiplier=0.05, max=0.5),
                    stop=stop_after_attempt(20),
                    reraise=True,
                ):
                    with attempt:
                        await self._stream_once()
                # Central ended the stream. If it moved (another replica leads), follow it now;
                # otherwise pause a moment, so that a central closing streams cannot spin us.
                if self._address() == self._central.dialled:
                    await asyncio.sleep(MIN_INTERVAL_S)
                continue
            except grpc.aio.AioRpcError as exc:
                log.warning("state stream to central failing (%s); still trying", exc.code().name)
            self.connected = False
            await asyncio.sleep(HEARTBEAT_S)

    async def _stream_once(self) -> None:
        stub = self._stub()
        if stub is None:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "no central"
            )
        # Every stream starts with the whole presence: central keeps none across streams.
        self._full_next = True
        stream = stub.StreamSiteState(self._states())
        self.connected = True
        try:
            async for command in stream:
                self._command(command)
        finally:
            self.connected = False
            # What central pushed is only as good as the stream it came on.
            with contextlib.suppress(VccError):
                self.rt.do(lambda now: self.rt.sb.overflow_targets(now, 0, ()))

    def _command(self, command: central_pb2.StreamSiteStateResponse) -> None:
        kind = command.WhichOneof("command")
        if kind == "pull_call":
            pull = command.pull_call
            with contextlib.suppress(VccError):
                self.rt.do(
                    partial(
                        self.rt.sb.pull_call,
                        skill_group=pull.skill_group,
                        to_site_id=pull.to_site_id,
                        decision_id=pull.decision.decision_id,
                    )
                )
        elif kind == "overflow_targets":
            pushed = command.overflow_targets
            targets = [
                PushedTarget(t.skill_group, t.site_id, t.ready_agents, t.state_age_s) for t in pushed.targets
            ]
            self.targets_received += 1
            with contextlib.suppress(VccError):
                self.rt.do(partial(self.rt.sb.overflow_targets, epoch=pushed.epoch, targets=targets))
        elif kind == "routed_recorded":
            for decision_id in command.routed_recorded.decision_ids:
                self._unacked.pop(decision_id, None)
        elif kind == "resync_presence":
            log.info(
                "central asks for the whole presence (%s; applied up to %d)",
                command.resync_presence.reason,
                command.resync_presence.applied_seq,
            )
            self.resyncs += 1
            self._full_next = True
            self._changed.set()

    def next_message(self, now: float) -> central_pb2.StreamSiteStateRequest:
        """The next state message: the figures whole, the presence whole or as changes."""
        self.seq += 1
        summary = self._summary()
        presence = dict(self._presence()) if self._presence is not None else dict(summary.agent_states)
        summary.ClearField("agent_states")
        base = summary.ByteSize()
        full = self._full_next or not self._deltas or now - self._last_full >= FULL_EVERY_S
        if full:
            changed = presence
            self._full_next, self._last_full = False, now
        else:
            sent = self._sent_presence
            changed = {code: state for code, state in presence.items() if sent.get(code) != state}
        self._sent_presence = presence
        summary.agent_states.update(changed)
        message = central_pb2.StreamSiteStateRequest(
            seq=self.seq,
            state=summary,
            presence=FULL if full else DELTA,
            routed=list(itertools.islice(self._unacked.values(), ROUTED_PER_MESSAGE)),
        )
        size = message.ByteSize()
        self.sent_messages += 1
        self.sent_bytes += size
        # The same message with every agent (map entries' encoded size: field 16 tag is 2 bytes).
        self.full_equivalent_bytes += size - summary.ByteSize() + base + presence_bytes(presence)
        return message

    async def _states(self) -> AsyncIterator[central_pb2.StreamSiteStateRequest]:
        loop = asyncio.get_running_loop()
        streaming_to = self._central.dialled
        while self._address() == streaming_to:
            self._changed.clear()
            sent_at = loop.time()
            yield self.next_message(loop.time())
            # Coalesce: however busy the site, at most one update per MIN_INTERVAL_S.
            await asyncio.sleep(MIN_INTERVAL_S)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, HEARTBEAT_S - (loop.time() - sent_at))):
                    await self._changed.wait()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._central.close()


def _varint_len(n: int) -> int:
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def presence_bytes(presence: Mapping[str, str]) -> int:
    """The encoded size of `presence` as SiteSummary.agent_states (field 16: a 2-byte tag)."""
    total = 0
    for code, state in presence.items():
        k, v = len(code.encode()), len(state.encode())
        entry = 1 + _varint_len(k) + k + 1 + _varint_len(v) + v
        total += 2 + _varint_len(entry) + entry
    return total
