"""What a call asks of the media engine: open the caller's media, play and stop files, delete.

rtpengine relays between two parties of one call (named by rtpengine's call id, our SIP
Call-ID, and the parties' tags). While nobody but the IVR is on the line, the other party is a
sink: an answer that points at the discard port, so the caller's audio goes nowhere and Python
never receives it; prompts are played to the caller by rtpengine itself.
"""

from __future__ import annotations

import re
from pathlib import Path

from site_node.media.bencode import Decoded, Value
from site_node.media.engine import MediaEngine
from site_node.media.ng import MediaError, text
from site_node.media.prompts import played_path

# The discard service port: nothing listens there, and unconnected UDP sockets ignore the ICMP.
SINK_PORT = 9


class MediaControl:
    def __init__(self, engine: MediaEngine) -> None:
        self.engine = engine
        self.failures = 0

    @property
    def up(self) -> bool:
        return self.engine.up

    @property
    def busy(self) -> bool:
        """The engine's control queue is long (site_node/media/ng.py): a call let in now would
        wait seconds for its media, and delay the calls already up."""
        return self.engine.client.busy

    async def _request(self, command: str, args: dict[str, Value]) -> dict[str, Decoded]:
        try:
            return await self.engine.client.request(command, **args)
        except MediaError:
            self.failures += 1
            self.engine.suspect()
            raise

    async def open_caller(self, call_id: str, caller_tag: str, our_tag: str, sdp: bytes) -> bytes:
        """The caller's offer through rtpengine; the SDP answer to send the caller."""
        common: dict[str, Value] = {"replace": ["origin", "session-connection"], "ICE": "remove"}
        first: dict[str, Value] = dict(common)
        if self.engine.config.inband_dtmf:
            # rtpengine decodes the caller's audio and reports the tones it hears as digits.
            first["codec"] = {"transcode": ["telephone-event"]}
        offered = await self._request(
            "offer", {"call-id": call_id, "from-tag": caller_tag, "sdp": sdp, **first}
        )
        sink = sink_answer(text(offered, "sdp"), self.engine.config.interface)
        answered = await self._request(
            "answer",
            {"call-id": call_id, "from-tag": caller_tag, "to-tag": our_tag, "sdp": sink, **common},
        )
        sdp_out = answered.get("sdp")
        if not isinstance(sdp_out, bytes):
            raise MediaError("answer without SDP")
        return sdp_out

    async def offer_again(self, call_id: str, caller_tag: str, sdp: bytes, to_tag: str = "") -> bytes:
        """The caller's offer once more, for a new party (an agent's phone): the SDP to send it.

        With `to_tag` (the new party's tag, given again in its answer) the ports offered are the
        party's own, so what the party sends arrives on its own side of the call: forks and
        re-pairings of that party (supervision, site_node/sip/supervision.py) then see its audio."""
        common: dict[str, Value] = {"replace": ["origin", "session-connection"], "ICE": "remove"}
        args: dict[str, Value] = {"call-id": call_id, "from-tag": caller_tag, "sdp": sdp, **common}
        if to_tag:
            args["to-tag"] = to_tag
        offered = await self._request("offer", args)
        sdp_out = offered.get("sdp")
        if not isinstance(sdp_out, bytes):
            raise MediaError("offer without SDP")
        return sdp_out

    async def answer_from(self, call_id: str, caller_tag: str, party_tag: str, sdp: bytes) -> None:
        """The new party's answer: rtpengine pairs the caller with it (the sink is left behind)."""
        common: dict[str, Value] = {"replace": ["origin", "session-connection"], "ICE": "remove"}
        await self._request(
            "answer", {"call-id": call_id, "from-tag": caller_tag, "to-tag": party_tag, "sdp": sdp, **common}
        )

    async def pair(
        self, call_id: str, from_tag: str, from_sdp: bytes | str, to_tag: str, to_sdp: bytes | str,
        *, bridged: bool = False,
    ) -> tuple[int, int]:  # fmt: skip
        """Pair two parties of a call with each other (each leaves whoever it was paired with):
        an offer from `from_tag` and the answer of `to_tag`. Returns the engine's ports (where
        `to_tag` must send, where `from_tag` must send), as the two replies give them."""
        common: dict[str, Value] = {"replace": ["origin", "session-connection"], "ICE": "remove"}
        ids: dict[str, Value] = {"call-id": call_id, "from-tag": from_tag, "to-tag": to_tag}
        offered = await self._request("offer", {**ids, "sdp": from_sdp, **common})
        answer: dict[str, Value] = {**ids, "sdp": to_sdp, **common}
        if bridged:
            # A bridge sends from other ports than it listens on: the engine must not learn them.
            answer["flags"] = ["asymmetric"]
        answered = await self._request("answer", answer)
        return _audio_port(offered), _audio_port(answered)

    async def offer_to(self, call_id: str, from_tag: str, to_tag: str, sdp: bytes | str) -> bytes:
        """An offer from `from_tag` to a party not answered yet: the SDP to send that party."""
        common: dict[str, Value] = {"replace": ["origin", "session-connection"], "ICE": "remove"}
        ids: dict[str, Value] = {"call-id": call_id, "from-tag": from_tag, "to-tag": to_tag}
        # The offer is a bridge's (site_node/media/bridge.py), which sends from other ports.
        offered = await self._request("offer", {**ids, "sdp": sdp, **common, "flags": ["asymmetric"]})
        sdp_out = offered.get("sdp")
        if not isinstance(sdp_out, bytes):
            raise MediaError("offer without SDP")
        return sdp_out

    async def answer_to(self, call_id: str, from_tag: str, to_tag: str, sdp: bytes | str) -> int:
        """`to_tag`'s answer to `offer_to`: the engine's port where `from_tag` must send."""
        common: dict[str, Value] = {"replace": ["origin", "session-connection"], "ICE": "remove"}
        ids: dict[str, Value] = {"call-id": call_id, "from-tag": from_tag, "to-tag": to_tag}
        return _audio_port(await self._request("answer", {**ids, "sdp": sdp, **common}))

    async def play(self, call_id: str, caller_tag: str, path: str, repeat: int = 1) -> None:
        cheap = played_path(Path(path))
        if cheap.exists():  # a stat; the A-law copy spares rtpengine's one control thread
            path = str(cheap)
        args: dict[str, Value] = {"call-id": call_id, "from-tag": caller_tag, "file": path}
        args["repeat-times"] = repeat
        await self._request("play media", args)

    async def block(self, call_id: str, from_tag: str, blocked: bool) -> None:
        """Stop (or let through again) what the party `from_tag` sends."""
        command = "block media" if blocked else "unblock media"
        await self._request(command, {"call-id": call_id, "from-tag": from_tag})

    async def stop(self, call_id: str, caller_tag: str) -> None:
        await self._request("stop media", {"call-id": call_id, "from-tag": caller_tag})

    async def start_recording(self, call_id: str) -> None:
        """Record every party of the call from now on (the engine's pcap, closed at delete)."""
        await self._request("start recording", {"call-id": call_id})

    async def delete(self, call_id: str) -> None:
        await self._request("delete", {"call-id": call_id, "delete delay": 0})

    async def query(self, call_id: str) -> dict[str, Decoded]:
        return await self._request("query", {"call-id": call_id})


