"""A call's mixing bridge, one per call, shared by whatever needs its parties mixed: a consultation
or conference (site_node/sip/consults.py) and a supervision (site_node/sip/supervision.py), also
both at once (a leader supervising a consultation or a conference).

The bridge (site_node/media/bridge.py) has one leg per party on it: the caller, the agent, the far
party (a consulted colleague's phone or a tie leg to another city) and the supervisor's phone.
The caller's and the agent's sides in rtpengine are paired with their legs when the first use
needs the bridge (`enter`); a party rung for the bridge is offered its leg (`offer_to`) and put
on it when it answers (`add`). Who hears whom follows from the uses together: the consultation's
stage (`CONSULT_HEARS`; none: the caller and the agent hear each other) and the supervision's
mode over it (`supervised_hears`). Any change (a party on or off, a stage or a mode) restarts the
mixer on the same ports. When the last use ends, the bridge stops and the caller is paired
directly with the party its user names (`leave`); a bridge that dies on its own is reported to
each use (`on_lost`) and the caller is paired with its agent again.
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
from site_node.callcontrol.supervision import DIRECT, supervised_hears
from site_node.media.bridge import BridgeError, Leg, MixBridge, free_rtp_port
from site_node.media.control import MediaControl, bridge_sdp
from site_node.media.ng import MediaError
from site_node.sip.message import new_tag
from site_node.sip.phones import AgentPhones
from vcc.shutdown import finish

if TYPE_CHECKING:
    from site_node.sip.trunk import SipTrunk

log = logging.getLogger(__name__)

ROLES = ("caller", "agent", "far", "supervisor")
CONSULT, SUPERVISION = "consult", "supervision"


@dataclass(frozen=True, slots=True)
class Side:
    """A party's own side of the call in rtpengine: its tag and its SDP (for re-pairing)."""

    tag: str
    sdp: bytes


@dataclass(eq=False)
class BridgedCall:
    call_id: str
    # The bridge's receiving port and rtpengine tag of each party's leg.
    ports: dict[str, int]
    tags: dict[str, str]
    # The engine's port each party's leg sends to, for the parties on the bridge.
    sends: dict[str, int] = field(default_factory=dict)
    # The uses and their state: CONSULT -> its stage, SUPERVISION -> its mode.
    uses: dict[str, str] = field(default_factory=dict)
    bridge: MixBridge | None = None
    # The caller's and the agent's sides are paired with their legs (not with each other).
    entered: bool = False
    ended: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def hears(self) -> dict[str, tuple[str, ...]]:
        stage = self.uses.get(CONSULT)
        base = dict(CONSULT_HEARS[stage]) if stage is not None else dict(DIRECT)
        mode = self.uses.get(SUPERVISION)
        mix = supervised_hears(base, mode) if mode is not None else base
        # Only the parties on the bridge: a party not answered yet (or gone) neither hears nor is heard.
        on = set(self.sends)
        return {p: tuple(h for h in heard if h in on) for p, heard in mix.items() if p in on}


@dataclass
class BridgeStats:
    started: int = 0
    # The caller paired directly again (with its agent, or whom the last use named) off a bridge.
    restored: int = 0
    # Calls whose bridge held two uses at once (a supervised consultation or conference).
    shared: int = 0
    lost: int = 0
    failed: int = 0


