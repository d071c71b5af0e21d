"""What a SIP caller hears, by the call's progress: rtpengine commands, never audio in Python.

The menu prompt in the IVR; in a flow, the file of each prompt the flow says (built by `vcc prompts
build`, found by flow, prompt and text), one after the other; a prompt with numbers filled in (a
queue position, a wait) as its fixed parts and a clip per number; the menu file when a prompt has
none;
the queue's announcement and music while waiting and while held (with the agent's voice blocked,
since rtpengine plays a file as a second stream beside it); silence once an agent talks; the media
deleted when the call is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import wave
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from site_node.media.control import MediaControl
from site_node.media.ng import MediaError
from site_node.media.prompts import flow_prompt_file, flow_prompt_pieces
from site_node.sip.dialog import SipCall
from vcc.v1 import trunk_pb2

log = logging.getLogger(__name__)

# How often the queue's file (announcement then music) is repeated while a caller waits.
QUEUE_REPEAT = 100


@dataclass
class _Said:
    """A flow's prompts said in one go (up to its key request), played one after the other."""

    files: deque[tuple[str, Path | None]] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    # The flow asked for keys: its next prompt follows a key or a silence, and cuts these short.
    asked: bool = False
    # The queue reached meanwhile: its file plays once the prompts before it were heard.
    then: tuple[str, int] | None = None


class CallerMedia:
    def __init__(
        self, media: MediaControl, prompts: dict[str, Path], prompts_dir: Path | None = None
    ) -> None:
        self.media = media
        self.prompts = prompts
        # The flows' prompt files sit beside the menu's (`vcc prompts build` makes both).
        menu = prompts.get("menu")
        self.prompts_dir = prompts_dir or (menu.parent if menu is not None else None)
        # Prompts started, by kind (menu, queue, or a flow's `flow/prompt`): what callers were played.
        self.plays: Counter[str] = Counter()
        # A flow's prompts with no file, the menu file played instead (a metric: build the prompts).
        self.fallbacks = 0
        # Prompts with numbers filled in, said from their pieces.
        self.pieced = 0
        # The agent's voice blocked (True) and let through again (False) around a hold.
        self.blocks: Counter[bool] = Counter()
        self._said: dict[str, _Said] = {}
        # Told when a flow's prompts before its key request have all been heard (the trunk tells
        # the call control, whose key timeout counts from then).
        self.on_heard: Callable[[SipCall], None] | None = None
        self._durations: dict[Path, float] = {}

    async def open(self, sc: SipCall) -> bytes:
        """The caller's offer through rtpengine: the SDP answer for the caller."""
        sdp = await self.media.open_caller(sc.sip_call_id, sc.remote_tag, sc.local_tag, sc.invite.body)
        sc.media_open = True
        return sdp

    async def progress(
        self, sc: SipCall, kind: str | None, agent_tag: str | None, prompt: trunk_pb2.IvrPrompt | None = None
    ) -> None:
        """One step of the caller's progress; `agent_tag`: rtpengine's tag of a connected phone;
        `prompt`: what the call control said with a prompt (a flow's prompt id and text)."""
        if kind == "prompt" and prompt is not None and prompt.flow_id:
            self._flow_prompt(sc, prompt)
            return
        said = self._said.get(sc.call_id)
        if kind == "queued" and said is not None and said.task is not None and not said.task.done():
            said.then = ("queue", QUEUE_REPEAT)  # after the flow's last words ("please hold")
            return
        if kind in ("prompt", "queued", "connected", "retrieved", "held"):
            self._hush(sc)
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
        self._hush(sc)
        if sc.media_open and self.media.up:
            sc.media_open = False
            with contextlib.suppress(MediaError):
                await self.media.delete(sc.sip_call_id)

    # -- a flow's prompts ------------------------------------------------------------------------

    def _flow_prompt(self, sc: SipCall, prompt: trunk_pb2.IvrPrompt) -> None:
        said = self._said.get(sc.call_id)
        if prompt.collect:
            if said is None or said.task is None or said.task.done():
                self._heard(sc)  # nothing (left) to say before the keys
            if said is not None:
                said.asked = True
            return
        if said is None or said.asked:
            # A key (or a silence) moved the flow on: what was still being said is cut short.
            self._hush(sc)
            said = self._said[sc.call_id] = _Said()
        said.files.extend(self._flow_files(sc, prompt))
        if said.task is None or said.task.done():
            said.task = asyncio.create_task(self._say(sc, said), name=f"prompts-{sc.call_id}")

    def stop(self) -> None:
        """The trunk stops: no prompt is left being said."""
        for said in self._said.values():
            if said.task is not None:
                said.task.cancel()
        self._said.clear()

    def _flow_files(self, sc: SipCall, prompt: trunk_pb2.IvrPrompt) -> list[tuple[str, Path | None]]:
        """The prompt's own file; with numbers filled in, its pieces (the fixed parts and a clip
        per number); else the menu file."""
        name = f"{prompt.flow_id}/{prompt.prompt}"
        if self.prompts_dir is not None:
            path = flow_prompt_file(self.prompts_dir, prompt.flow_id, prompt.prompt, prompt.text)
            if path is not None:
                return [(name, path)]
            pieces = flow_prompt_pieces(self.prompts_dir, prompt.flow_id, prompt.prompt, prompt.text)
            if pieces is not None:
                self.pieced += 1
                return [(name, piece) for piece in pieces]
        self.fallbacks += 1
        log.warning(
            "call %s: no file for prompt %s of flow %s v%d (run `vcc prompts build`): the menu file plays",
            sc.call_id, prompt.prompt, prompt.flow_id, prompt.flow_version,
        )  # fmt: skip
        return [("menu", self.prompts.get("menu"))]

    async def _say(self, sc: SipCall, said: _Said) -> None:
        """Each file in turn, the next once the last has been heard (rtpengine plays one at a time)."""
        try:
            while said.files:
                name, path = said.files.popleft()
                if path is not None:
                    await self._play(sc, name, 1, again=True, path=path)
                    await asyncio.sleep(self._duration(path))
            if said.asked:
                self._heard(sc)
            if said.then is not None:
                kind, repeat = said.then
                said.then = None
                await self._play(sc, kind, repeat)
        except MediaError as exc:
            log.warning("call %s: playing a flow's prompt failed: %s", sc.call_id, exc)
        except Exception:  # never the trunk's end: the call goes on, its prompts unsaid
            log.exception("call %s: saying a flow's prompts failed", sc.call_id)

    def _heard(self, sc: SipCall) -> None:
        if self.on_heard is not None:
            self.on_heard(sc)

    def _hush(self, sc: SipCall) -> None:
        said = self._said.pop(sc.call_id, None)
        if said is not None and said.task is not None:
            said.task.cancel()

    def _duration(self, path: Path) -> float:
        if path not in self._durations:
            try:
                with wave.open(str(path), "rb") as w:
                    self._durations[path] = w.getnframes() / w.getframerate()
            except (OSError, wave.Error, EOFError):
                self._durations[path] = 0.0
        return self._durations[path]

    async def _play(
        self, sc: SipCall, prompt: str, repeat: int, *, again: bool = False, path: Path | None = None
    ) -> None:
        if not sc.media_open or (sc.playing == prompt and not again):
            return  # the queue's music is not restarted by each position update
        path = path or self.prompts.get(prompt)
        if path is None:
            return
        # No `stop media` first: rtpengine's play media shuts the party's player down before it
        # starts the new file (media_player_play_init), and every command saved is a turn of its
        # one control thread (docs/BENCHMARKS.md, SIP): a queued call costs 5 ng commands, not 6.
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
