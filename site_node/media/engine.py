"""The site's rtpengine: started, watched and restarted (bounded) by the site node, or given.

A managed engine runs userspace only (no kernel module) on the site's own RTP port range; it is
told to die with the site node (PR_SET_PDEATHSIG, through setpriv), so a killed site never leaves an orphan
holding its ports. Listeners hear when the engine is lost and when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

from site_node.media.ng import NgClient
from vcc.config import MediaEngineConfig
from vcc.digits import is_digits

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
# rtpengine's own log level (0-7) for a diagnosis; unset: its default (6).
LOG_LEVEL_ENV = "VCC_RTPENGINE_LOG_LEVEL"
STOP_GRACE_S = 5.0
# How often a given (not managed) engine is pinged to notice that it died.
PING_INTERVAL_S = 2.0


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> list[str]:
    # util-linux's setpriv sets PR_SET_PDEATHSIG and execs rtpengine, which keeps it: the kernel
    # sends SIGTERM when the site node dies (no preexec_fn, unsafe beside gRPC's threads).
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


class MediaEngine:
    """One rtpengine and its ng client. `up` is False while it is gone."""

    def __init__(
        self, config: MediaEngineConfig, *, dtmf_dest: str, log_path: Path, recording_dir: Path | None = None
    ) -> None:
        self.config = config
        # Where a managed engine writes the pcaps of recorded calls (site_node/sip/recorder.py).
        self.recording_dir = recording_dir
        self.managed = not config.ng
        self.ng_address = config.ng or f"127.0.0.1:{free_udp_port()}"
        self.dtmf_dest = dtmf_dest
        self.log_path = log_path
        self.client = NgClient(self.ng_address, config.request_timeout_s)
        self.up = False
        self.restarts: list[float] = []
        self.gave_up = False
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        # At most one ping asked out of turn (suspect), owned and cancelled at stop.
        self._check: asyncio.Task[None] | None = None
        self._stopping = False
        self._on_lost: list[Callable[[str], None]] = []

    def on_lost(self, listener: Callable[[str], None]) -> None:
        self._on_lost.append(listener)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    def command(self) -> list[str]:
        c = self.config
        cmd = [
            c.binary, "--config-file=none", "--table=-1", f"--interface={c.interface}",
            f"--listen-ng={self.ng_address}", f"--port-min={c.port_min}", f"--port-max={c.rtp_max}",
            "--foreground", "--log-stderr", f"--num-threads={c.threads}", f"--dtmf-log-dest={self.dtmf_dest}",
        ]  # fmt: skip
        level = os.environ.get(LOG_LEVEL_ENV, "")
        if is_digits(level):
            cmd.append(f"--log-level={level}")  # a diagnosis (7: every packet's fate, every ng command)
        if self.recording_dir is not None:
            # pcap: the only method of a userspace engine; the recorder makes each one a WAV.
            cmd += [f"--recording-dir={self.recording_dir}", "--recording-method=pcap"]
        return cmd

    async def start(self) -> None:
        await self.client.open()
        if self.managed:
            await self._spawn()
        elif not await self._wait_ready():
            raise RuntimeError(f"rtpengine at {self.ng_address} does not answer ng ping")
        self.up = True
        self._task = asyncio.create_task(self._watch(), name="media-engine-watch")

    async def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    *_die_with_parent(),
                    *self.command(),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                )
            except FileNotFoundError:
                raise RuntimeError(
                    f"{self.config.binary} is not installed (bash deploy/install-system-deps.sh)"
                ) from None
        if not await self._wait_ready():
            await self._terminate()
            raise RuntimeError(f"rtpengine did not answer on {self.ng_address} (log: {self.log_path})")
        log.info("rtpengine pid %s, ng %s, rtp %s-%s", self._proc.pid, self.ng_address,
                 self.config.port_min, self.config.rtp_max)  # fmt: skip

    async def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.returncode is not None:
                return False
            if await self.client.ping():
                return True
        return False

    async def _watch(self) -> None:
        while not self._stopping:
            if self.managed and self._proc is not None:
                code = await self._proc.wait()
                if self.stopping():
                    return
                self._lost(f"rtpengine exited ({code})")
                await self._restart()
            else:
                await asyncio.sleep(PING_INTERVAL_S)
                alive = await self.client.ping()
                if not alive and self.up:
                    self._lost("rtpengine does not answer ping")
                elif alive and not self.up:
                    log.info("rtpengine at %s answers again", self.ng_address)
                    self.up = True
            if self.gave_up:
                return

    def stopping(self) -> bool:
        return self._stopping

    def _lost(self, why: str) -> None:
        if not self.up:
            return
        self.up = False
        log.error("media engine lost: %s", why)
        for listener in self._on_lost:
            listener(why)

    def suspect(self) -> None:
        """An ng request went unanswered: a given engine is pinged at once, not at the next beat."""
        if self.up and not self.managed and self._task is not None and self._check is None:
            self._check = asyncio.get_running_loop().create_task(self._check_now(), name="media-engine-check")
            self._check.add_done_callback(self._checked)

    def _checked(self, task: asyncio.Task[None]) -> None:
        if self._check is task:
            self._check = None

    async def _check_now(self) -> None:
        if not await self.client.ping():
            self._lost("rtpengine does not answer")

    async def _restart(self) -> None:
        now = time.monotonic()
        window = self.config.restart_window_s
        self.restarts = [t for t in self.restarts if now - t < window]
        if len(self.restarts) >= self.config.max_restarts:
            # The bound: a crashing engine is not restarted in a loop; the site refuses new SIP
            # calls (503) until an operator restarts it.
            log.error("rtpengine restarted %d times in %.0f s: giving up", len(self.restarts), window)
            self.gave_up = True
            return
        self.restarts.append(now)
        try:
            await self._spawn()
        except RuntimeError as exc:
            log.error("rtpengine restart failed: %s", exc)
            await self._restart()
            return
        self.up = True
        log.info("rtpengine restarted (%d in the window)", len(self.restarts))

    async def _terminate(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            async with asyncio.timeout(STOP_GRACE_S):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def stop(self) -> None:
        self._stopping = True
        self.up = False
        for task in (self._check, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._terminate()
        self.client.close()
