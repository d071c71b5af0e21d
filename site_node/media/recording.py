"""A call's recording as a playable file: rtpengine's pcap (both legs, as it received them) made
into a stereo WAV, the caller on the left, the other party (agent, consulted agent) on the right.

rtpengine 10.5 in userspace records only with its pcap method (its WAV writer needs the kernel
module); this turns that pcap into what a person plays. It runs after the call, off the call path,
in a worker thread. Each party's packets are placed by their RTP timestamps, anchored at the
capture time of the first packet of their stream (SSRC), so both channels keep their real alignment,
a silent stretch stays silent, and a voice stays whole on a busy machine: placed by capture time
alone, packets that the engine handled in a burst after a stall landed on each other (audio lost,
the rest cut into pieces out of phase; docs/ARCHITECTURE.md, "Cut media"). A stream whose timestamps
drift from the capture clock by more than `REANCHOR_S` (a sender that stops its clock in silence)
is anchored again there. G.711 (PCMA, PCMU) is decoded, telephone-event and other payloads are
left out.
"""

from __future__ import annotations

import hashlib
import struct
import wave
from dataclasses import dataclass
from pathlib import Path

RATE = 8000
PCMU, PCMA = 0, 8
_PCAP_MAGIC = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">"}
_LINK_RAW_IP, _LINK_ETHERNET, _LINK_RAW_IP4 = 101, 1, 228
# A recording longer than this is cut (a stuck call must not fill the disk with one file).
MAX_SECONDS = 4 * 3600
# How far a stream's RTP clock may drift from the capture clock before it is anchored again.
REANCHOR_S = 1.0


class RecordingError(Exception):
    """The pcap cannot be read (not a pcap, or an unknown link type)."""


def _alaw(byte: int) -> int:
    a = byte ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a & 0x80 else -t


def _ulaw(byte: int) -> int:
    u = ~byte & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return (0x84 - t) if u & 0x80 else (t - 0x84)


# 16-bit little-endian samples of every G.711 byte: decoding is a table look-up per byte.
_TABLES = {
    PCMA: [struct.pack("<h", _alaw(b)) for b in range(256)],
    PCMU: [struct.pack("<h", _ulaw(b)) for b in range(256)],
}


@dataclass(frozen=True)
class Packet:
    at: float
    src_port: int
    dst_port: int
    payload_type: int
    payload: bytes
    ssrc: int = 0
    timestamp: int = 0


@dataclass(frozen=True)
class Converted:
    path: Path
    duration_s: float
    sha256: str
    # Audio packets placed on each channel (left: the caller's, right: the others').
    caller_packets: int
    other_packets: int


def read_pcap(data: bytes) -> list[Packet]:
    """The RTP packets of a pcap (UDP over IPv4); a truncated last record is ignored."""
    order = _PCAP_MAGIC.get(data[:4])
    if order is None or len(data) < 24:
        raise RecordingError("not a pcap file")
    link = struct.unpack(order + "I", data[20:24])[0] & 0xFFFF
    if link not in (_LINK_RAW_IP, _LINK_ETHERNET, _LINK_RAW_IP4):
        raise RecordingError(f"pcap link type {link} is not raw IP or Ethernet")
    packets: list[Packet] = []
    off = 24
    while off + 16 <= len(data):
        sec, usec, incl, _ = struct.unpack(order + "IIII", data[off : off + 16])
        frame = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        if len(frame) < incl:
            break  # the engine died while writing: what came before is kept
        if link == _LINK_ETHERNET:
            if len(frame) < 14 or frame[12:14] != b"\x08\x00":
                continue
            frame = frame[14:]
        packet = _udp_rtp(frame, sec + usec / 1e6)
        if packet is not None:
            packets.append(packet)
    return packets


def _udp_rtp(ip: bytes, at: float) -> Packet | None:
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
        return None
    ihl = (ip[0] & 0x0F) * 4
    udp = ip[ihl:]
    if len(udp) < 8 + 12:
        return None
    src, dst = struct.unpack("!HH", udp[:4])
    rtp = udp[8:]
    if rtp[0] >> 6 != 2:
        return None
    cc = rtp[0] & 0x0F
    start = 12 + 4 * cc
    if rtp[0] & 0x10 and len(rtp) >= start + 4:  # header extension
        start += 4 + 4 * struct.unpack("!H", rtp[start + 2 : start + 4])[0]
    payload = rtp[start:]
    if rtp[0] & 0x20 and payload:  # padding
        payload = payload[: -payload[-1]] if payload[-1] <= len(payload) else b""
    stamp, ssrc = struct.unpack("!II", rtp[4:12])
    return Packet(at, src, dst, rtp[1] & 0x7F, payload, ssrc, stamp)


