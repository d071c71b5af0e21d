"""The SIP trunk of a site: a user agent server (RFC 3261) on the same call control as the gRPC
trunk.

INVITE to the service number -> `offer()` (the call control takes a trunk channel, or blocks the
call: 486/503); the caller's SDP goes through rtpengine, never through Python; CANCEL and BYE ->
`caller_hang_up()`; digits that rtpengine reports -> `caller_digits()`. The caller's progress
(the same ToCaller updates the gRPC caller reads) becomes media commands: the menu prompt in the
IVR, the queue's announcement and music while waiting, silence once an agent answered, and a
BYE when the site ends the call. Every answer to an INVITE carries X-VCC-Call-ID.

Retransmissions are absorbed by the server transactions (same branch: the same answer again),
2xx and non-2xx finals are re-sent until the ACK comes (§13.3.1.4, §17.2.1). What cannot be
parsed is answered 400 when a response can be formed, else dropped; oversized datagrams get 513.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from site_node.callcontrol.limits import ANI_CHARS
from site_node.media.control import MediaControl
from site_node.media.ng import MediaError
from site_node.runtime import SiteRuntime
from site_node.sip.caller_media import CallerMedia
from site_node.sip.dialog import SipCall
from site_node.sip.message import (
    REASONS,
    Message,
    NameAddr,
    SipParseError,
    new_tag,
    parse,
    response,
    session_interval,
    uri_user,
)
from site_node.sip.phones import AgentPhones
from site_node.sip.recorder import CallRecorder
from site_node.sip.registrar import Registrar
from site_node.sip.ties import TieTrunks
from site_node.sip.timers import Expiring, Retransmit
from site_node.sip.transport import Address, UdpEndpoint
from vcc.config import SipConfig
from vcc.errors import Unavailable, VccError
from vcc.v1 import common_pb2, trunk_pb2

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, UPDATE"
# How long the call's end may wait for its records to be durable before the caller is told.
DURABLE_WAIT_S = 5.0


@dataclass(slots=True)
class TrunkStats:
    invites: int = 0
    answered: int = 0
    refused: dict[int, int] | None = None
    parse_errors: int = 0
    dropped: int = 0
    retransmissions_absorbed: int = 0
    media_failures: int = 0
    # New calls refused 503 while the media engine's control queue was long (overload).
    media_busy: int = 0

    def refuse(self, status: int) -> None:
        if self.refused is None:
            self.refused = {}
        self.refused[status] = self.refused.get(status, 0) + 1


class SipTrunk:
    def __init__(
        self,
        runtime: SiteRuntime,
        config: SipConfig,
        service_number: str,
        media: MediaControl,
        prompts: dict[str, Path],
        registrar: Registrar | None = None,
    ) -> None:
        self.rt = runtime
        self.config = config
        self.service_number = service_number
        self.media = media
        self.hear = CallerMedia(media, prompts)
        self.hear.on_heard = self._prompts_heard
        self.registrar = registrar
        # Agents' phones (wired by the composition root when agents have phones).
        self.phones: AgentPhones | None = None
        # Answered calls recorded (wired by the composition root).
        self.recorder: CallRecorder | None = None
        # Voice to and from other cities (wired by the composition root when there are peers).
        self.ties: TieTrunks | None = None
        # Calls whose parties are on a bridge: a hold plays music to the caller but must not block
        # the agent, who talks to the consulted agent (site_node/sip/bridging.py).
        self.bridged: Callable[[str], bool] = lambda call_id: False
        # Told when a call is over, so its bridge (site_node/sip/bridging.py) stops with it.
        self.bridge_ended: Callable[[str], None] = lambda call_id: None
        self.endpoint = UdpEndpoint(self._datagram)
        self.stats = TrunkStats()
        # INVITE server transactions by top Via branch (and sent-by): retransmissions and CANCEL.
        self._invites: Expiring[tuple[str, str], SipCall] = Expiring()
        # Answers to non-INVITE requests, re-sent when the request comes again (§17.2.2).
        self._answers: Expiring[tuple[str, str, str], bytes] = Expiring()
        self._dialogs: dict[tuple[str, str, str], SipCall] = {}
        self._by_key: dict[str, SipCall] = {}
        self._by_sip_id: dict[str, SipCall] = {}
        self._byes: dict[str, Retransmit] = {}
        self._closing = False

    # Life cycle ------------------------------------------------------------------------------

    async def start(self) -> str:
        host, port = self.config.listen.rsplit(":", 1)
        await self.endpoint.open(host, int(port))
        self.media.engine.on_lost(self._media_lost)
        log.info("SIP trunk on %s (service number %s)", self.address, self.service_number)
        return self.address

    @property
    def address(self) -> str:
        return f"{self.endpoint.host}:{self.endpoint.port}"

    @property
    def live_calls(self) -> int:
        return len(self._by_key)

    async def close(self) -> None:
        """After the runtime ended every call: let the BYEs go out, then close the socket."""
        self._closing = True
        tasks = [sc.task for sc in self._by_key.values() if sc.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        for sc in list(self._by_key.values()):
            if sc.task is not None:
                sc.task.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self.hear.stop()
        for sc in self._dialogs.values():
            sc.stop_retransmit()
        for r in self._byes.values():
            r.stop()
        self.endpoint.close()

    # Datagrams -------------------------------------------------------------------------------

    def _datagram(self, data: bytes, peer: Address) -> None:
        if not data.strip(b"\r\n"):
            return  # a keep-alive (RFC 5626 §4.4.1)
        too_big = len(data) > self.config.max_message_bytes
        try:
            msg = parse(data)
        except SipParseError as exc:
            self.stats.parse_errors += 1
            self._answer_unparsable(data, peer, 513 if too_big else 400, str(exc))
            return
        if not msg.is_request:
            self._response_in(msg)
            return
        try:
            msg.top_via  # noqa: B018 - validates the Via we answer to
            msg.cseq  # noqa: B018
            msg.call_id  # noqa: B018
            NameAddr.parse(msg.need("from"))
            NameAddr.parse(msg.need("to"))
        except SipParseError as exc:
            self.stats.parse_errors += 1
            self._answer_unparsable(data, peer, 513 if too_big else 400, str(exc))
            return
        if msg.method == "ACK":
            self._ack(msg)
            return
        if too_big:
            self._send(response(msg, 513), peer)
            return
        if msg.cseq[1] != msg.method:
            self._final(msg, peer, 400, reason="CSeq method does not match")
            return
        max_forwards = msg.get("max-forwards")
        if max_forwards is not None and max_forwards.strip() == "0" and msg.method != "OPTIONS":
            self._final(msg, peer, 483)
            return
        match msg.method:
            case "INVITE":
                self._invite(msg, peer)
            case "CANCEL":
                self._cancel(msg, peer)
            case "BYE":
                self._bye(msg, peer)
            case "REGISTER" if self.registrar is not None:
                status, extra, reason = self.registrar.register(msg, peer)
                self._final(msg, peer, status, reason=reason, extra=extra)
            case "UPDATE":
                self._update(msg, peer)
            case "OPTIONS":
                self._final(msg, peer, 200, extra=[("allow", ALLOW), ("accept", "application/sdp")])
            case _:
                self._final(msg, peer, 405, extra=[("allow", ALLOW)])

    def _answer_unparsable(self, data: bytes, peer: Address, status: int, why: str) -> None:
        """A 400/513 needs the headers a response copies; without them the datagram is dropped."""
        try:
            head = data.split(b"\r\n\r\n", 1)[0][: self.config.max_message_bytes]
            msg = parse(head + b"\r\n\r\n")
            if not msg.is_request or msg.method == "ACK":
                raise SipParseError("not an answerable request")
            msg.top_via  # noqa: B018
            msg.call_id  # noqa: B018
            msg.cseq  # noqa: B018
            msg.need("from")
            msg.need("to")
        except SipParseError:
            self.stats.dropped += 1
            log.debug("dropped a datagram from %s:%s: %s", peer[0], peer[1], why)
            return
        self.stats.refuse(status)
        self._send(response(msg, status, reason=_reason(status, why)), peer)

    def _send(self, msg: Message, peer: Address) -> bytes:
        data = msg.encode()
        self.endpoint.send(data, peer)
        return data

    def _final(
        self, msg: Message, peer: Address, status: int, *, reason: str = "",
        extra: list[tuple[str, str]] | None = None,
    ) -> None:  # fmt: skip
        """The final answer to a non-INVITE request, kept for its retransmissions."""
        data = self._send(response(msg, status, to_tag=new_tag(), reason=reason, extra=extra), peer)
        if status >= 300:
            self.stats.refuse(status)
        self._answers.put(_tx_key(msg), data)

    # INVITE ----------------------------------------------------------------------------------

    def _invite(self, msg: Message, peer: Address) -> None:
        via = msg.top_via
        tx = (via.branch or msg.need("via"), f"{via.host}:{via.port}")
        known = self._invites.get(tx)
        if known is not None:
            # The same INVITE again (its answer was lost or is slow): the same answer again.
            self.stats.retransmissions_absorbed += 1
            if known.last_response:
                self.endpoint.send(known.last_response, peer)
            return
        to = NameAddr.parse(msg.need("to"))
        if to.tag:
            self._reinvite(msg, peer, to.tag)
            return
        frm = NameAddr.parse(msg.need("from"))
        key = _call_key(msg.call_id, frm.tag)
        if key in self._by_key:
            # Same call, another branch: a fork of the same request reached us twice (§8.2.2.2).
            self._final(msg, peer, 482)
            return
        if self.ties is not None and self.ties.is_tie(msg):
            tie = SipCall(msg, peer, msg.call_id, frm.tag, new_tag())
            self._invites.put(tx, tie)
            self.ties.invite(tie, peer)
            return
        self.stats.invites += 1
        sc = SipCall(msg, peer, msg.call_id, frm.tag, new_tag())
        self._invites.put(tx, sc)
        dnis = uri_user(msg.uri)
        if dnis != self.service_number:
            self._refuse(sc, 404, reason="No such service number")
            return
        if self._closing or self.rt.closed:
            self._refuse(sc, 503, reason="Site stopping")
            return
        if not self.media.up:
            # Without its media engine the site cannot play a prompt or carry a voice.
            self._refuse(sc, 503, reason="Media engine unavailable")
            return
        if self.media.busy:
            # Overload at the door: the calls already up keep their media; the carrier can try
            # another city (not offered, so not counted blocked: the trunk was not full).
            self.stats.media_busy += 1
            self._refuse(sc, 503, reason="Media engine busy")
            return
        if not msg.body or "application/sdp" not in (msg.get("content-type") or "").lower():
            self._refuse(sc, 488, reason="An SDP offer is required")
            return
        session = msg.get("session-expires")
        if session is not None:
            try:
                sc.session_expires = session_interval(session)
            except SipParseError:
                self._refuse(sc, 400, reason="Bad Session-Expires")
                return
            if sc.session_expires < self.config.session_min_se_s:
                self._refuse(sc, 422, extra=[("min-se", str(self.config.session_min_se_s))])
                return
        ani = frm.user if frm.user and len(frm.user) <= 32 and set(frm.user) <= ANI_CHARS else "0"
        try:
            sc.call_id = self.rt.offer(
                sc.line, idempotency_key=key, ani=ani, dnis=dnis, trunk_group=self.config.trunk_group
            )
        except VccError as exc:
            self._refuse(sc, 503 if isinstance(exc, Unavailable) else 500, reason=exc.error_id)
            return
        self._by_key[key] = sc
        self._by_sip_id[sc.sip_call_id] = sc
        self._provisional(sc, 100)
        sc.task = asyncio.create_task(self._follow(sc), name=f"sip-call-{sc.call_id}")

    def _provisional(self, sc: SipCall, status: int) -> None:
        extra = [("x-vcc-call-id", sc.call_id)] if sc.call_id else []
        sc.last_response = self._send(response(sc.invite, status, extra=extra), sc.peer)

    def _refuse(
        self, sc: SipCall, status: int, reason: str = "", extra: list[tuple[str, str]] | None = None
    ) -> None:
        """A final non-2xx answer to the INVITE, re-sent until the caller's ACK (§17.2.1)."""
        self.stats.refuse(status)
        sc.final_sent = True
        sc.final_status = status
        extra = list(extra or [])
        if sc.call_id:
            extra.append(("x-vcc-call-id", sc.call_id))
        if status == 405:
            extra.append(("allow", ALLOW))
        data = response(sc.invite, status, to_tag=sc.local_tag, reason=reason, extra=extra).encode()
        sc.last_response = data
        sc.retransmit = Retransmit(lambda: self.endpoint.send(data, sc.peer))

    def _accept(self, sc: SipCall, sdp: bytes) -> None:
        """200 OK with rtpengine's SDP, re-sent until the ACK (§13.3.1.4)."""
        sc.final_sent = True
        sc.final_status = 200
        sc.state = "answered"
        sc.local_sdp = sdp
        extra = [("record-route", r) for r in sc.invite.all("record-route")]
        extra += [
            ("contact", f"<sip:{self.service_number}@{self.address}>"),
            ("allow", ALLOW),
            ("content-type", "application/sdp"),
            ("x-vcc-call-id", sc.call_id),
        ]
        extra += self._session_headers(sc, sc.invite)
        data = response(sc.invite, 200, to_tag=sc.local_tag, extra=extra, body=sdp).encode()
        sc.last_response = data
        self._dialogs[sc.dialog_key] = sc
        self.stats.answered += 1
        sc.retransmit = Retransmit(lambda: self.endpoint.send(data, sc.peer), lambda: self._no_ack(sc))

    def _no_ack(self, sc: SipCall) -> None:
        # The caller never confirmed our answer: the dialog ends (§13.3.1.4), as a hang-up.
        log.info("call %s: no ACK for 200 OK, ending it", sc.call_id)
        self._hang_up(sc, "sip-no-ack")

    def _reinvite(self, msg: Message, peer: Address, to_tag: str) -> None:
        frm = NameAddr.parse(msg.need("from"))
        sc = self._dialogs.get((msg.call_id, frm.tag, to_tag))
        if sc is None or sc.bye_received:
            self._final(msg, peer, 481)
            return
        # A session refresh: the session stays as it is (a changed offer is not renegotiated).
        extra = [("contact", f"<sip:{self.service_number}@{self.address}>"),
                 ("content-type", "application/sdp"), ("x-vcc-call-id", sc.call_id)]  # fmt: skip
        extra += self._refreshed(sc, msg)
        data = self._send(response(msg, 200, to_tag=sc.local_tag, extra=extra, body=sc.local_sdp), peer)
        self._answers.put(_tx_key(msg), data)

    def _update(self, msg: Message, peer: Address) -> None:
        """UPDATE in a dialog (RFC 3311), as used to refresh a session timer; no SDP change."""
        cached = self._answers.get(_tx_key(msg))
        if cached is not None:
            self.endpoint.send(cached, peer)
            return
        to = NameAddr.parse(msg.need("to"))
        frm = NameAddr.parse(msg.need("from"))
        sc = self._dialogs.get((msg.call_id, frm.tag, to.tag))
        if sc is None or sc.bye_received:
            self._final(msg, peer, 481)
            return
        extra = [("x-vcc-call-id", sc.call_id), *self._refreshed(sc, msg)]
        data = self._send(response(msg, 200, extra=extra), peer)
        self._answers.put(_tx_key(msg), data)

    # Session timers (RFC 4028): the caller refreshes; a session it lets lapse is hung up. ------

    def _session_headers(self, sc: SipCall, request: Message) -> list[tuple[str, str]]:
        if not sc.session_expires:
            return []
        self._arm_session(sc)
        headers = [("session-expires", f"{sc.session_expires};refresher=uac")]
        if "timer" in (request.get("supported") or "").lower():
            headers.append(("require", "timer"))
        return headers

    def _refreshed(self, sc: SipCall, msg: Message) -> list[tuple[str, str]]:
        asked = msg.get("session-expires")
        if asked is not None:
            with contextlib.suppress(SipParseError):
                sc.session_expires = max(session_interval(asked), self.config.session_min_se_s)
        return self._session_headers(sc, msg)

    def _arm_session(self, sc: SipCall) -> None:
        if sc.session_timer is not None:
            sc.session_timer.cancel()
        # The refresher refreshes at half the interval; we wait until shortly before its end.
        delay = sc.session_expires - min(32.0, sc.session_expires / 3)
        sc.session_timer = asyncio.get_running_loop().call_later(delay, self._session_expired, sc)

    def _session_expired(self, sc: SipCall) -> None:
        sc.session_timer = None
        log.info("call %s: session timer expired without a refresh", sc.call_id)
        self._hang_up(sc, "session-expired")

    def _ack(self, msg: Message) -> None:
        via = msg.top_via
        sc = self._invites.get((via.branch or msg.need("via"), f"{via.host}:{via.port}"))
        if sc is not None and sc.final_status >= 300:
            sc.stop_retransmit()  # the ACK of a refusal shares the INVITE's branch (§17.1.1.3)
            return
        to = NameAddr.parse(msg.need("to"))
        frm = NameAddr.parse(msg.need("from"))
        sc = self._dialogs.get((msg.call_id, frm.tag, to.tag))
        if sc is None:
            if self.ties is not None:
                self.ties.ack(msg)
            return  # else an ACK for nothing we know: never answered (§17.2.3)
        sc.stop_retransmit()
        if sc.state == "answered":
            sc.state = "confirmed"

    # CANCEL and BYE --------------------------------------------------------------------------

    def _cancel(self, msg: Message, peer: Address) -> None:
        via = msg.top_via
        sc = self._invites.get((via.branch or msg.need("via"), f"{via.host}:{via.port}"))
        if sc is None:
            self._final(msg, peer, 481)
            return
        self._final(msg, peer, 200)
        if sc.final_sent:
            return  # already answered: the CANCEL has no effect (§9.2)
        self._refuse(sc, 487)
        if self.ties is not None and self.ties.is_tie(sc.invite):
            return  # a tie leg the origin gave up: the call itself goes on, on the peer path
        self._hang_up(sc, "caller-cancelled")

    def _bye(self, msg: Message, peer: Address) -> None:
        cached = self._answers.get(_tx_key(msg))
        if cached is not None:
            self.stats.retransmissions_absorbed += 1
            self.endpoint.send(cached, peer)
            return
        to = NameAddr.parse(msg.need("to"))
        frm = NameAddr.parse(msg.need("from"))
        sc = self._dialogs.get((msg.call_id, frm.tag, to.tag))
        if sc is None and self.phones is not None and self.phones.bye(msg, peer):
            return
        if sc is None and self.ties is not None and self.ties.bye(msg, peer):
            return
        if sc is None or sc.bye_received:
            self._final(msg, peer, 481)
            return
        sc.bye_received = True
        sc.stop_retransmit()
        data = self._send(response(msg, 200, extra=[("x-vcc-call-id", sc.call_id)]), peer)
        self._answers.put(_tx_key(msg), data)
        self._hang_up(sc, "caller-hung-up")

    def _hang_up(self, sc: SipCall, reason: str) -> None:
        self._apply(sc, lambda now: self.rt.sb.caller_hang_up(now, sc.call_id, reason))

    def _apply(self, sc: SipCall, op: Callable[[float], object]) -> None:
        if sc.call_id not in self.rt.sb.calls:
            return
        try:
            self.rt.do(op)  # type: ignore[arg-type]
        except VccError as exc:
            log.debug("call %s: caller action refused: %s", sc.call_id, exc)

    def _response_in(self, msg: Message) -> None:
        """A response to a request we sent (our BYEs, the phones' legs): its final answer ends the
        retransmission."""
        if self.phones is not None and self.phones.response(msg):
            return
        if self.ties is not None and self.ties.response(msg):
            return
        try:
            branch = msg.top_via.branch
        except SipParseError:
            return
        if msg.status >= 200:
            bye = self._byes.pop(branch, None)
            if bye is not None:
                bye.stop()

    # Digits and media ------------------------------------------------------------------------

    def call_of(self, call_id: str) -> SipCall | None:
        """The SIP caller of a call of the call control, while it is on the line."""
        for sc in self._by_key.values():
            if sc.call_id == call_id and sc.media_open:
                return sc
        # At the target of a tie leg, the leg stands in for the caller of the other city.
        return self.ties.leg_in(call_id) if self.ties is not None else None

    def digit(self, sip_call_id: str, digit: str) -> None:
        """rtpengine heard a digit from the caller of this (SIP) call."""
        sc = self._by_sip_id.get(sip_call_id)
        if sc is None or not sc.call_id:
            return
        self._apply(sc, lambda now: self.rt.sb.caller_digits(now, sc.call_id, digit))

    def _media_lost(self, why: str) -> None:
        """The media engine died: every live SIP call ends as failed, its record kept."""
        calls = [sc for sc in self._by_key.values() if sc.call_id in self.rt.sb.calls]
        if calls:
            log.error("media engine lost (%s): ending %d SIP calls", why, len(calls))
        for sc in calls:
            self._line_failed(sc, "media-engine-lost")

    def _prompts_heard(self, sc: SipCall) -> None:
        """A flow's prompts were played to the end: the caller's time to press keys starts now."""
        call_id = sc.call_id
        self._apply(sc, lambda now: self.rt.sb.prompts_played(now, call_id))

    def _line_failed(self, sc: SipCall, reason: str) -> None:
        call_id = sc.call_id
        self._apply(sc, lambda now: self.rt.sb.caller_line_failed(now, call_id, reason))

    async def _follow(self, sc: SipCall) -> None:
        """The caller's progress, in order, as SIP answers and media commands."""
        try:
            while True:
                item = await sc.line.queue.get()
                if item is None:
                    return
                msg, durable = item
                kind = msg.WhichOneof("progress")
                if kind == "ended":
                    if durable is not None:
                        with contextlib.suppress(TimeoutError, Exception):
                            async with asyncio.timeout(DURABLE_WAIT_S):
                                await asyncio.shield(durable)
                    await self._ended(sc, msg.ended)
                    return
                if kind == "voicemail":
                    await self._voicemail(sc, msg.voicemail.message_id)
                    continue
                await self._progress(sc, kind, msg.prompt if kind == "prompt" else None)
        finally:
            if sc.session_timer is not None:
                sc.session_timer.cancel()
            self._dialogs.pop(sc.dialog_key, None)
            self._by_key.pop(_call_key(sc.sip_call_id, sc.remote_tag), None)
            if self._by_sip_id.get(sc.sip_call_id) is sc:
                del self._by_sip_id[sc.sip_call_id]

    async def _progress(
        self, sc: SipCall, kind: str | None, prompt: trunk_pb2.IvrPrompt | None = None
    ) -> None:
        try:
            if kind == "accepted":
                sdp = await self.hear.open(sc)
                if not sc.final_sent:
                    self._accept(sc, sdp)
            else:
                tag = self.phones.party_tag(sc.call_id) if self.phones is not None else None
                if self.bridged(sc.call_id):
                    tag = None
                await self.hear.progress(sc, kind, tag, prompt)
                call = self.rt.sb.calls.get(sc.call_id)
                if kind == "connected" and self.recorder is not None and call is not None:
                    await self.recorder.connected(sc, call.agent_code, call.ani)
        except MediaError as exc:
            self.stats.media_failures += 1
            log.warning("call %s: media %s failed: %s", sc.call_id, kind, exc)
            if kind == "accepted":
                # No media for this caller: the call cannot go on (the caller hears 503).
                self._line_failed(sc, "media-open-failed")

    async def _voicemail(self, sc: SipCall, message_id: str) -> None:
        """The caller leaves a message: their voice is recorded for it (no recorder: not kept)."""
        call = self.rt.sb.calls.get(sc.call_id)
        if self.recorder is None or call is None:
            log.warning("call %s: voicemail %s left with no recorder, no audio kept", sc.call_id, message_id)
            return
        await self.recorder.voicemail(sc, message_id, call.ani)

    async def _ended(self, sc: SipCall, ended: trunk_pb2.CallEnded) -> None:
        sc.state = "ended"
        if not sc.final_sent:
            blocked = ended.outcome == common_pb2.CALL_OUTCOME_BLOCKED
            status = self.config.busy_status if blocked else 503
            self._refuse(sc, status, reason=_reason(status, ended.reason))
        elif sc.final_status == 200 and not sc.bye_received:
            sc.stop_retransmit()
            self._send_bye(sc, ended.reason)
        if self.ties is not None:
            self.ties.call_ended(sc.call_id)
        self.bridge_ended(sc.call_id)
        await self.hear.close(sc)
        if self.recorder is not None:
            self.recorder.ended(sc)

    def _send_bye(self, sc: SipCall, reason: str) -> None:
        msg, dest = sc.bye(self.endpoint.host, self.endpoint.port, reason)
        data = msg.encode()
        branch = msg.top_via.branch

        def gave_up() -> None:
            self._byes.pop(branch, None)

        self._byes[branch] = Retransmit(lambda: self.endpoint.send(data, dest), gave_up)


def _call_key(sip_call_id: str, from_tag: str) -> str:
    # The idempotency key of a SIP call: its Call-ID and the caller's tag, bounded in length.
    digest = hashlib.sha256(f"{sip_call_id}\n{from_tag}".encode()).hexdigest()[:40]
    return f"sip-{digest}"


def _tx_key(msg: Message) -> tuple[str, str, str]:
    via = msg.top_via
    return (via.branch or msg.need("via"), f"{via.host}:{via.port}", msg.method)


def _reason(status: int, why: str) -> str:
    # A reason phrase is one line of printable text (the why is for people reading traces).
    text = "".join(ch for ch in why if ch.isprintable())[:80]
    return f"{REASONS.get(status, 'Error')} ({text})" if text else REASONS.get(status, "Error")
