"""Voice across cities: a SIP tie trunk between two sites' media engines.

When the call control offers one of our SIP callers to another city (an overflow, a pooled route,
a blind transfer: the OfferRemote effect; a consultation's leg is dialled by sip/consults.py),
the origin dials the target's SIP trunk (`sip:tie@<target>`, X-VCC-Call-ID) with its rtpengine's
side of the caller's media, as it does for an agent's phone; the target answers from its own
rtpengine. The origin keeps the caller's trunk channel and its dialog; the
leg rides on the tie-trunk channel the call control took for the remote leg. At the target the tie
leg stands in for the caller: the agent's phone there is rung with the tie's media (an offer
that came before the tie leg waits for it). The call's life stays on the gRPC peer path; the SIP
leg only carries the voice and ends with the remote leg (LegToTarget end) or the call.

A tie INVITE is taken only from another site's SIP address in the province config (no SIP
authentication between sites yet: loopback and a private network only, docs/SECURITY.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from site_node.callcontrol.domain import LegToTarget, OfferRemote, ToAgent
from site_node.media.ng import MediaError
from site_node.sip.dialog import SipCall
from site_node.sip.message import Message, NameAddr, SipParseError, new_branch, new_tag, response
from site_node.sip.timers import Retransmit
from site_node.sip.transport import Address
from vcc.shutdown import finish

if TYPE_CHECKING:
    from site_node.sip.consults import ConsultVoice
    from site_node.sip.trunk import SipTrunk

log = logging.getLogger(__name__)

TIE_USER = "tie"


@dataclass(eq=False)
class TieOut:
    """Origin side: our UAC leg to the target's media engine."""

    offer_id: str
    call_id: str
    caller: SipCall
    dest: Address
    sip_call_id: str
    local_tag: str
    branch: str
    invite: Message | None = None
    # calling -> answered ; ended
    state: str = "calling"
    remote_tag: str = ""
    cseq: int = 1
    retransmit: Retransmit | None = None
    bye_rt: Retransmit | None = None
    # The target's SDP answer, kept for re-pairing the leg's media.
    remote_sdp: bytes = b""
    # A consultation's leg (site_node/sip/consults.py): its own offer (the agent's side, through
    # the call's bridge) and what to do once the target answered.
    offer: Callable[[], Awaitable[bytes]] | None = None
    on_answered: Callable[[TieOut], Awaitable[None]] | None = None


@dataclass
class TieStats:
    dialled: int = 0
    answered: int = 0
    failed: int = 0
    taken: int = 0
    refused: int = 0


