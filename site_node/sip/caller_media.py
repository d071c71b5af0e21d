"""What a SIP caller hears, by the call's progress: rtpengine commands, never audio in Python.

The menu prompt in the IVR; the queue's announcement and music while waiting and while held (with
the agent's voice blocked, since rtpengine plays a file as a second stream beside it); silence
once an agent talks; the media deleted when the call is over.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path

from site_node.media.control import MediaControl
from site_node.media.ng import MediaError
from site_node.sip.dialog import SipCall

# How often the queue's file (announcement then music) is repeated while a caller waits.
QUEUE_REPEAT = 100


class CallerMedia:
    def __init__(self, media: MediaControl, prompts: dict[str, Path]) -> None:
        self.media = media
        self.prompts = prompts
        # Prompts started, by kind (menu, queue): what callers were played.
        self.plays: Counter[str] = Counter()
        # The agent's voice blocked (True) and let through again (False) around a hold.
        self.blocks: Counter[bool] = Counter()

    async def open(self, sc: SipCall) -> bytes:
        """The caller's offer through rtpengine: the SDP answer for the caller."""
        sdp = await self.media.open_caller(sc.sip_call_id, sc.remote_tag, sc.local_tag, sc.invite.body)
        sc.media_open = True
        return sdp

    async def progress(self, sc: SipCall, kind: str | None, agent_tag: str | None) -> None:
        """One step of the caller's progress; `agent_tag`: rtpengine's tag of a connected phone."""
        if kind == "prompt":
            await self._play(sc, "menu", 1)
        elif kind == "queued":
            await self._play(sc, "queue", QUEUE_REPEAT)
        elif kind in ("connected", "retrieved"):
            await self._silence(sc)
            if kind == "retrieved":
                await self._agent_voice(sc, agent_tag, blocked=False)
        elif kind == "held":
            await self._agent_voice(sc, agent_tag, blocked=True)
            await self._play(sc, "queue", QUEUE_REPEAT)

    async def close(self, sc: SipCall) -> None:
        """The call is over: rtpengine forgets it (nothing to do when the engine is gone)."""
        if sc.media_open and self.media.up:
            sc.media_open = False
            with contextlib.suppress(MediaError):
                await self.media.delete(sc.sip_call_id)

    async def _play(self, sc: SipCall, prompt: str, repeat: int) -> None:
        if not sc.media_open or sc.playing == prompt:
            return  # the queue's music is not restarted by each position update
        path = self.prompts.get(prompt)
        if path is None:
            return
        if sc.playing:
            await self.media.stop(sc.sip_call_id, sc.remote_tag)
        await self.media.play(sc.sip_call_id, sc.remote_tag, str(path), repeat)
        sc.playing = prompt
        self.plays[prompt] += 1

    async def _agent_voice(self, sc: SipCall, agent_tag: str | None, blocked: bool) -> None:
        if agent_tag is not None and sc.media_open:
            await self.media.block(sc.sip_call_id, agent_tag, blocked)
            self.blocks[blocked] += 1

    async def _silence(self, sc: SipCall) -> None:
        if sc.media_open and sc.playing:
            sc.playing = ""
            await self.media.stop(sc.sip_call_id, sc.remote_tag)
