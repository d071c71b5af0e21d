"""Supervision with voice (SPEC F24): what a SuperviseMedia effect asks, carried out with the
supervisor's registered phone, rtpengine and a mixing bridge (site_node/media/bridge.py).

Monitor, whisper, barge-in: the supervisor's phone is rung (a UAC leg, `AgentPhones`); once it
answers, the caller's and the agent's sides of the call in rtpengine are each paired with a leg
of the call's bridge, the supervisor's phone with the third, and the bridge sends each party the
mix the mode allows (`callcontrol.supervision.who_hears`). A change of mode changes the mix only.
When supervision ends (the leader leaves, the call leaves the agent) the caller and the agent are
paired directly again, the bridge stops and the supervisor's phone gets a BYE. Intercept: the
supervisor's phone is paired with the caller directly (no bridge) and becomes the call's phone
(the agent's phone is hung up by the call control's own effects).

Faults, with a defined outcome: the bridge process dying on its own, or the supervisor's phone
hanging up or not answering, ends the supervision in the call control (leave), and the caller and
the agent are paired directly again; a call without SIP media (a gRPC caller, an agent without a
phone, a supervisor without one) is supervised without voice, and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from site_node.callcontrol.domain import SuperviseMedia, ToAgent
from site_node.callcontrol.supervision import who_hears
from site_node.media.bridge import BridgeError, Leg, MixBridge, free_rtp_port
from site_node.media.control import MediaControl, bridge_sdp
from site_node.media.ng import MediaError
from site_node.sip.message import new_tag
from site_node.sip.phones import AgentPhones, PhoneLeg
from vcc.errors import VccError

if TYPE_CHECKING:
    from site_node.sip.trunk import SipTrunk

log = logging.getLogger(__name__)

ROLES = ("caller", "agent", "supervisor")


@dataclass(eq=False)
class Supervised:
    call_id: str
    supervisor: str
    agent_code: str
    mode: str
    # The bridge's receiving port and rtpengine tag for each party.
    ports: dict[str, int]
    tags: dict[str, str]
    leg: PhoneLeg | None = None
    bridge: MixBridge | None = None
    # The caller and the agent are paired with the bridge (not with each other).
    bridged: bool = False
    ended: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class SupervisionMediaStats:
    bridged: int = 0
    # Supervised without voice: no SIP caller here, no agent's or supervisor's phone.
    without_media: int = 0
    failed: int = 0
    restored: int = 0
    bridge_lost: int = 0
    intercepted: int = 0


class SupervisorMedia:
    def __init__(self, trunk: SipTrunk, phones: AgentPhones, folder: Path) -> None:
        self.trunk = trunk
        self.phones = phones
        self.media: MediaControl = trunk.media
        self.folder = folder
        self.stats = SupervisionMediaStats()
        self.calls: dict[str, Supervised] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # The call control's effects ------------------------------------------------------------------

    def handle(self, fx: SuperviseMedia) -> None:
        if fx.mode in ("monitor", "whisper", "barge"):
            self._listen(fx)
        elif fx.mode == "intercept":
            self._intercept(fx)
        elif fx.mode == "none":
            s = self.calls.pop(fx.call_id, None)
            if s is not None:
                s.ended = True
                self._spawn(self._finish(s, hang_up=True))

    def to_agent(self, fx: ToAgent) -> None:
        """The call is over for a supervisor whose phone still rings for it: the ring stops."""
        leg = self.phones.supervisor_legs.get(fx.call_id)
        if leg is not None and fx.kind in ("ended", "withdrawn") and fx.agent_code == leg.code:
            self.phones.hang_up_supervisor(fx.call_id)

    def _listen(self, fx: SuperviseMedia) -> None:
        s = self.calls.get(fx.call_id)
        if s is not None:
            s.mode = fx.mode
            self._spawn(self._rehear(s))
            return
        caller = self.trunk.call_of(fx.call_id)
        agent_leg = self.phones.legs.get(fx.call_id)
        if (
            caller is None
            or agent_leg is None
            or agent_leg.state != "answered"
            or self.trunk.bridged(fx.call_id)
        ):
            # No SIP caller or agent's phone here, or the call is on a consultation's bridge (one
            # bridge per call: the consultation keeps its voice).
            self.stats.without_media += 1
            log.info("call %s: supervised by %s without voice (no SIP caller or phone, or consulting)",
                     fx.call_id, fx.supervisor)  # fmt: skip
            return
        tag = new_tag()
        s = Supervised(
            fx.call_id, fx.supervisor, fx.agent_code, fx.mode,
            ports={role: free_rtp_port(self._interface) for role in ROLES},
            tags={role: f"bridge-{role}-{tag}" for role in ROLES},
        )  # fmt: skip
        leg = self.phones.ring_supervisor(
            fx.call_id, fx.supervisor, offer=lambda leg: self._offer_supervisor(s, leg),
            on_answered=lambda leg: self._bridge(s, leg), on_gone=lambda leg, why: self._gone(s, why),
        )  # fmt: skip
        if leg is None:
            self.stats.without_media += 1
            log.info("call %s: supervisor %s has no registered phone: supervised without voice",
                     fx.call_id, fx.supervisor)  # fmt: skip
            return
        s.leg = leg
        self.calls[fx.call_id] = s

    def _intercept(self, fx: SuperviseMedia) -> None:
        s = self.calls.pop(fx.call_id, None)
        caller = self.trunk.call_of(fx.call_id)
        if caller is None:
            self.stats.without_media += 1
            return
        self.stats.intercepted += 1
        if s is not None:
            s.ended = True
        if s is not None and s.leg is not None and s.leg.state == "answered":
            # Already on the phone: the supervisor's phone becomes the call's, paired with the caller.
            self.phones.adopt(fx.call_id)
            self._spawn(self._take_over(s, s.leg))
            return
        if s is not None:
            self.phones.hang_up_supervisor(fx.call_id)
            self._spawn(self._finish(s, hang_up=False))

        async def offer(leg: PhoneLeg) -> bytes:
            return await self.media.offer_again(
                caller.sip_call_id, caller.remote_tag, caller.invite.body, to_tag=leg.local_tag
            )

        async def answered(leg: PhoneLeg) -> None:
            await self.media.answer_from(caller.sip_call_id, caller.remote_tag, leg.local_tag, leg.remote_sdp)
            self.phones.adopt(fx.call_id)

        ringing = self.phones.ring_supervisor(
            fx.call_id, fx.supervisor, offer=offer, on_answered=answered,
            on_gone=lambda leg, why: self._leave(fx.supervisor, why),
        )  # fmt: skip
        if ringing is None:
            self.stats.without_media += 1

    # Media -----------------------------------------------------------------------------------------

    @property
    def _interface(self) -> str:
        return self.trunk.media.engine.config.interface

    async def _offer_supervisor(self, s: Supervised, leg: PhoneLeg) -> bytes:
        caller = self.trunk.call_of(s.call_id)
        if caller is None:
            raise MediaError("the caller left")
        sdp = bridge_sdp(s.ports["supervisor"], self._interface)
        return await self.media.offer_to(caller.sip_call_id, s.tags["supervisor"], leg.local_tag, sdp)

    async def _bridge(self, s: Supervised, leg: PhoneLeg) -> None:
        """The supervisor answered: the three parties on the call's bridge."""
        async with s.lock:
            caller = self.trunk.call_of(s.call_id)
            agent_leg = self.phones.legs.get(s.call_id)
            if s.ended or caller is None or agent_leg is None or agent_leg.state != "answered":
                raise MediaError("the call is no longer the agent's")
            sid, iface = caller.sip_call_id, self._interface
            try:
                to_supervisor = await self.media.answer_to(
                    sid, s.tags["supervisor"], leg.local_tag, leg.remote_sdp
                )
                to_caller, _ = await self.media.pair(
                    sid,
                    caller.remote_tag,
                    caller.invite.body,
                    s.tags["caller"],
                    bridge_sdp(s.ports["caller"], iface),
                    bridged=True,
                )
                s.bridged = True
                to_agent, _ = await self.media.pair(
                    sid, agent_leg.local_tag, agent_leg.remote_sdp, s.tags["agent"],
                    bridge_sdp(s.ports["agent"], iface), bridged=True,
                )  # fmt: skip
                legs = [
                    Leg("caller", s.ports["caller"], to_caller),
                    Leg("agent", s.ports["agent"], to_agent),
                    Leg("supervisor", s.ports["supervisor"], to_supervisor),
                ]
                bridge = MixBridge(s.call_id, legs, self.folder / f"bridge-{s.call_id}.log", iface)
                bridge.on_died = lambda b, code: self._bridge_lost(s)
                s.bridge = bridge
                await bridge.start(who_hears(s.mode))
            except (MediaError, BridgeError) as exc:
                self.stats.failed += 1
                log.warning("call %s: supervision's bridge not set up: %s", s.call_id, exc)
                await self._unbridge(s)
                raise MediaError(str(exc)) from exc
            self.stats.bridged += 1
            log.info("call %s: %s %s with voice (bridge pid %s)", s.call_id, s.supervisor, s.mode, bridge.pid)

    async def _rehear(self, s: Supervised) -> None:
        async with s.lock:
            if s.bridge is None or s.ended:
                return  # not answered yet: the mode is read when the bridge starts
            try:
                await s.bridge.rehear(who_hears(s.mode))
            except BridgeError as exc:
                log.error("call %s: the bridge did not take the new mode: %s", s.call_id, exc)
                self._bridge_lost(s)

    async def _unbridge(self, s: Supervised) -> None:
        """The caller and the agent paired directly again; the bridge stopped."""
        if s.bridge is not None:
            await s.bridge.stop()
            s.bridge = None
        if not s.bridged:
            return
        s.bridged = False
        caller = self.trunk.call_of(s.call_id)
        agent_leg = self.phones.legs.get(s.call_id)
        if caller is None or agent_leg is None or agent_leg.state != "answered":
            return  # the call or the agent's leg is over: nothing to pair
        with contextlib.suppress(MediaError):
            await self.media.pair(
                caller.sip_call_id,
                caller.remote_tag,
                caller.invite.body,
                agent_leg.local_tag,
                agent_leg.remote_sdp,
            )
            self.stats.restored += 1

    async def _finish(self, s: Supervised, *, hang_up: bool) -> None:
        async with s.lock:
            await self._unbridge(s)
        if hang_up and s.leg is not None and self.phones.supervisor_legs.get(s.call_id) is s.leg:
            self.phones.hang_up_supervisor(s.call_id)

    async def _take_over(self, s: Supervised, leg: PhoneLeg) -> None:
        async with s.lock:
            if s.bridge is not None:
                await s.bridge.stop()
                s.bridge = None
            s.bridged = False
            caller = self.trunk.call_of(s.call_id)
            if caller is None:
                return
            try:
                await self.media.pair(
                    caller.sip_call_id, caller.remote_tag, caller.invite.body, leg.local_tag, leg.remote_sdp
                )
            except MediaError as exc:
                self.stats.failed += 1
                log.warning("call %s: the supervisor's phone not paired with the caller: %s", s.call_id, exc)

    def _gone(self, s: Supervised, why: str) -> None:
        """The supervisor's phone hung up or never answered: the supervision ends."""
        if self.calls.get(s.call_id) is s:
            del self.calls[s.call_id]
            s.ended = True
            self._spawn(self._finish(s, hang_up=False))
        self._leave(s.supervisor, why)

    def _bridge_lost(self, s: Supervised) -> None:
        self.stats.bridge_lost += 1
        if self.calls.get(s.call_id) is not s:
            return
        del self.calls[s.call_id]
        s.ended = True
        log.error("call %s: the supervision's bridge is gone: caller and agent paired again", s.call_id)
        self._spawn(self._finish(s, hang_up=True))
        self._leave(s.supervisor, "bridge-lost")

    def _leave(self, supervisor: str, why: str) -> None:
        log.info("supervisor %s leaves (%s)", supervisor, why)
        try:
            self.trunk.rt.do(lambda now: self.trunk.rt.sb.leave_supervision(now, supervisor))
        except VccError as exc:
            log.debug("supervisor %s: leave refused: %s", supervisor, exc)

    # ---------------------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for s in list(self.calls.values()):
            s.ended = True
            if s.bridge is not None:
                await s.bridge.stop()
        self.calls.clear()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, MediaError):
                await asyncio.wait_for(task, 2.0)
