"""Agents' phones ring: the call control offers a call to an agent whose phone is registered ->
an INVITE to the phone (a UAC, RFC 3261 §17.1) with rtpengine's side of the caller's media; the
phone's 200 OK is the agent answering (`answer()`), its BYE the agent hanging up; a refusal or
silence is `phone_unreachable()` (the agent turns not ready, as on ring-no-answer). The offer
withdrawn or answered on the desktop -> CANCEL; the call over -> BYE.

The caller's voice is bridged by rtpengine: a second offer from the caller's tag, answered with
the phone's SDP, pairs the caller with the phone instead of the sink (no audio through Python).

Answered on the desktop while the phone rings: the ring is cancelled and the phone is called again
at once with a request to answer by itself (`Call-Info: ...;answer-after=0` and RFC 7462's
`Alert-Info: <urn:alert:service:auto-answer>`, as CTI desktops drive desk phones): a phone that
honours it connects the voice with no touch, one that does not rings again until the agent picks
up. Its answer carries the voice only (the call control had the answer already); its refusal or
silence leaves the call talking without voice (counted `desk_no_voice`), it does not make the
agent not ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING

from site_node.callcontrol.domain import ToAgent
from site_node.media.ng import MediaError
from site_node.sip.message import (
    Message,
    NameAddr,
    SipParseError,
    new_branch,
    new_tag,
    response,
    uri_host_port,
)
from site_node.sip.registrar import Binding, Registrar
from site_node.sip.timers import Expiring, Retransmit
from site_node.sip.transport import Address
from vcc.errors import VccError

if TYPE_CHECKING:
    from site_node.sip.dialog import SipCall
    from site_node.sip.trunk import SipTrunk

log = logging.getLogger(__name__)


@dataclass(eq=False)
class PhoneLeg:
    call_id: str
    code: str
    caller: SipCall
    binding: Binding
    sip_call_id: str
    local_tag: str
    branch: str
    invite: Message | None = None
    # calling -> ringing (1xx) -> answered (2xx) ; cancelled / ended
    state: str = "calling"
    remote_tag: str = ""
    remote_target: str = ""
    cseq: int = 1
    retransmit: Retransmit | None = None
    # Our CANCEL and BYE, re-sent until the phone answers them.
    cancel_rt: Retransmit | None = None
    bye_rt: Retransmit | None = None
    ack: bytes = b""
    # The phone's SDP answer (its media address and codec), kept for re-pairing its media.
    remote_sdp: bytes = b""
    # A supervisor's phone (site_node/sip/supervision.py): its own offer, what to do once it
    # answered, and who is told when it is gone; the call control knows nothing of this leg.
    offer: Callable[[PhoneLeg], Awaitable[bytes]] | None = None
    on_answered: Callable[[PhoneLeg], Awaitable[None]] | None = None
    on_gone: Callable[[PhoneLeg, str], None] | None = None
    # Called again after its agent answered on the desktop: asked to answer by itself, its answer
    # connects the voice only.
    desk_answered: bool = False

    @property
    def supervising(self) -> bool:
        return self.on_gone is not None

    @property
    def dest(self) -> Address:
        return self.binding.source


class AgentPhones:
    def __init__(self, trunk: SipTrunk, registrar: Registrar) -> None:
        self.trunk = trunk
        self.registrar = registrar
        self.legs: dict[str, PhoneLeg] = {}  # by vcc call id
        # Supervisors' phones listening to (or taking over) a call, by vcc call id.
        self.supervisor_legs: dict[str, PhoneLeg] = {}
        # A colleague of this site consulted on a call (site_node/sip/consults.py), by vcc call id.
        self.consult_legs: dict[str, PhoneLeg] = {}
        # Our transactions with phones, by branch (kept as long as a transaction can live).
        self._by_branch: Expiring[str, PhoneLeg] = Expiring()
        self._by_dialog: dict[tuple[str, str], PhoneLeg] = {}  # (phone Call-ID, phone's tag)
        self._tasks: set[asyncio.Task[None]] = set()
        # Guest calls offered to an agent before the tie leg from their city brought the voice.
        self._awaiting: dict[str, ToAgent] = {}
        self.rang = 0
        self.answered = 0
        self.unreachable = 0
        # Calls answered on the desktop: the phone called again to answer by itself; of those, the
        # phones that did (voice connected) and those that refused or stayed silent (no voice).
        self.desk_rung = 0
        self.desk_voice = 0
        self.desk_no_voice = 0

    # What the call control tells the agent (the runtime forwards every ToAgent) ----------------

    def to_agent(self, fx: ToAgent) -> None:
        if fx.kind == "offered" and fx.call_id:
            self._offered(fx)
            return
        if fx.kind in ("withdrawn", "ended", "connected"):
            self._awaiting.pop(fx.call_id, None)
        leg = self.legs.get(fx.call_id)
        aside = self.consult_legs.get(fx.call_id)
        if aside is not None and aside.code == fx.agent_code:
            leg = aside
        if leg is None or leg.code != fx.agent_code:
            return  # another agent's news about this call (a consulted colleague's, say)
        if fx.kind == "connected" and leg.state in ("calling", "ringing") and not leg.desk_answered:
            self._answered_on_desk(leg)
        elif fx.kind in ("withdrawn", "ended"):
            self._hang_up(leg)

    def _answered_on_desk(self, leg: PhoneLeg) -> None:
        """Its agent answered on the desktop while the phone rang: the ring is cancelled and the
        phone called again, asked to answer by itself; its answer will carry the voice."""
        book = self.consult_legs if self.consult_legs.get(leg.call_id) is leg else self.legs
        self._hang_up(leg)
        again = PhoneLeg(
            leg.call_id, leg.code, leg.caller, leg.binding, f"vcc-{new_tag()}{new_tag()}", new_tag(),
            new_branch(), offer=leg.offer, on_answered=leg.on_answered, on_gone=leg.on_gone,
            desk_answered=True,
        )  # fmt: skip
        book[leg.call_id] = again
        self.desk_rung += 1
        log.info("call %s: %s answered on the desktop: the phone asked to answer", leg.call_id, leg.code)
        self._spawn(self._ring(again))

    def _offered(self, fx: ToAgent) -> None:
        binding = self.registrar.phone_of(fx.agent_code)
        caller = self.trunk.call_of(fx.call_id)
        call = self.trunk.rt.sb.calls.get(fx.call_id)
        if binding is not None and caller is None and call is not None and call.guest_of:
            # Another city's caller: its voice comes over the tie trunk, maybe a moment later.
            self._awaiting[fx.call_id] = fx
            return
        if binding is None or caller is None or fx.call_id in self.legs:
            return  # no phone, or not a SIP caller (a gRPC caller has no voice to bridge)
        if call is not None and call.consult is not None and call.consult.agent_code == fx.agent_code:
            return  # a colleague consulted: its phone is a leg of the consultation's bridge
        leg = PhoneLeg(fx.call_id, fx.agent_code, caller, binding, f"vcc-{new_tag()}{new_tag()}", new_tag(),
                       new_branch())  # fmt: skip
        self.legs[fx.call_id] = leg
        self._spawn(self._ring(leg))

    def media_ready(self, call_id: str) -> None:
        """A tie leg brought this call's voice here: ring the phone the call was offered to."""
        fx = self._awaiting.pop(call_id, None)
        if fx is not None:
            self._offered(fx)

    def ring_supervisor(
        self,
        call_id: str,
        code: str,
        offer: Callable[[PhoneLeg], Awaitable[bytes]],
        on_answered: Callable[[PhoneLeg], Awaitable[None]],
        on_gone: Callable[[PhoneLeg, str], None],
    ) -> PhoneLeg | None:
        """Ring a supervisor's registered phone for a call (None: no phone, or no SIP caller)."""
        return self._ring_aside(self.supervisor_legs, call_id, code, offer, on_answered, on_gone)

    def ring_consulted(
        self,
        call_id: str,
        code: str,
        offer: Callable[[PhoneLeg], Awaitable[bytes]],
        on_answered: Callable[[PhoneLeg], Awaitable[None]],
        on_gone: Callable[[PhoneLeg, str], None],
    ) -> PhoneLeg | None:
        """Ring a consulted colleague's registered phone (None: no phone, or no SIP caller)."""
        return self._ring_aside(self.consult_legs, call_id, code, offer, on_answered, on_gone)

    def _ring_aside(
        self,
        book: dict[str, PhoneLeg],
        call_id: str,
        code: str,
        offer: Callable[[PhoneLeg], Awaitable[bytes]],
        on_answered: Callable[[PhoneLeg], Awaitable[None]],
        on_gone: Callable[[PhoneLeg, str], None],
    ) -> PhoneLeg | None:
        binding = self.registrar.phone_of(code)
        caller = self.trunk.call_of(call_id)
        if binding is None or caller is None or call_id in book:
            return None
        leg = PhoneLeg(call_id, code, caller, binding, f"vcc-{new_tag()}{new_tag()}", new_tag(), new_branch(),
                       offer=offer, on_answered=on_answered, on_gone=on_gone)  # fmt: skip
        book[call_id] = leg
        self._spawn(self._ring(leg))
        return leg

    def adopt_consulted(self, call_id: str) -> PhoneLeg | None:
        """The consultation completed: the colleague's phone becomes the call's phone, the serving
        agent's phone is hung up."""
        leg = self.consult_legs.pop(call_id, None)
        if leg is None:
            return None
        old = self.legs.get(call_id)
        if old is not None:
            self._hang_up(old)
        leg.offer, leg.on_answered, leg.on_gone = None, None, None
        self.legs[call_id] = leg
        return leg

    def adopt(self, call_id: str) -> PhoneLeg | None:
        """A supervisor took the call over: their phone's leg becomes the call's phone (hold, the
        phone's BYE and the call's end act on it as on an agent's)."""
        leg = self.supervisor_legs.pop(call_id, None)
        if leg is None:
            return None
        leg.offer, leg.on_answered, leg.on_gone = None, None, None
        self.legs[call_id] = leg
        return leg

    def hang_up_supervisor(self, call_id: str) -> None:
        leg = self.supervisor_legs.get(call_id)
        if leg is not None:
            self._hang_up(leg)

    async def _ring(self, leg: PhoneLeg) -> None:
        caller = leg.caller
        try:
            if leg.offer is not None:
                offered = await leg.offer(leg)
            else:
                offered = await self.trunk.media.offer_again(
                    caller.sip_call_id, caller.remote_tag, caller.invite.body, to_tag=leg.local_tag
                )
        except MediaError as exc:
            log.warning("call %s: no media for agent %s's phone: %s", leg.call_id, leg.code, exc)
            self._unreachable(leg, "media")
            return
        if leg.state != "calling":
            return  # withdrawn meanwhile
        host, port = self.trunk.endpoint.host, self.trunk.endpoint.port
        inv = Message(
            method="INVITE",
            uri=leg.binding.contact,
            headers=[
                ("via", f"SIP/2.0/UDP {host}:{port};branch={leg.branch};rport"),
                ("max-forwards", "70"),
                ("from", f"<sip:{self.trunk.service_number}@{host}:{port}>;tag={leg.local_tag}"),
                ("to", f"<sip:{leg.code}@{host}:{port}>"),
                ("call-id", leg.sip_call_id),
                ("cseq", "1 INVITE"),
                ("contact", f"<sip:{self.trunk.service_number}@{host}:{port}>"),
                ("content-type", "application/sdp"),
                ("x-vcc-call-id", leg.call_id),
            ],
            body=offered,
        )
        if leg.desk_answered:
            # Answered on the desktop: the phone is asked to answer by itself (RFC 7462's
            # auto-answer alert, and the Call-Info parameter most desk phones read).
            inv.headers += [
                ("call-info", f"<sip:{host}:{port}>;answer-after=0"),
                ("alert-info", "<urn:alert:service:auto-answer>"),
            ]
        leg.invite = inv
        data = inv.encode()
        self._by_branch.put(leg.branch, leg)
        self.rang += 1
        # Timer A until the phone answers anything; Timer B (64*T1): the phone is unreachable.
        leg.retransmit = Retransmit(lambda: self.trunk.endpoint.send(data, leg.dest),
                                    lambda: self._unreachable(leg, "no-response"))  # fmt: skip

    def party_tag(self, call_id: str) -> str | None:
        """rtpengine's tag of the agent's phone on this call, while it is connected."""
        leg = self.legs.get(call_id)
        return leg.local_tag if leg is not None and leg.state == "answered" else None

    # Responses and requests from phones (the trunk hands over what is ours) -------------------

    def response(self, msg: Message) -> bool:
        try:
            branch = msg.top_via.branch
        except SipParseError:
            return False
        leg = self._by_branch.get(branch)
        if leg is None:
            return False
        method = msg.cseq[1]
        if method != "INVITE":
            # The answer to our CANCEL or BYE: it is not re-sent any more.
            done = leg.cancel_rt if method == "CANCEL" else leg.bye_rt
            if done is not None and msg.status >= 200:
                done.stop()
            return True
        if msg.status < 200:
            if leg.retransmit is not None:
                leg.retransmit.stop()
                leg.retransmit = None
            if leg.state == "calling":
                leg.state = "ringing"
            return True
        if leg.retransmit is not None:
            leg.retransmit.stop()
            leg.retransmit = None
        if msg.status >= 300:
            self._ack_refusal(leg, msg)
            if leg.state in ("calling", "ringing"):
                self._unreachable(leg, f"phone-{msg.status}")
            return True
        self._answered(leg, msg)
        return True

    def _ack_refusal(self, leg: PhoneLeg, msg: Message) -> None:
        # The ACK of a non-2xx shares the INVITE's branch and goes where the INVITE went (§17.1.1.3).
        assert leg.invite is not None
        ack = Message(method="ACK", uri=leg.invite.uri, headers=[
            ("via", leg.invite.need("via")), ("max-forwards", "70"), ("from", leg.invite.need("from")),
            ("to", msg.need("to")), ("call-id", leg.sip_call_id), ("cseq", "1 ACK"),
        ])  # fmt: skip
        self.trunk.endpoint.send(ack.encode(), leg.dest)

    def _answered(self, leg: PhoneLeg, msg: Message) -> None:
        to = NameAddr.parse(msg.need("to"))
        contact = msg.get("contact")
        first = not leg.remote_tag
        leg.remote_tag = to.tag
        leg.remote_target = NameAddr.parse(contact).uri if contact else leg.binding.contact
        self._by_dialog[(leg.sip_call_id, leg.remote_tag)] = leg
        assert leg.invite is not None
        ack = Message(method="ACK", uri=leg.remote_target, headers=[
            ("via", f"SIP/2.0/UDP {self._here};branch={new_branch()}"),
            ("max-forwards", "70"), ("from", leg.invite.need("from")), ("to", msg.need("to")),
            ("call-id", leg.sip_call_id), ("cseq", "1 ACK"),
        ])  # fmt: skip
        leg.ack = ack.encode()
        self.trunk.endpoint.send(leg.ack, self._target(leg))
        if not first:
            return  # a retransmitted 200: ACKed again, nothing else
        if leg.state not in ("calling", "ringing"):
            self._bye(leg)  # answered after we gave up on it
            return
        leg.state = "answered"
        leg.remote_sdp = msg.body
        self._spawn(self._connect(leg, msg.body))

    async def _connect(self, leg: PhoneLeg, sdp: bytes) -> None:
        caller = leg.caller
        if leg.on_answered is not None:
            try:
                await leg.on_answered(leg)
            except MediaError as exc:
                log.warning("call %s: %s's phone answered, media not connected: %s",
                            leg.call_id, leg.code, exc)  # fmt: skip
                self._bye(leg)
                self._unreachable(leg, "media")
                return
            if leg.desk_answered:
                self.desk_voice += 1
            return
        try:
            await self.trunk.media.answer_from(caller.sip_call_id, caller.remote_tag, leg.local_tag, sdp)
        except MediaError as exc:
            log.warning("call %s: phone answered, media not connected: %s", leg.call_id, exc)
            self._bye(leg)
            self._unreachable(leg, "media")
            return
        if leg.desk_answered:
            self.desk_voice += 1  # the call control had the answer from the desktop already
            return
        self.answered += 1
        self._do(lambda now: self.trunk.rt.sb.answer(now, leg.code, leg.call_id))

    def bye(self, msg: Message, peer: Address) -> bool:
        """A BYE from a phone: the agent hung up. False when it is not one of ours."""
        frm = NameAddr.parse(msg.need("from"))
        leg = self._by_dialog.get((msg.call_id, frm.tag))
        if leg is None:
            return False
        self.trunk.endpoint.send(response(msg, 200).encode(), peer)
        if leg.state == "answered":
            leg.state = "ended"
            self._by_dialog.pop((leg.sip_call_id, leg.remote_tag), None)
            self._forget(leg)
            if leg.on_gone is not None:
                leg.on_gone(leg, "hung-up")
            else:
                self._do(lambda now: self.trunk.rt.sb.agent_hang_up(now, leg.code, leg.call_id))
        return True

    # Ending the phone's leg ---------------------------------------------------------------------

    def _hang_up(self, leg: PhoneLeg) -> None:
        if leg.state == "answered":
            self._bye(leg)
        elif leg.state in ("calling", "ringing"):
            self._cancel(leg)
        leg.state = "ended"
        self._forget(leg)

    def _cancel(self, leg: PhoneLeg) -> None:
        if leg.retransmit is not None:
            leg.retransmit.stop()
            leg.retransmit = None
        leg.state = "cancelled"
        if leg.invite is None:
            return  # not sent yet: nothing to cancel
        cancel = Message(method="CANCEL", uri=leg.invite.uri, headers=[
            ("via", leg.invite.need("via")), ("max-forwards", "70"), ("from", leg.invite.need("from")),
            ("to", leg.invite.need("to")), ("call-id", leg.sip_call_id), ("cseq", "1 CANCEL"),
        ])  # fmt: skip
        data = cancel.encode()
        # Re-sent like any non-INVITE request until the phone answers it (its 487 follows).
        leg.cancel_rt = Retransmit(lambda: self.trunk.endpoint.send(data, leg.dest))

    def _bye(self, leg: PhoneLeg) -> None:
        assert leg.invite is not None
        leg.cseq += 1
        branch = new_branch()
        bye = Message(method="BYE", uri=leg.remote_target, headers=[
            ("via", f"SIP/2.0/UDP {self._here};branch={branch}"),
            ("max-forwards", "70"), ("from", leg.invite.need("from")),
            ("to", f"<sip:{leg.code}@{self._here}>;tag={leg.remote_tag}"),
            ("call-id", leg.sip_call_id), ("cseq", f"{leg.cseq} BYE"), ("x-vcc-call-id", leg.call_id),
        ])  # fmt: skip
        data = bye.encode()
        self._by_branch.put(branch, leg)
        self._by_dialog.pop((leg.sip_call_id, leg.remote_tag), None)
        leg.bye_rt = Retransmit(lambda: self.trunk.endpoint.send(data, self._target(leg)))

    @property
    def _here(self) -> str:
        return f"{self.trunk.endpoint.host}:{self.trunk.endpoint.port}"

    def _target(self, leg: PhoneLeg) -> Address:
        try:
            host, port = uri_host_port(leg.remote_target)
        except SipParseError:
            return leg.dest
        return (host, port) if host not in ("", "0.0.0.0") else leg.dest

    def _unreachable(self, leg: PhoneLeg, why: str) -> None:
        if leg.state not in ("calling", "ringing", "answered"):
            return
        leg.state = "ended"
        self._forget(leg)
        if leg.desk_answered and why != "hung-up":
            # Answered on the desktop already: the call goes on without voice; the agent stays.
            self.desk_no_voice += 1
            log.warning("call %s: agent %s's phone did not take the call answered on the desktop (%s)",
                        leg.call_id, leg.code, why)  # fmt: skip
            return
        self.unreachable += 1
        log.info("call %s: agent %s's phone unreachable (%s)", leg.call_id, leg.code, why)
        if leg.on_gone is not None:
            leg.on_gone(leg, why)
            return
        self._do(lambda now: self.trunk.rt.sb.phone_unreachable(now, leg.code, leg.call_id))

    def _forget(self, leg: PhoneLeg) -> None:
        if self.legs.get(leg.call_id) is leg:
            del self.legs[leg.call_id]
        if self.supervisor_legs.get(leg.call_id) is leg:
            del self.supervisor_legs[leg.call_id]
        if self.consult_legs.get(leg.call_id) is leg:
            del self.consult_legs[leg.call_id]

    def _do(self, op: object) -> None:
        try:
            self.trunk.rt.do(op)  # type: ignore[arg-type]
        except VccError as exc:
            log.debug("phone action refused: %s", exc)

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for leg in [*self.legs.values(), *self.supervisor_legs.values(), *self.consult_legs.values()]:
            self._hang_up(leg)
        for leg in list(self.legs.values()) + list(self._by_dialog.values()):
            for rt in (leg.retransmit, leg.cancel_rt, leg.bye_rt):
                if rt is not None:
                    rt.stop()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