class CallBridges:
    def __init__(self, trunk: SipTrunk, phones: AgentPhones, folder: Path) -> None:
        self.trunk = trunk
        self.phones = phones
        self.media: MediaControl = trunk.media
        self.folder = folder
        self.stats = BridgeStats()
        self.calls: dict[str, BridgedCall] = {}
        # Told when a call's bridge died on its own, by use (the use ends; the call goes on).
        self.on_lost: dict[str, Callable[[str], None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def _interface(self) -> str:
        return self.media.engine.config.interface

    def bridged(self, call_id: str) -> bool:
        """The call's parties are on a bridge (a hold must not block the agent's side)."""
        b = self.calls.get(call_id)
        return b is not None and b.entered

    def use(self, call_id: str, use: str, state: str) -> BridgedCall:
        """A use of the call's bridge begins (or its state changes): the bridge, made if new. The
        mix changes once the parties are on (`enter`, `add`), or at once if they are."""
        b = self.calls.get(call_id)
        if b is None:
            tag = new_tag()
            b = BridgedCall(
                call_id,
                ports={role: free_rtp_port(self._interface) for role in ROLES},
                tags={role: f"bridge-{role}-{tag}" for role in ROLES},
            )
            self.calls[call_id] = b
        if use not in b.uses and b.uses:
            self.stats.shared += 1
        changed = b.uses.get(use) != state
        b.uses[use] = state
        if changed and b.entered:
            self._spawn(self._remix(b))
        return b

    def active(self, call_id: str, use: str) -> bool:
        b = self.calls.get(call_id)
        return b is not None and use in b.uses

    # The parties ----------------------------------------------------------------------------------

    async def offer_to(self, call_id: str, role: str, party_tag: str) -> bytes:
        """The SDP to ring a party with (a phone, a tie leg): the engine's side of its leg."""
        b = self.calls.get(call_id)
        caller = self.trunk.call_of(call_id)
        if b is None or b.ended or caller is None:
            raise MediaError("the call has no bridge (or the caller left)")
        sdp = bridge_sdp(b.ports[role], self._interface)
        return await self.media.offer_to(caller.sip_call_id, b.tags[role], party_tag, sdp)

    async def add(self, call_id: str, role: str, party: Side) -> None:
        """A rung party answered: on the bridge (the caller and the agent too, if not yet)."""
        b = self.calls.get(call_id)
        if b is None:
            raise MediaError("the call has no bridge")
        async with b.lock:
            caller = self.trunk.call_of(call_id)
            if b.ended or caller is None:
                raise MediaError("the call's bridge is over")
            try:
                sid = caller.sip_call_id
                b.sends[role] = await self.media.answer_to(sid, b.tags[role], party.tag, party.sdp)
                await self._enter(b)
                await self._start(b)
            except (MediaError, BridgeError) as exc:
                b.sends.pop(role, None)
                self.stats.failed += 1
                log.warning("call %s: the %s not put on the bridge: %s", call_id, role, exc)
                raise MediaError(str(exc)) from exc

    async def remove(self, call_id: str, role: str) -> None:
        """A party left the bridge (its phone hung up, its use ended): the others mixed without it."""
        b = self.calls.get(call_id)
        if b is None:
            return
        async with b.lock:
            if b.sends.pop(role, None) is not None and not b.ended and b.bridge is not None:
                await self._start(b)

    async def _enter(self, b: BridgedCall) -> None:
        """The caller's and the agent's sides paired with their legs (once)."""
        if b.entered:
            return
        caller = self.trunk.call_of(b.call_id)
        agent = self.phones.legs.get(b.call_id)
        if caller is None or agent is None or agent.state != "answered":
            raise MediaError("the call is no longer the agent's")
        sid, iface = caller.sip_call_id, self._interface
        b.sends["caller"], _ = await self.media.pair(
            sid, caller.remote_tag, caller.invite.body, b.tags["caller"],
            bridge_sdp(b.ports["caller"], iface), bridged=True,
        )  # fmt: skip
        b.entered = True
        b.sends["agent"], _ = await self.media.pair(
            sid, agent.local_tag, agent.remote_sdp, b.tags["agent"], bridge_sdp(b.ports["agent"], iface),
            bridged=True,
        )  # fmt: skip
        # A hold may have blocked the agent's voice: whoever is mixed with the agent must hear it.
        await self.media.block(sid, agent.local_tag, False)

    async def _start(self, b: BridgedCall) -> None:
        """(Re)start the mixer with the parties on the bridge and the mix of the uses."""
        legs = [Leg(role, b.ports[role], port) for role, port in b.sends.items()]
        if b.bridge is None:
            b.bridge = MixBridge(b.call_id, legs, self.folder / f"bridge-{b.call_id}.log", self._interface)
            b.bridge.on_died = lambda bridge, code: self._died(b, bridge)
            self.stats.started += 1
        await b.bridge.relink(legs, b.hears())
        log.info("call %s: bridge %s, uses %s, pid %s", b.call_id, sorted(b.sends), b.uses, b.bridge.pid)

    async def _remix(self, b: BridgedCall) -> None:
        async with b.lock:
            if b.ended or b.bridge is None:
                return  # not started yet: the mix is read when it starts
            try:
                await self._start(b)
            except BridgeError as exc:
                log.error("call %s: the bridge did not take the new mix: %s", b.call_id, exc)
                self._died(b, b.bridge)

    # The end -------------------------------------------------------------------------------------

    async def leave(self, call_id: str, use: str, *, drop: tuple[str, ...] = ()) -> None:
        """A use of the call's bridge ended: the parties `drop` leave the bridge with it. The last
        use gone, the bridge stops and the caller is paired with its agent's phone again (when it
        is still on the call)."""
        b = self.calls.get(call_id)
        if b is None:
            return
        async with b.lock:
            if b.ended:
                return
            b.uses.pop(use, None)
            for role in drop:
                b.sends.pop(role, None)
            if b.uses:
                if b.bridge is not None and b.entered:
                    try:
                        await self._start(b)
                    except BridgeError as exc:
                        log.error("call %s: the bridge did not take the new mix: %s", b.call_id, exc)
                        self._died(b, b.bridge)
                return
            self._forget(b)
            await self._unbridge(b, None)

    async def finish(self, call_id: str, use: str, direct: Side) -> bool:
        """The call leaves the bridge for good (a consultation completed: the far party keeps the
        caller): the bridge stops, the caller is paired with `direct`, and every other use is told
        its voice is over (`on_lost`). False when the caller could not be paired."""
        b = self.calls.get(call_id)
        if b is None:
            return False
        async with b.lock:
            if b.ended:
                return False
            others = [u for u in b.uses if u != use]
            self._forget(b)
            paired = await self._unbridge(b, direct)
        for other in others:
            told = self.on_lost.get(other)
            if told is not None:
                told(call_id)
        return paired

    def _forget(self, b: BridgedCall) -> None:
        b.ended = True
        b.uses.clear()
        if self.calls.get(b.call_id) is b:
            del self.calls[b.call_id]

    async def _unbridge(self, b: BridgedCall, direct: Side | None) -> bool:
        """The bridge stopped; the caller paired with `direct` (None: its agent's phone)."""
        if b.bridge is not None:
            await b.bridge.stop()
            b.bridge = None
        if not b.entered and direct is None:
            return False  # caller and agent were never taken off each other
        b.entered = False
        caller = self.trunk.call_of(b.call_id)
        if direct is None:
            agent = self.phones.legs.get(b.call_id)
            if agent is None or agent.state != "answered":
                return False  # the agent's leg is over: nothing to pair
            direct = Side(agent.local_tag, agent.remote_sdp)
        if caller is None:
            return False
        try:
            sid = caller.sip_call_id
            await self.media.pair(sid, caller.remote_tag, caller.invite.body, direct.tag, direct.sdp)
        except MediaError as exc:
            self.stats.failed += 1
            log.warning("call %s: the caller not paired back off the bridge: %s", b.call_id, exc)
            return False
        self.stats.restored += 1
        return True

    def call_ended(self, call_id: str) -> None:
        b = self.calls.get(call_id)
        if b is not None:
            self._forget(b)
            self._spawn(self._stop(b))

    async def _stop(self, b: BridgedCall) -> None:
        async with b.lock:
            if b.bridge is not None:
                await b.bridge.stop()
                b.bridge = None

    def _died(self, b: BridgedCall, bridge: MixBridge) -> None:
        """The mixer died on its own: every use ends, the caller is paired with its agent again."""
        if self.calls.get(b.call_id) is not b or b.bridge is not bridge:
            return
        self.stats.lost += 1
        log.error("call %s: the bridge is gone (%s): the caller is paired with its agent", b.call_id, b.uses)
        uses = list(b.uses)
        self._forget(b)

        async def back() -> None:
            async with b.lock:
                await self._unbridge(b, None)

        self._spawn(back())
        for use in uses:
            told = self.on_lost.get(use)
            if told is not None:
                told(b.call_id)

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for b in list(self.calls.values()):
            b.ended = True
            if b.bridge is not None:
                await b.bridge.stop()
        self.calls.clear()
        for task in list(self._tasks):
            with contextlib.suppress(TimeoutError, MediaError):
                await finish(task, 2.0)