def _audio_port(reply: dict[str, Decoded]) -> int:
    m = re.search(r"^m=audio (\d+) ", text(reply, "sdp"), re.MULTILINE)
    if m is None:
        raise MediaError("rtpengine's reply has no audio stream")
    return int(m.group(1))


def bridge_sdp(port: int, interface: str) -> str:
    """The SDP of one leg of a mixing bridge (site_node/media/bridge.py): A-law only, so the engine
    transcodes a party that speaks another codec."""
    return "\r\n".join([
        "v=0", f"o=vcc 1 1 IN IP4 {interface}", "s=vcc-bridge", f"c=IN IP4 {interface}", "t=0 0",
        f"m=audio {port} RTP/AVP 8", "a=rtpmap:8 PCMA/8000", "a=sendrecv",
    ]) + "\r\n"  # fmt: skip


def sink_answer(offer_sdp: str, interface: str) -> str:
    """An answer for the callee side that accepts every offered codec and receives nothing."""
    m = re.search(r"^m=audio \d+ (\S+) ([0-9 ]+)\s*$", offer_sdp, re.MULTILINE)
    if m is None:
        raise MediaError("rtpengine's offer has no audio stream")
    proto, payloads = m.group(1), m.group(2).split()
    lines = [
        "v=0",
        f"o=vcc 1 1 IN IP4 {interface}",
        "s=vcc",
        f"c=IN IP4 {interface}",
        "t=0 0",
        f"m=audio {SINK_PORT} {proto} {' '.join(payloads)}",
    ]
    for pt in payloads:
        for attr in ("rtpmap", "fmtp"):
            found = re.search(rf"^a={attr}:{pt} .*$", offer_sdp, re.MULTILINE)
            if found:
                lines.append(found.group(0).strip())
    lines.append("a=sendrecv")
    return "\r\n".join(lines) + "\r\n"
