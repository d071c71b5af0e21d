"""One SIP call on the trunk: the caller's INVITE, the dialog it made, and where it stands."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from site_node.runtime import CallerLine
from site_node.sip.message import Message, NameAddr, new_branch, uri_host_port
from site_node.sip.timers import Retransmit
from site_node.sip.transport import Address


@dataclass(eq=False)
class SipCall:
    invite: Message
    peer: Address
    sip_call_id: str
    remote_tag: str
    local_tag: str
    # The call control's id (X-VCC-Call-ID); set once offer() minted it.
    call_id: str = ""
    line: CallerLine = field(default_factory=CallerLine)
    # proceeding (no final answer yet) -> answered (2xx sent, waiting for ACK) -> confirmed;
    # ended once either side hung up.
    state: str = "proceeding"
    last_response: bytes = b""
    final_sent: bool = False
    final_status: int = 0
    bye_received: bool = False
    media_open: bool = False
    local_sdp: bytes = b""
    local_cseq: int = 0
    retransmit: Retransmit | None = None
    task: asyncio.Task[None] | None = None
    # Which file plays now ("" none): the queue's music is not restarted by each position update.
    playing: str = ""
    # Session timer (RFC 4028): the interval agreed, and the deadline of the next refresh.
    session_expires: int = 0
    session_timer: asyncio.TimerHandle | None = None

    @property
    def dialog_key(self) -> tuple[str, str, str]:
        return (self.sip_call_id, self.remote_tag, self.local_tag)

    def stop_retransmit(self) -> None:
        if self.retransmit is not None:
            self.retransmit.stop()
            self.retransmit = None

    def bye(self, via_host: str, via_port: int, reason: str) -> tuple[Message, Address]:
        """A BYE from us to the caller (§15.1.1) and where it goes (first route, else Contact)."""
        inv = self.invite
        self.local_cseq += 1
        routes = inv.all("record-route")
        contact = inv.get("contact")
        target = NameAddr.parse(contact).uri if contact else NameAddr.parse(inv.need("from")).uri
        headers: list[tuple[str, str]] = [
            ("via", f"SIP/2.0/UDP {via_host}:{via_port};branch={new_branch()};rport"),
            ("max-forwards", "70"),
            ("from", _with_tag(inv.need("to"), self.local_tag)),
            ("to", inv.need("from")),
            ("call-id", self.sip_call_id),
            ("cseq", f"{self.local_cseq} BYE"),
        ]
        headers.extend(("route", r) for r in routes)
        headers.append(("reason", f'SIP;cause=200;text="{reason}"'))
        headers.append(("x-vcc-call-id", self.call_id))
        msg = Message(method="BYE", uri=target, headers=headers)
        dest = uri_host_port(NameAddr.parse(routes[0]).uri if routes else target)
        # Behind NAT or with a Contact we cannot reach, the INVITE's source is the better bet.
        if not routes and dest[0] in ("0.0.0.0", ""):
            dest = self.peer
        return msg, dest


def _with_tag(value: str, tag: str) -> str:
    if ";tag=" in value.replace(" ", "").lower():
        return value
    return f"{value};tag={tag}"
