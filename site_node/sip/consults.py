"""The voice of a consultation with an agent in another city, its completion, cancel and the
three-way conference (SPEC F19), over the SIP tie trunk and the call's mixing bridge at the
serving agent's site (site_node/sip/bridging.py: shared with a supervision of the same call).

When the serving agent consults another city (OfferRemote, purpose transfer-consult), a tie leg
is dialled to the target (as for an overflow), but its media is the far leg of the call's bridge:
the caller's and the serving agent's sides in rtpengine are paired with the bridge's other two
legs. While they consult the agent and the far agent hear each other and the caller (held) hears
the music rtpengine plays; conferenced, all three hear each other (`CONSULT_HEARS`). Completed:
the bridge stops and the caller is paired with the tie leg directly (the far agent keeps the
caller, the leg rides on as the call's remote leg; a supervision of the serving agent loses its
voice). Cancelled, failed, or the far agent left: the far leg leaves the bridge and the caller is
paired with the agent again (the call control ends the tie leg), or, supervised, stays on the
bridge with the agent and the supervisor.

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
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING

from site_node.callcontrol.domain import OfferRemote, ToAgent
from site_node.media.control import MediaControl
from site_node.media.ng import MediaError
from site_node.sip.bridging import CONSULT, CallBridges, Side
from site_node.sip.phones import AgentPhones, PhoneLeg
from site_node.sip.ties import TieOut, TieTrunks
from vcc.errors import VccError
from vcc.shutdown import finish

if TYPE_CHECKING:
    from site_node.sip.trunk import SipTrunk

log = logging.getLogger(__name__)

_BACK = frozenset({"cancelled", "left", "consult-failed"})


@dataclass(eq=False)
class Consulting:
    call_id: str
    offer_id: str
    agent_code: str
    stage: str = "consult"
    # The far party's leg: a tie leg to another city, or a colleague's phone here.
    far: TieOut | PhoneLeg | None = None
    ended: bool = False


@dataclass
class ConsultVoiceStats:
    bridged: int = 0
    conferenced: int = 0
    completed: int = 0
    returned: int = 0
    failed: int = 0
    without_media: int = 0
    # Consulted colleagues who answered on the desktop (their phone called again to answer).
    desk_answered: int = 0


class ConsultVoice:
    def __init__(
        self, trunk: SipTrunk, ties: TieTrunks | None, phones: AgentPhones, bridges: CallBridges
    ) -> None:
        self.trunk = trunk
        self.ties = ties
        self.phones = phones
        self.bridges = bridges
        bridges.on_lost[CONSULT] = self._bridge_lost
        self.media: MediaControl = trunk.media
        self.stats = ConsultVoiceStats()
        self.calls: dict[str, Consulting] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # The call control's effects ------------------------------------------------------------------

    def offer_remote(self, offer: OfferRemote) -> None:
        caller = self.trunk.call_of(offer.call_id)
        agent_leg = self.phones.legs.get(offer.call_id)
        if caller is None or agent_leg is None or agent_leg.state != "answered" or self.ties is None:
            # No SIP caller here, or the agent talks without a phone: no voice to carry.
            self.stats.without_media += 1
            return
        old = self.calls.pop(offer.call_id, None)
        if old is not None:
            old.ended = True
            self._spawn(self._back(old))
        c = Consulting(offer.call_id, offer.offer_id, agent_leg.code)
        self.bridges.use(offer.call_id, CONSULT, c.stage)
        tie = self.ties.dial(offer, sdp=lambda: self._offer_far(c), on_answered=lambda t: self._bridge(c, t))
        if tie is None:
            self.stats.without_media += 1
            self._spawn(self.bridges.leave(offer.call_id, CONSULT))
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
        if caller is None or agent_leg is None or agent_leg.state != "answered" or fx.call_id in self.calls:
            self.stats.without_media += 1
            return
        c = Consulting(fx.call_id, "", agent_leg.code)

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
        self.bridges.use(fx.call_id, CONSULT, c.stage)

    async def _answered_here(self, c: Consulting, leg: PhoneLeg) -> None:
        """The colleague's phone answered: on the bridge, then the colleague answers the call (had
        it answered on the desktop already, only the voice is new)."""
        await self._bridge(c, leg)
        if leg.desk_answered:
            return
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
            again = self.phones.consult_legs.get(fx.call_id)
            if c.far.state != "answered" and again is not None and again.desk_answered:
                # The colleague answered on the desktop: its phone is called again to answer by
                # itself (phones.py), and its answer puts it on the bridge.
                c.far = again
                self.stats.desk_answered += 1
            elif c.far.state != "answered":
                # Its phone gone meanwhile: no voice to mix.
                del self.calls[fx.call_id]
                c.ended = True
                self.stats.without_media += 1
                self._spawn(self.bridges.leave(fx.call_id, CONSULT, drop=("far",)))
            return
        if fx.kind != "transfer" or fx.agent_code != c.agent_code:
            return
        if fx.stage == "conferenced":
            c.stage = "conference"
            self.stats.conferenced += 1
            self.bridges.use(fx.call_id, CONSULT, c.stage)
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
        self.bridges.call_ended(call_id)

    # Media -----------------------------------------------------------------------------------------

    async def _offer_far(self, c: Consulting) -> bytes:
        if c.far is None or c.ended:
            raise MediaError("the consultation is over")
        return await self.bridges.offer_to(c.call_id, "far", c.far.local_tag)

    async def _bridge(self, c: Consulting, far: TieOut | PhoneLeg) -> None:
        """The far party answered (the target the tie leg, or the colleague's phone): on the call's
        bridge with the caller and the agent."""
        agent_leg = self.phones.legs.get(c.call_id)
        if c.ended or agent_leg is None or agent_leg.state != "answered":
            raise MediaError("the consultation is over")
        try:
            await self.bridges.add(c.call_id, "far", Side(far.local_tag, far.remote_sdp))
        except MediaError:
            self.stats.failed += 1
            raise
        self.stats.bridged += 1
        log.info("call %s: consultation with voice", c.call_id)

    async def _back(self, c: Consulting) -> None:
        """Back to the serving agent: the far party off the bridge (the caller paired with the agent
        again, unless a supervision keeps the bridge)."""
        await self.bridges.leave(c.call_id, CONSULT, drop=("far",))
        self.stats.returned += 1

    async def _hand_over(self, c: Consulting) -> None:
        """Completed: the caller talks to the far agent directly, without the bridge."""
        far = c.far
        if far is None or far.state != "answered":
            await self.bridges.leave(c.call_id, CONSULT)
            return
        if await self.bridges.finish(c.call_id, CONSULT, Side(far.local_tag, far.remote_sdp)):
            self.stats.completed += 1
        else:
            log.warning("call %s: the caller not handed to the far party", c.call_id)

    def _bridge_lost(self, call_id: str) -> None:
        """The bridge died on its own (or a supervisor took the call over): the consultation's voice
        is lost, the call is not (the caller is paired with its agent again)."""
        c = self.calls.pop(call_id, None)
        if c is not None:
            c.ended = True
            log.error("call %s: the consultation's voice is gone with the bridge", call_id)

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
        self.calls.clear()
        for task in list(self._tasks):
            with contextlib.suppress(TimeoutError, MediaError):
                await finish(task, 2.0)