class TieTrunks:
    def __init__(self, trunk: SipTrunk, peers: Mapping[str, str]) -> None:
        self.trunk = trunk
        # The other sites' SIP addresses (host:port) by site id (a city without SIP is not here).
        self._peers = dict(peers)
        self.stats = TieStats()
        self.out: dict[str, TieOut] = {}  # by offer id
        self._out_by_branch: dict[str, TieOut] = {}
        # Target side: the tie legs that stand in for callers, by vcc call id.
        self.legs_in: dict[str, SipCall] = {}
        self._in_by_dialog: dict[tuple[str, str], SipCall] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Told when a tie leg's media is up here (the agent's phone may ring now).
        self.on_media: Callable[[str], None] = lambda call_id: None
        # The voice of consultations (wired by the composition root when agents have phones).
        self.consults: ConsultVoice | None = None

    # Origin: the call control's effects -----------------------------------------------------------

    def offer_remote(self, offer: OfferRemote) -> None:
        if offer.purpose == "transfer-consult":
            # Agent to agent, the caller held: the consultation's own voice (its bridge) dials.
            if self.consults is not None:
                self.consults.offer_remote(offer)
            return
        if self.trunk.call_of(offer.call_id) is None or offer.target_site_id not in self._peers:
            return  # not a SIP caller here, or a city without SIP: no voice to carry
        for old in [t for t in self.out.values() if t.call_id == offer.call_id]:
            self._end_out(old)  # the call goes elsewhere now
        self.dial(offer)

    def dial(
        self,
        offer: OfferRemote,
        sdp: Callable[[], Awaitable[bytes]] | None = None,
        on_answered: Callable[[TieOut], Awaitable[None]] | None = None,
    ) -> TieOut | None:
        """A tie leg to the offer's target for the offer's call (None: no SIP there or here)."""
        caller = self.trunk.call_of(offer.call_id)
        target = self._peers.get(offer.target_site_id)
        if caller is None or target is None:
            return None
        host, port = target.rsplit(":", 1)
        sip_call_id = f"vcc-tie-{new_tag()}{new_tag()}"
        tie = TieOut(
            offer.offer_id, offer.call_id, caller, (host, int(port)), sip_call_id, new_tag(), new_branch(),
            offer=sdp, on_answered=on_answered,
        )  # fmt: skip
        self.out[offer.offer_id] = tie
        self._spawn(self._dial(tie))
        return tie

    def to_target(self, message: LegToTarget) -> None:
        tie = self.out.get(message.offer_id)
        if tie is not None and message.kind == "end":
            self._end_out(tie)

    def call_ended(self, call_id: str) -> None:
        for tie in [t for t in self.out.values() if t.call_id == call_id]:
            self._end_out(tie)
        if self.consults is not None:
            self.consults.call_ended(call_id)

    async def _dial(self, tie: TieOut) -> None:
        caller = tie.caller
        try:
            if tie.offer is not None:
                sdp = await tie.offer()
            else:
                sdp = await self.trunk.media.offer_again(
                    caller.sip_call_id, caller.remote_tag, caller.invite.body, to_tag=tie.local_tag
                )
        except MediaError as exc:
            self.stats.failed += 1
            log.warning("call %s: no media for the tie to %s: %s", tie.call_id, tie.dest, exc)
            self._forget(tie)
            return
        if tie.state != "calling":
            return
        here = self._here
        tie.invite = Message(method="INVITE", uri=f"sip:{TIE_USER}@{tie.dest[0]}:{tie.dest[1]}", headers=[
            ("via", f"SIP/2.0/UDP {here};branch={tie.branch};rport"), ("max-forwards", "70"),
            ("from", f"<sip:{self.trunk.service_number}@{here}>;tag={tie.local_tag}"),
            ("to", f"<sip:{TIE_USER}@{tie.dest[0]}:{tie.dest[1]}>"), ("call-id", tie.sip_call_id),
            ("cseq", "1 INVITE"), ("contact", f"<sip:{self.trunk.service_number}@{here}>"),
            ("content-type", "application/sdp"), ("x-vcc-call-id", tie.call_id),
        ], body=sdp)  # fmt: skip
        data = tie.invite.encode()
        self._out_by_branch[tie.branch] = tie
        self.stats.dialled += 1
        tie.retransmit = Retransmit(lambda: self.trunk.endpoint.send(data, tie.dest),
                                    lambda: self._failed(tie, "no-response"))  # fmt: skip

    def response(self, msg: Message) -> bool:
        """A response to one of our tie requests (False: not ours)."""
        try:
            tie = self._out_by_branch.get(msg.top_via.branch)
        except SipParseError:
            return False
        if tie is None:
            return False
        method = msg.cseq[1]
        if method != "INVITE":
            if tie.bye_rt is not None and msg.status >= 200:
                tie.bye_rt.stop()
                self._out_by_branch.pop(msg.top_via.branch, None)
            return True
        if tie.retransmit is not None:
            tie.retransmit.stop()
            tie.retransmit = None
        if msg.status < 200:
            return True
        assert tie.invite is not None
        to = msg.need("to")
        if msg.status >= 300:
            # The ACK of a refusal shares the INVITE's branch (§17.1.1.3).
            self._send_ack(tie, to, tie.invite.need("via"))
            self._failed(tie, f"tie-{msg.status}")
            return True
        first = not tie.remote_tag
        tie.remote_tag = NameAddr.parse(to).tag
        self._send_ack(tie, to, f"SIP/2.0/UDP {self._here};branch={new_branch()}")
        if first and tie.state == "calling":
            tie.state = "answered"
            tie.remote_sdp = msg.body
            self._spawn(self._connect(tie, msg.body))
        elif first:
            self._bye(tie)  # ended while it was being answered
        return True

    async def _connect(self, tie: TieOut, sdp: bytes) -> None:
        caller = tie.caller
        try:
            if tie.on_answered is not None:
                await tie.on_answered(tie)
            else:
                await self.trunk.media.answer_from(caller.sip_call_id, caller.remote_tag, tie.local_tag, sdp)
        except MediaError as exc:
            log.warning("call %s: tie answered, media not connected: %s", tie.call_id, exc)
            self._end_out(tie)
            self.stats.failed += 1
            return
        self.stats.answered += 1
        log.info("call %s: voice carried over the tie trunk to %s:%s", tie.call_id, *tie.dest)

    def _send_ack(self, tie: TieOut, to: str, via: str) -> None:
        assert tie.invite is not None
        ack = Message(method="ACK", uri=tie.invite.uri, headers=[
            ("via", via), ("max-forwards", "70"), ("from", tie.invite.need("from")), ("to", to),
            ("call-id", tie.sip_call_id), ("cseq", "1 ACK"),
        ])  # fmt: skip
        self.trunk.endpoint.send(ack.encode(), tie.dest)

    def _failed(self, tie: TieOut, why: str) -> None:
        if tie.state == "calling":
            self.stats.failed += 1
            log.info("call %s: tie trunk to %s:%s not set up (%s)", tie.call_id, *tie.dest, why)
        tie.state = "ended"
        self._forget(tie)

    def _end_out(self, tie: TieOut) -> None:
        if tie.state == "answered":
            self._bye(tie)
        elif tie.state == "calling":
            if tie.retransmit is not None:
                tie.retransmit.stop()
                tie.retransmit = None
            if tie.invite is not None:
                inv = tie.invite
                cancel = Message(method="CANCEL", uri=inv.uri, headers=[
                    ("via", inv.need("via")), ("max-forwards", "70"), ("from", inv.need("from")),
                    ("to", inv.need("to")), ("call-id", tie.sip_call_id), ("cseq", "1 CANCEL"),
                ])  # fmt: skip
                self.trunk.endpoint.send(cancel.encode(), tie.dest)
        tie.state = "ended"
        self._forget(tie)

    def _bye(self, tie: TieOut) -> None:
        assert tie.invite is not None
        tie.cseq += 1
        branch = new_branch()
        bye = Message(method="BYE", uri=tie.invite.uri, headers=[
            ("via", f"SIP/2.0/UDP {self._here};branch={branch}"), ("max-forwards", "70"),
            ("from", tie.invite.need("from")), ("to", f"{tie.invite.need('to')};tag={tie.remote_tag}"),
            ("call-id", tie.sip_call_id), ("cseq", f"{tie.cseq} BYE"), ("x-vcc-call-id", tie.call_id),
        ])  # fmt: skip
        data = bye.encode()
        self._out_by_branch[branch] = tie

        def gave_up() -> None:
            self._out_by_branch.pop(branch, None)

        tie.bye_rt = Retransmit(lambda: self.trunk.endpoint.send(data, tie.dest), gave_up)

    def _forget(self, tie: TieOut) -> None:
        if self.out.get(tie.offer_id) is tie:
            del self.out[tie.offer_id]
        if tie.bye_rt is None:
            self._out_by_branch.pop(tie.branch, None)

    # Target: the other city's tie INVITE -----------------------------------------------------------

    def is_tie(self, msg: Message) -> bool:
        return msg.method == "INVITE" and msg.uri.lower().startswith(f"sip:{TIE_USER}@")

    def invite(self, sc: SipCall, peer: Address) -> None:
        """A new tie INVITE (the trunk absorbed retransmissions): answer it from our engine."""
        call_id = (sc.invite.get("x-vcc-call-id") or "").strip()
        if f"{peer[0]}:{peer[1]}" not in self._peers.values():
            self._refuse(sc, 403, "Not a site of this province")
            return
        if not call_id or not sc.invite.body:
            self._refuse(sc, 400, "A tie leg needs X-VCC-Call-ID and an SDP offer")
            return
        if not self.trunk.media.up:
            self._refuse(sc, 503, "Media engine unavailable")
            return
        sc.call_id = call_id
        self._spawn(self._answer(sc))

    async def _answer(self, sc: SipCall) -> None:
        try:
            sdp = await self.trunk.hear.open(sc)
        except MediaError as exc:
            log.warning("call %s: tie leg without media: %s", sc.call_id, exc)
            self._refuse(sc, 503, "Media not available")
            return
        if sc.final_sent:
            await self.trunk.hear.close(sc)  # cancelled by the origin meanwhile
            return
        old = self.legs_in.get(sc.call_id)
        if old is not None:
            self._drop_in(old)  # the origin dialled again (a new offer of the same call)
        self.legs_in[sc.call_id] = sc
        self._in_by_dialog[(sc.sip_call_id, sc.remote_tag)] = sc
        self.stats.taken += 1
        sc.final_sent, sc.final_status, sc.state, sc.local_sdp = True, 200, "answered", sdp
        extra = [("contact", f"<sip:{TIE_USER}@{self._here}>"), ("content-type", "application/sdp"),
                 ("x-vcc-call-id", sc.call_id)]  # fmt: skip
        data = response(sc.invite, 200, to_tag=sc.local_tag, extra=extra, body=sdp).encode()
        sc.last_response = data
        sc.retransmit = Retransmit(lambda: self.trunk.endpoint.send(data, sc.peer))
        self.on_media(sc.call_id)

    def _refuse(self, sc: SipCall, status: int, reason: str) -> None:
        self.stats.refused += 1
        sc.final_sent, sc.final_status = True, status
        data = response(sc.invite, status, to_tag=sc.local_tag, reason=reason).encode()
        sc.last_response = data
        sc.retransmit = Retransmit(lambda: self.trunk.endpoint.send(data, sc.peer))

    def ack(self, msg: Message) -> bool:
        frm = NameAddr.parse(msg.need("from"))
        sc = self._in_by_dialog.get((msg.call_id, frm.tag))
        if sc is None:
            return False
        sc.stop_retransmit()
        return True

    def bye(self, msg: Message, peer: Address) -> bool:
        """The origin ended the tie leg (False: not a tie leg of ours)."""
        frm = NameAddr.parse(msg.need("from"))
        sc = self._in_by_dialog.get((msg.call_id, frm.tag))
        if sc is None:
            return False
        self.trunk.endpoint.send(response(msg, 200).encode(), peer)
        self._drop_in(sc)
        return True

    def _drop_in(self, sc: SipCall) -> None:
        sc.stop_retransmit()
        self._in_by_dialog.pop((sc.sip_call_id, sc.remote_tag), None)
        if self.legs_in.get(sc.call_id) is sc:
            del self.legs_in[sc.call_id]
        self._spawn(self.trunk.hear.close(sc))

    def to_agent(self, fx: ToAgent) -> None:
        """At the target: the guest call is over here (its origin may be gone and send no BYE)."""
        if fx.kind in ("ended", "withdrawn") and fx.call_id not in self.trunk.rt.sb.calls:
            sc = self.legs_in.get(fx.call_id)
            if sc is not None:
                self._drop_in(sc)

    def leg_in(self, call_id: str) -> SipCall | None:
        sc = self.legs_in.get(call_id)
        return sc if sc is not None and sc.media_open else None

    # ---------------------------------------------------------------------------------------------

    @property
    def _here(self) -> str:
        return f"{self.trunk.endpoint.host}:{self.trunk.endpoint.port}"

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for tie in list(self.out.values()):
            self._end_out(tie)
        for sc in list(self.legs_in.values()):
            self._drop_in(sc)
        for task in list(self._tasks):
            with contextlib.suppress(TimeoutError):
                await finish(task, 2.0)
