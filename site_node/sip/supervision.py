"""Supervision with voice (SPEC F24): what a SuperviseMedia effect asks, carried out with the
supervisor's registered phone, rtpengine and the call's mixing bridge (site_node/sip/bridging.py).

Monitor, whisper, barge-in: the supervisor's phone is rung (a UAC leg, `AgentPhones`); once it
answers, it is put on the call's bridge (the caller's and the agent's sides are paired with their
legs, if a consultation has not done so already), and the bridge sends each party the mix the mode
allows over whatever else the call is doing (`callcontrol.supervision.supervised_hears`: over the
caller and the agent, or over a consultation or a conference). A change of mode changes the mix
only. When supervision ends (the leader leaves, the call leaves the agent) the supervisor leaves
the bridge (the last use gone, the caller and the agent are paired directly again) and its phone
gets a BYE. Intercept: the supervisor's phone is paired with the caller directly and becomes the
call's phone (the agent's phone is hung up by the call control's own effects).

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
from dataclasses import dataclass
from typing import TYPE_CHECKING

from site_node.callcontrol.domain import SuperviseMedia, ToAgent
from site_node.media.control import MediaControl
from site_node.media.ng import MediaError
from site_node.sip.bridging import SUPERVISION, CallBridges, Side
from site_node.sip.phones import AgentPhones, PhoneLeg
from vcc.errors import VccError
from vcc.shutdown import finish

if TYPE_CHECKING:
    from site_node.sip.trunk import SipTrunk

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Supervised:
    call_id: str
    supervisor: str
    agent_code: str
    mode: str
    leg: PhoneLeg | None = None
    # The supervisor's phone is on the call's bridge.
    bridged: bool = False
    ended: bool = False


@dataclass
class SupervisionMediaStats:
    bridged: int = 0
    # Supervised without voice: no SIP caller here, no agent's or supervisor's phone.
    without_media: int = 0
    failed: int = 0
    bridge_lost: int = 0
    intercepted: int = 0


class SupervisorMedia:
    def __init__(self, trunk: SipTrunk, phones: AgentPhones, bridges: CallBridges) -> None:
        self.trunk = trunk
        self.phones = phones
        self.bridges = bridges
        bridges.on_lost[SUPERVISION] = self._bridge_lost
        self.media: MediaControl = trunk.media
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
            self.bridges.use(fx.call_id, SUPERVISION, fx.mode)
            return
        caller = self.trunk.call_of(fx.call_id)
        agent_leg = self.phones.legs.get(fx.call_id)
        if caller is None or agent_leg is None or agent_leg.state != "answered":
            self.stats.without_media += 1
            log.info("call %s: supervised by %s without voice (no SIP caller or agent's phone)",
                     fx.call_id, fx.supervisor)  # fmt: skip
            return
        s = Supervised(fx.call_id, fx.supervisor, fx.agent_code, fx.mode)
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
        # The mix of the mode, once the supervisor's phone is on (over a consultation, if any).
        self.bridges.use(fx.call_id, SUPERVISION, fx.mode)

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

    async def _offer_supervisor(self, s: Supervised, leg: PhoneLeg) -> bytes:
        if s.ended:
            raise MediaError("the supervision is over")
        return await self.bridges.offer_to(s.call_id, "supervisor", leg.local_tag)

    async def _bridge(self, s: Supervised, leg: PhoneLeg) -> None:
        """The supervisor answered: on the call's bridge, with the mix of its mode."""
        if s.ended:
            raise MediaError("the supervision is over")
        agent_leg = self.phones.legs.get(s.call_id)
        if agent_leg is None or agent_leg.state != "answered":
            raise MediaError("the call is no longer the agent's")
        try:
            await self.bridges.add(s.call_id, "supervisor", Side(leg.local_tag, leg.remote_sdp))
        except MediaError:
            self.stats.failed += 1
            raise
        s.bridged = True
        self.stats.bridged += 1
        log.info("call %s: %s %s with voice", s.call_id, s.supervisor, s.mode)

    async def _finish(self, s: Supervised, *, hang_up: bool) -> None:
        """The supervisor off the bridge (the last use: the caller and the agent paired again)."""
        await self.bridges.leave(s.call_id, SUPERVISION, drop=("supervisor",))
        if hang_up and s.leg is not None and self.phones.supervisor_legs.get(s.call_id) is s.leg:
            self.phones.hang_up_supervisor(s.call_id)

    async def _take_over(self, s: Supervised, leg: PhoneLeg) -> None:
        """Intercepted while on the bridge: the supervisor's phone paired with the caller directly."""
        await self.bridges.finish(s.call_id, SUPERVISION, Side(leg.local_tag, leg.remote_sdp))

    def _gone(self, s: Supervised, why: str) -> None:
        """The supervisor's phone hung up or never answered: the supervision ends."""
        if self.calls.get(s.call_id) is s:
            del self.calls[s.call_id]
            s.ended = True
            self._spawn(self._finish(s, hang_up=False))
        self._leave(s.supervisor, why)

    def _bridge_lost(self, call_id: str) -> None:
        """The call's bridge died, or the call left it for good: the supervision ends."""
        s = self.calls.pop(call_id, None)
        if s is None:
            return
        s.ended = True
        self.stats.bridge_lost += 1
        log.error("call %s: the supervision's voice is gone with the bridge", call_id)
        if self.phones.supervisor_legs.get(call_id) is s.leg:
            self.phones.hang_up_supervisor(call_id)
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
        self.calls.clear()
        for task in list(self._tasks):
            with contextlib.suppress(TimeoutError, MediaError):
                await finish(task, 2.0)
