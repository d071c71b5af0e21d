"""A SIP peer made of a bare UDP socket, for what SIPp cannot script: exact bytes, mutations,
re-sent requests, a CANCEL in the same instant as its INVITE."""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import cast

SDP = (
    "v=0\r\no=peer 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n"
)


class RawPeer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    @classmethod
    async def open(cls) -> RawPeer:
        peer = cls()
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: peer, local_addr=("127.0.0.1", 0))
        return peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.inbox.put_nowait(data)

    def send(self, data: bytes, target: str) -> None:
        host, port = target.rsplit(":", 1)
        assert self.transport is not None
        self.transport.sendto(data, (host, int(port)))

    async def receive(self, timeout_s: float = 5.0) -> bytes:
        return await asyncio.wait_for(self.inbox.get(), timeout_s)

    async def status(self, timeout_s: float = 5.0, skip_provisional: bool = True) -> tuple[int, bytes]:
        """The next response's status (provisional ones skipped) and its bytes."""
        while True:
            data = await self.receive(timeout_s)
            m = re.match(rb"SIP/2.0 (\d{3})", data)
            if m is None:
                continue  # a request (our BYE arriving) is read by whoever waits for it
            code = int(m.group(1))
            if code >= 200 or not skip_provisional:
                return code, data

    async def silent(self, timeout_s: float = 0.5) -> bool:
        """Nothing arrives for `timeout_s` (a dropped datagram gets no answer)."""
        try:
            await asyncio.wait_for(self.inbox.get(), timeout_s)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def invite(
    peer: RawPeer, target: str, *, number: str = "10000", call_id: str | None = None,
    branch: str | None = None, tag: str | None = None, ani: str = "13800000002", media_port: int = 9,
    extra: str = "",
) -> tuple[bytes, dict[str, str]]:  # fmt: skip
    ids = {
        "call_id": call_id or secrets.token_hex(8),
        "branch": branch or "z9hG4bK" + secrets.token_hex(6),
        "tag": tag or secrets.token_hex(4),
    }
    body = SDP.format(port=media_port)
    msg = (
        f"INVITE sip:{number}@{target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{peer.port};branch={ids['branch']};rport\r\n"
        f"From: <sip:{ani}@127.0.0.1:{peer.port}>;tag={ids['tag']}\r\n"
        f"To: <sip:{number}@{target}>\r\n"
        f"Call-ID: {ids['call_id']}\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:{ani}@127.0.0.1:{peer.port}>\r\nMax-Forwards: 70\r\n{extra}"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    )
    return msg.encode(), ids


def in_dialog(
    method: str, peer: RawPeer, target: str, ids: dict[str, str], *, to_tag: str, cseq: int = 2,
    branch: str | None = None,
) -> bytes:  # fmt: skip
    """ACK (for a 2xx), BYE, or CANCEL (give the INVITE's branch and an empty `to_tag`)."""
    to = f"<sip:10000@{target}>" + (f";tag={to_tag}" if to_tag else "")
    number = cseq if method != "CANCEL" else 1
    msg = (
        f"{method} sip:10000@{target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{peer.port};branch={branch or 'z9hG4bK' + secrets.token_hex(6)}\r\n"
        f"From: <sip:13800000002@127.0.0.1:{peer.port}>;tag={ids['tag']}\r\n"
        f"To: {to}\r\nCall-ID: {ids['call_id']}\r\nCSeq: {number} {method}\r\n"
        f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    return msg.encode()


def header(data: bytes, name: str) -> str:
    m = re.search(rb"(?im)^" + name.encode() + rb":\s*(.*?)\r?$", data)
    return m.group(1).decode() if m else ""


def to_tag(data: bytes) -> str:
    m = re.search(r";tag=([^;\s]+)", header(data, "To"))
    return m.group(1) if m else ""


class RawCaller:
    """A caller that hangs up when the test says so (SIPp's hang-up comes after a fixed time, a
    race on a busy machine), its voice and keys an RTP ear's (tools/province/rtp_ear.py): SIPp's
    stream after its own key press was seen not to start at all under load (docs/RELIABILITY.md)."""

    def __init__(self, peer: RawPeer, target: str) -> None:
        self.peer, self.target = peer, target
        self.ids: dict[str, str] = {}
        self.to_tag = ""
        self.vcc_call_id = ""

    @classmethod
    async def dial(cls, target: str, media_port: int, *, attempts: int = 20) -> RawCaller:
        """INVITE (re-sent each second until answered), the 200 OK ACKed."""
        caller = cls(await RawPeer.open(), target)
        data, caller.ids = invite(caller.peer, target, media_port=media_port)
        answer = await caller._until_final(data, attempts)
        assert answer[0] == 200, answer
        caller.to_tag = to_tag(answer[1])
        caller.vcc_call_id = header(answer[1], "X-VCC-Call-ID")
        ack = in_dialog("ACK", caller.peer, target, caller.ids, to_tag=caller.to_tag, cseq=1)
        caller.peer.send(ack, target)
        return caller

    async def hang_up(self, *, attempts: int = 20) -> int:
        """BYE (re-sent each second until answered): the status of its answer."""
        bye = in_dialog("BYE", self.peer, self.target, self.ids, to_tag=self.to_tag, cseq=2)
        return (await self._until_final(bye, attempts))[0]

    async def _until_final(self, data: bytes, attempts: int) -> tuple[int, bytes]:
        for _ in range(attempts):
            self.peer.send(data, self.target)
            try:
                return await self.peer.status(timeout_s=1.0)
            except TimeoutError:
                continue
        raise AssertionError(f"no final answer in {attempts} s")

    def close(self) -> None:
        self.peer.close()
