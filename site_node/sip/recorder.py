"""Every answered SIP call recorded where its trunk is (SPEC F26): both parties, one WAV per call.

When an agent is connected to a SIP caller, the call takes a channel of a recording board (a board
resource of the site, like the IVR's ports) and rtpengine records it (pcap); none free: the call
goes on unrecorded and that is counted. When the call's media is deleted, rtpengine closes the
pcap; a supervised task makes it a stereo WAV (site_node/media/recording.py), checksums it and
writes the call's index entry into `index/pending/` (one JSON file, written whole then renamed, so
a crash never leaves half an entry). The index shipper (site_node/links/recording_index.py) takes
them to central. The pcap is removed once the WAV exists.

A caller leaving a voicemail message (the call control's `voicemail` progress: it holds the
recording channel) is recorded the same way; the caller's side alone becomes the message's mono
WAV, `voicemail/<message id>.wav`, which the message names and VoicemailService serves. A call
that was recorded already (an agent talked with the caller before) keeps one recording, and the
message's file holds the caller's side of the whole call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from site_node.callcontrol.resources import Resources
from site_node.media.control import MediaControl
from site_node.media.ng import MediaError
from site_node.media.recording import RecordingError, pcap_to_wav
from site_node.sip.dialog import SipCall

log = logging.getLogger(__name__)

# rtpengine writes the pcap when the call is deleted; how long to wait for it to appear.
PCAP_WAIT_S = 5.0
CLOSE_WAIT_S = 5.0
# rtpengine names a call's files after its call id (%-escaped) and a random suffix.
_ENGINE_FILE = re.compile(r"^(.+)-[0-9a-f]{16}(\.[a-z]+)?$")


@dataclass
class Take:
    """One call being recorded."""

    call_id: str
    sip_call_id: str
    caller_number: str
    # rtpengine's port on the caller's side: what arrives there is the caller's voice.
    caller_port: int
    board: str | None
    started_at: float
    agents: list[str] = field(default_factory=list)
    # A voicemail message the caller's side is kept for; False: no call recording (only that).
    voicemail_id: str = ""
    record_call: bool = True


@dataclass
class RecorderStats:
    recorded: int = 0
    # Answered calls that went on unrecorded because every recording channel was busy.
    unrecorded_no_channel: int = 0
    # rtpengine refused to record, or its pcap could not be made a WAV.
    failed: int = 0
    voicemail: int = 0


class CallRecorder:
    def __init__(
        self,
        media: MediaControl,
        resources: Resources,
        site_id: str,
        folder: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.media = media
        self.resources = resources
        self.site_id = site_id
        self.folder = folder
        self.pending = folder / "index" / "pending"
        self.pending.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self.stats = RecorderStats()
        self.takes: dict[str, Take] = {}
        # Calls refused a channel: counted once, not recorded later in the call either.
        self._refused: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Told when an index entry is ready (the shipper wakes up).
        self.on_indexed: Callable[[], None] = lambda: None

    async def connected(self, sc: SipCall, agent_code: str, caller_number: str) -> None:
        """An agent talks with the SIP caller: start recording (once per call), note the agent."""
        take = self.takes.get(sc.call_id)
        if take is not None:
            if agent_code and agent_code not in take.agents:
                take.agents.append(agent_code)
            return
        if sc.call_id in self._refused or not sc.media_open:
            return
        got, board = self.resources.take_board("recording")
        if not got:
            self._refused.add(sc.call_id)
            self.stats.unrecorded_no_channel += 1
            log.warning("call %s: no recording channel free, the call goes on unrecorded", sc.call_id)
            return
        agents = [agent_code] if agent_code else []
        port = _caller_port(sc.local_sdp)
        take = Take(sc.call_id, sc.sip_call_id, caller_number, port, board, self.clock(), agents)
        self.takes[sc.call_id] = take
        try:
            await self.media.start_recording(sc.sip_call_id)
        except MediaError as exc:
            self.takes.pop(sc.call_id, None)
            self.resources.release_board(board)
            self.stats.failed += 1
            log.warning("call %s: rtpengine did not start recording: %s", sc.call_id, exc)

    async def voicemail(self, sc: SipCall, message_id: str, caller_number: str) -> None:
        """The caller leaves a voicemail message: record their voice (the call control holds the
        recording channel)."""
        take = self.takes.get(sc.call_id)
        if take is not None:
            take.voicemail_id = message_id
            return
        if not sc.media_open:
            return
        port = _caller_port(sc.local_sdp)
        take = Take(
            sc.call_id, sc.sip_call_id, caller_number, port, None, self.clock(), voicemail_id=message_id,
            record_call=False,
        )  # fmt: skip
        self.takes[sc.call_id] = take
        try:
            await self.media.start_recording(sc.sip_call_id)
        except MediaError as exc:
            self.takes.pop(sc.call_id, None)
            self.stats.failed += 1
            log.warning("call %s: rtpengine did not record voicemail %s: %s", sc.call_id, message_id, exc)

    def ended(self, sc: SipCall) -> None:
        """The call's media is gone (rtpengine closed the pcap): make it a file, in the background."""
        self._refused.discard(sc.call_id)
        take = self.takes.pop(sc.call_id, None)
        if take is None:
            return
        self.resources.release_board(take.board)
        ended_at = self.clock()
        task = asyncio.get_running_loop().create_task(
            self._keep(take, ended_at), name=f"record-{take.call_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _keep(self, take: Take, ended_at: float) -> None:
        try:
            pcap = await self._pcap_of(take.sip_call_id)
            if pcap is None:
                raise RecordingError("rtpengine wrote no pcap")
            if take.voicemail_id:
                await self._keep_voicemail(take, pcap)
            if not take.record_call:
                self._forget_files(take, pcap)
                return
            wav = self.folder / f"{take.call_id}.wav"
            made = await asyncio.to_thread(pcap_to_wav, pcap, wav, take.caller_port)
        except (RecordingError, OSError) as exc:
            self.stats.failed += 1
            log.error("call %s: recording not kept: %s", take.call_id, exc)
            return
        entry = {
            "call_id": take.call_id,
            "site_id": self.site_id,
            "agent_codes": take.agents,
            "caller_number": take.caller_number,
            "started_at": take.started_at,
            "duration_s": round(made.duration_s, 3),
            "file": wav.name,
            "sha256": made.sha256,
            "size_bytes": wav.stat().st_size,
            "ended_at": ended_at,
        }
        await asyncio.to_thread(self._write_entry, entry)
        self._forget_files(take, pcap)
        self.stats.recorded += 1
        log.info("call %s: recording kept (%s, %.1f s, caller %d / agents %d packets)", take.call_id,
                 wav.name, made.duration_s, made.caller_packets, made.other_packets)  # fmt: skip
        self.on_indexed()

    async def _keep_voicemail(self, take: Take, pcap: Path) -> None:
        folder = self.folder / "voicemail"
        folder.mkdir(exist_ok=True)
        wav = folder / f"{take.voicemail_id}.wav"
        made = await asyncio.to_thread(pcap_to_wav, pcap, wav, take.caller_port, caller_only=True)
        self.stats.voicemail += 1
        log.info("call %s: voicemail %s kept (%.1f s, %d packets)", take.call_id, take.voicemail_id,
                 made.duration_s, made.caller_packets)  # fmt: skip

    def _forget_files(self, take: Take, pcap: Path) -> None:
        for leftover in (pcap, *self._metadata_of(take.sip_call_id)):
            with contextlib.suppress(OSError):
                leftover.unlink()

    def _write_entry(self, entry: dict[str, object]) -> None:
        final = self.pending / f"{entry['call_id']}.json"
        tmp = final.with_suffix(".json.part")
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(entry, f, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(final)

    async def _pcap_of(self, sip_call_id: str) -> Path | None:
        deadline = time.monotonic() + PCAP_WAIT_S
        while True:
            found = await asyncio.to_thread(self._files_of, "pcaps", "", sip_call_id)
            if found:
                return max(found, key=lambda p: p.stat().st_mtime)
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.1)

    def _metadata_of(self, sip_call_id: str) -> list[Path]:
        return self._files_of("metadata", "rtpengine-meta-", sip_call_id)

    def _files_of(self, sub: str, prefix: str, sip_call_id: str) -> list[Path]:
        """rtpengine's files of one call: `<prefix><call id, %-escaped>-<random hex>[.ext]`."""
        folder = self.folder / sub
        if not folder.is_dir():
            return []
        found = []
        for path in folder.iterdir():
            m = _ENGINE_FILE.match(path.name)
            if m and path.name.startswith(prefix) and unquote(m.group(1)[len(prefix) :]) == sip_call_id:
                found.append(path)
        return found

    async def close(self) -> None:
        """At the site's stop, after every call ended: the files being made are finished (bounded)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=CLOSE_WAIT_S)
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _caller_port(sdp: bytes) -> int:
    m = re.search(rb"^m=audio (\d+) ", sdp, re.MULTILINE)
    return int(m.group(1)) if m else 0