def split_parties(packets: list[Packet], caller_port: int) -> tuple[list[Packet], list[Packet]]:
    """(what the caller said, what the others said): the caller sends to rtpengine's port on the
    caller's side (`caller_port`, from the SDP the caller was answered with); the others send to
    rtpengine's other ports. What rtpengine sent out (src is one of its ports) is not counted."""
    caller, others = [], []
    for p in packets:
        if p.payload_type not in _TABLES:
            continue
        if p.dst_port == caller_port:
            caller.append(p)
        elif p.src_port != caller_port:
            others.append(p)
    return caller, others


def placed(packets: list[Packet]) -> list[tuple[float, Packet]]:
    """Each packet with the time its audio starts: its stream's anchor (the capture time of the
    stream's first packet) plus its RTP timestamp's distance from that packet's (8 kHz clock,
    32-bit wrap); anchored again where the two clocks drift apart by more than REANCHOR_S."""
    anchors: dict[int, tuple[float, int]] = {}
    out: list[tuple[float, Packet]] = []
    for p in sorted(packets, key=lambda p: p.at):
        anchor = anchors.get(p.ssrc)
        if anchor is not None:
            step = (p.timestamp - anchor[1]) & 0xFFFFFFFF
            if step >= 0x80000000:
                step -= 1 << 32  # a packet from before the anchor (reordered)
            at = anchor[0] + step / RATE
            if abs(at - p.at) <= REANCHOR_S:
                out.append((at, p))
                continue
        anchors[p.ssrc] = (p.at, p.timestamp)
        out.append((p.at, p))
    return out


def _span(*channels: list[tuple[float, Packet]]) -> tuple[float, int]:
    """The start of the recording and its length in frames (0 when nothing was said)."""
    audio = [x for c in channels for x in c]
    if not audio:
        return 0.0, 0
    start = min(at for at, _ in audio)
    end = max(at + len(p.payload) / RATE for at, p in audio)
    return start, min(round((end - start) * RATE), MAX_SECONDS * RATE)


def _channel(packets: list[tuple[float, Packet]], start: float, length: int) -> bytearray:
    out = bytearray(length * 2)
    for at_s, p in packets:
        table = _TABLES[p.payload_type]
        at = round((at_s - start) * RATE) * 2
        pcm = b"".join(table[b] for b in p.payload)
        end = min(at + len(pcm), len(out))
        if 0 <= at < end:
            out[at:end] = pcm[: end - at]
    return out


def pcap_to_wav(pcap: Path, wav: Path, caller_port: int, *, caller_only: bool = False) -> Converted:
    """Write the stereo WAV of one call's pcap (`caller_only`: a mono WAV of the caller's voice,
    a voicemail message); its duration and SHA-256."""
    packets = read_pcap(pcap.read_bytes())
    caller, others = split_parties(packets, caller_port)
    if caller_only:
        return _mono(caller, wav, len(others))
    said, heard = placed(caller), placed(others)
    start, frames = _span(said, heard)
    left, right = _channel(said, start, frames), _channel(heard, start, frames)
    interleaved = bytearray(frames * 4)
    for i in range(2):
        interleaved[i::4] = left[i::2]
        interleaved[2 + i :: 4] = right[i::2]
    tmp = wav.with_suffix(".wav.part")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(bytes(interleaved))
    tmp.replace(wav)
    return Converted(wav, frames / RATE, sha256_of(wav), len(caller), len(others))


def _mono(caller: list[Packet], wav: Path, others: int) -> Converted:
    said = placed(caller)
    start, frames = _span(said)
    samples = _channel(said, start, frames)
    tmp = wav.with_suffix(".wav.part")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(bytes(samples))
    tmp.replace(wav)
    return Converted(wav, frames / RATE, sha256_of(wav), len(caller), others)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()
