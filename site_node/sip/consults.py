"""The voice of a consultation with an agent in another city, its completion, cancel and the
three-way conference (SPEC F19), over the SIP tie trunk and a mixing bridge
(site_node/media/bridge.py) at the serving agent's site.

When the serving agent consults another city (OfferRemote, purpose transfer-consult), a tie leg
is dialled to the target (as for an overflow), but its media is the far leg of the call's bridge:
the caller's and the serving agent's sides in rtpengine are paired with the bridge's other two
legs. While they consult the agent and the far agent hear each other and the caller (held) hears
the music rtpengine plays; conferenced, all three hear each other (`CONSULT_HEARS`). Completed:
the bridge stops and the caller is paired with the tie leg directly (the far agent keeps the
caller, the leg rides on as the call's remote leg). Cancelled, failed, or the far agent left: the
bridge stops and the caller is paired with the agent again (the call control ends the tie leg).

The target site needs nothing new: the tie leg stands in for the caller there and the consulted
agent's phone rings with it, as for any guest call. The conference takes a conference board
channel in the call control; the mixing is this bridge.

A colleague of the same site is consulted the same way, its registered phone (a UAC leg of
phones.py) standing where the tie leg stands: the phone answering is the colleague answering, its
BYE the colleague leaving; completed, its leg becomes the call's phone and the serving agent's
phone is hung up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from site_node.callcontrol.consults import CONSULT_HEARS
from site_node.callcontrol.domain import OfferRemote, ToAgent
from site_node.media.bridge import BridgeError, Leg, MixBridge, free_rtp_port
from site_node.media.control import MediaControl, bridge_sdp
from site_node.media.ng import MediaError
from site_node.sip.message import new_tag
from site_node.sip.phones import AgentPhones, PhoneLeg
from site_node.sip.ties import TieOut, TieTrunks
from vcc.errors import VccError

if TYPE_CHECKING:
    from site_node.sip.trunk import SipTrunk

log = logging.getLogger(__name__)

ROLES = ("caller", "agent", "far")
_BACK = frozenset({"cancelled", "left", "consult-failed"})


@dataclass(eq=False)
class Consulting:
    call_id: str
    offer_id: str
    agent_code: str
    ports: dict[str, int]
    tags: dict[str, str]
    stage: str = "consult"
    # The far party's leg: a tie leg to another city, or a colleague's phone here.
    far: TieOut | PhoneLeg | None = None
    bridge: MixBridge | None = None
    bridged: bool = False
    ended: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class ConsultVoiceStats:
    bridged: int = 0
    conferenced: int = 0
    completed: int = 0
    returned: int = 0
    failed: int = 0
    without_media: int = 0


class ConsultVoice:
    def __init__(self, trunk: SipTrunk, ties: TieTrunks | None, phones: AgentPhones, folder: Path) -> None:
        self.trunk = trunk
        self.ties = ties
        self.phones = phones
        self.media: MediaControl = trunk.media
        self.folder = folder
        self.stats = ConsultVoiceStats()
        self.calls: dict[str, Consulting] = {}
        # Calls on a supervisor's bridge (wired by the composition root).
        self.supervised: Callable[[str], bool] = lambda call_id: False
        self._tasks: set[asyncio.Task[None]] = set()

    def bridged(self, call_id: str) -> bool:
        """The call's parties are on a consultation's bridge (a hold must not block the agent)."""
        return call_id in self.calls

    # The call control's effects ------------------------------------------------------------------

    def offer_remote(self, offer: OfferRemote) -> None:
        caller = self.trunk.call_of(offer.call_id)
        agent_leg = self.phones.legs.get(offer.call_id)
        if (
            caller is None
            or agent_leg is None
            or agent_leg.state != "answered"
            or self.supervised(offer.call_id)
        ):
            # No SIP caller here, the agent talks without a phone, or a supervisor's bridge holds
            # the call (one bridge per call): no voice to carry.
            self.stats.without_media += 1
            return
        old = self.calls.pop(offer.call_id, None)
        if old is not None:
            old.ended = True
            self._spawn(self._back(old))
        tag = new_tag()
        c = Consulting(
            offer.call_id, offer.offer_id, agent_leg.code,
            ports={role: free_rtp_port(self._interface) for role in ROLES},
            tags={role: f"consult-{role}-{tag}" for role in ROLES},
        )  # fmt: skip
        if self.ties is None:
            self.stats.without_media += 1
            return
        tie = self.ties.dial(offer, sdp=lambda: self._offer_far(c), on_answered=lambda t: self._bridge(c, t))
        if tie is None:
            self.stats.without_media += 1
            return
        c.far = tie
        self.calls[offer.call_id] = c

    def _consult_here(self, fx: ToAgent) -> None:
        """A colleague of this site is offered the call as a consultation: ring its phone as the far
        leg of the call's bridge."""
        call = self.trunk.rt.sb.calls.get(fx.call_id)
        consult = call.consult if call is not None else None
        if consult is None or consult.offer_id or consult.agent_code != fx.agent_code:
            return  # not a consultation here
        caller = self.trunk.call_of(fx.call_id)
        agent_leg = self.phones.legs.get(fx.call_id)
        if (
            caller is None
            or agent_leg is None
            or agent_leg.state != "answered"
            or self.supervised(fx.call_id)
            or fx.call_id in self.calls
        ):
            self.stats.without_media += 1
            return
        tag = new_tag()
        c = Consulting(
            fx.call_id, "", agent_leg.code,
            ports={role: free_rtp_port(self._interface) for role in ROLES},
            tags={role: f"consult-{role}-{tag}" for role in ROLES},
        )  # fmt: skip

        async def offer(leg: PhoneLeg) -> bytes:
            c.far = leg
            return await self._offer_far(c)

        leg = self.phones.ring_consulted(
            fx.call_id, fx.agent_code, offer=offer, on_answered=lambda leg: self._answered_here(c, leg),
            on_gone=lambda leg, why: self._gone_here(c, leg, why),
        )  # fmt: skip
        if leg is None:
            self.stats.without_media += 1  # the colleague has no registered phone
            return
        c.far = leg
        self.calls[fx.call_id] = c

    async def _answered_here(self, c: Consulting, leg: PhoneLeg) -> None:
        """The colleague's phone answered: on the bridge, then the colleague answers the call."""
        await self._bridge(c, leg)
        sb = self.trunk.rt.sb
        self._do(lambda now: sb.answer(now, leg.code, c.call_id))

    def _gone_here(self, c: Consulting, leg: PhoneLeg, why: str) -> None:
        if why == "hung-up":
            # The colleague left the consultation (the call control gives the caller back).
            sb = self.trunk.rt.sb
            self._do(lambda now: sb.agent_hang_up(now, leg.code, c.call_id))
            return
        # Refused, never answered, or its media not connected: the consultation fails.
        log.info("call %s: the consulted colleague %s's phone is unreachable (%s)", c.call_id, leg.code, why)
        sb = self.trunk.rt.sb
        self._do(lambda now: sb.phone_unreachable(now, leg.code, c.call_id))

    def to_agent(self, fx: ToAgent) -> None:
        """The serving agent's view of the consultation tells what the voice must do."""
        if fx.kind == "offered" and fx.call_id:
            self._consult_here(fx)
            return
        c = self.calls.get(fx.call_id)
        if c is None:
            return
        if fx.kind == "connected" and isinstance(c.far, PhoneLeg) and fx.agent_code == c.far.code:
            if c.far.state != "answered":
                # The colleague answered on the desktop: its phone is cancelled, no voice to mix.
                del self.calls[fx.call_id]
                c.ended = True
                self.stats.without_media += 1
            return
        if fx.kind != "transfer" or fx.agent_code != c.agent_code:
            return
        if fx.stage == "conferenced":
            c.stage = "conference"
            self.stats.conferenced += 1
            self._spawn(self._rehear(c))
        elif fx.stage == "completed":
            del self.calls[fx.call_id]
            c.ended = True
            if isinstance(c.far, PhoneLeg):
                # Before the serving agent's leg ends: its phone is hung up, the colleague's stays.
                self.phones.adopt_consulted(c.call_id)
            self._spawn(self._hand_over(c))
        elif fx.stage in _BACK:
            del self.calls[fx.call_id]
            c.ended = True
            self._spawn(self._back(c))

    def call_ended(self, call_id: str) -> None:
        c = self.calls.pop(call_id, None)
        if c is not None:
            c.ended = True
            self._spawn(self._stop(c))

    # Media -----------------------------------------------------------------------------------------

    @property
    def _interface(self) -> str:
        return self.media.engine.config.interface

    async def _offer_far(self, c: Consulting) -> bytes:
        caller = self.trunk.call_of(c.call_id)
        if caller is None or c.far is None:
            raise MediaError("the caller left")
        sdp = bridge_sdp(c.ports["far"], self._interface)
        return await self.media.offer_to(caller.sip_call_id, c.tags["far"], c.far.local_tag, sdp)

    async def _bridge(self, c: Consulting, tie: TieOut | PhoneLeg) -> None:
        """The far party answered (the target the tie leg, or the colleague's phone): the three
        sides on the consultation's bridge."""
        async with c.lock:
            caller = self.trunk.call_of(c.call_id)
            agent_leg = self.phones.legs.get(c.call_id)
            if c.ended or caller is None or agent_leg is None or agent_leg.state != "answered":
                raise MediaError("the consultation is over")
            sid, iface = caller.sip_call_id, self._interface
            try:
                to_far = await self.media.answer_to(sid, c.tags["far"], tie.local_tag, tie.remote_sdp)
                to_caller, _ = await self.media.pair(
                    sid, caller.remote_tag, caller.invite.body, c.tags["caller"],
                    bridge_sdp(c.ports["caller"], iface), bridged=True,
                )  # fmt: skip
                c.bridged = True
                to_agent, _ = await self.media.pair(
                    sid, agent_leg.local_tag, agent_leg.remote_sdp, c.tags["agent"],
                    bridge_sdp(c.ports["agent"], iface), bridged=True,
                )  # fmt: skip
                # The hold may have blocked the agent's voice: the far agent must hear it.
                await self.media.block(sid, agent_leg.local_tag, False)
                legs = [
                    Leg("caller", c.ports["caller"], to_caller),
                    Leg("agent", c.ports["agent"], to_agent),
                    Leg("far", c.ports["far"], to_far),
                ]
                bridge = MixBridge(c.call_id, legs, self.folder / f"consult-{c.call_id}.log", iface)
                bridge.on_died = lambda b, code: self._bridge_lost(c)
                c.bridge = bridge
                await bridge.start(CONSULT_HEARS[c.stage])
            except (MediaError, BridgeError) as exc:
                self.stats.failed += 1
                log.warning("call %s: the consultation's bridge not set up: %s", c.call_id, exc)
                await self._unbridge(c)
                raise MediaError(str(exc)) from exc
            self.stats.bridged += 1
            log.info("call %s: consultation with voice (bridge pid %s)", c.call_id, bridge.pid)

    async def _rehear(self, c: Consulting) -> None:
        async with c.lock:
            if c.bridge is None or c.ended:
                return  # not answered yet: the stage is read when the bridge starts
            try:
                await c.bridge.rehear(CONSULT_HEARS[c.stage])
            except BridgeError as exc:
                log.error("call %s: the bridge did not take the conference: %s", c.call_id, exc)
                self._bridge_lost(c)

    async def _unbridge(self, c: Consulting) -> None:
        """Back to the serving agent: the caller paired with the agent again, the bridge stopped."""
        if c.bridge is not None:
            await c.bridge.stop()
            c.bridge = None
        if not c.bridged:
            return
        c.bridged = False
        caller = self.trunk.call_of(c.call_id)
        agent_leg = self.phones.legs.get(c.call_id)
        if caller is None or agent_leg is None or agent_leg.state != "answered":
            return
        with contextlib.suppress(MediaError):
            await self.media.pair(
                caller.sip_call_id, caller.remote_tag, caller.invite.body, agent_leg.local_tag,
                agent_leg.remote_sdp,
            )  # fmt: skip
            self.stats.returned += 1

    async def _back(self, c: Consulting) -> None:
        async with c.lock:
            await self._unbridge(c)

    async def _stop(self, c: Consulting) -> None:
        async with c.lock:
            if c.bridge is not None:
                await c.bridge.stop()
                c.bridge = None

    async def _hand_over(self, c: Consulting) -> None:
        """Completed: the caller talks to the far agent over the tie leg, without the bridge."""
        async with c.lock:
            if c.bridge is not None:
                await c.bridge.stop()
                c.bridge = None
            c.bridged = False
            caller, tie = self.trunk.call_of(c.call_id), c.far
            if caller is None or tie is None or tie.state != "answered":
                return
            try:
                await self.media.pair(
                    caller.sip_call_id, caller.remote_tag, caller.invite.body, tie.local_tag, tie.remote_sdp
                )
            except MediaError as exc:
                self.stats.failed += 1
                log.warning("call %s: the caller not handed to the tie leg: %s", c.call_id, exc)
                return
            self.stats.completed += 1

    def _bridge_lost(self, c: Consulting) -> None:
        """The bridge died on its own: the caller goes back to its agent (the consultation's voice
        is lost, the call is not)."""
        if self.calls.get(c.call_id) is not c:
            return
        del self.calls[c.call_id]
        c.ended = True
        log.error(
            "call %s: the consultation's bridge is gone: the caller is paired with its agent", c.call_id
        )
        self._spawn(self._back(c))

    # ---------------------------------------------------------------------------------------------

    def _do(self, op: object) -> None:
        try:
            self.trunk.rt.do(op)  # type: ignore[arg-type]
        except VccError as exc:
            log.info("a consulted colleague's phone action refused: %s", exc)

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for c in list(self.calls.values()):
            c.ended = True
            if c.bridge is not None:
                await c.bridge.stop()
        self.calls.clear()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, MediaError):
                await asyncio.wait_for(task, 2.0)
