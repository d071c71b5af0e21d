"""The mixing bridge: a call's parties heard together, by a real mixer (GStreamer's live
`audiomixer`, run by `gst-launch-1.0` as a supervised process), never by Python.

rtpengine 10.5 relays and forks media but cannot mix, so whisper, barge-in (and monitor, heard as
one stream) take a bridge: each party's side of the call in rtpengine is paired with one leg of
the bridge (site_node/sip/supervision.py does the pairing), and the bridge sends each leg the mix
of the parties that leg may hear. A leg is a UDP port the bridge receives on and the engine's port
it sends to; everything is G.711 A-law at 8 kHz (rtpengine transcodes if a party speaks otherwise).

Changing who hears whom (monitor -> whisper -> barge) changes the mix live where the system has
PyGObject for GStreamer (Debian's python3-gi, gir1.2-gstreamer-1.0): the bridge is then the small
host `mixer_host.py`, every leg's mixer takes every other leg through a `volume` element and sends
through a `valve`, and a change of mix is a few property lines on its stdin (no gap). Without it,
or when a party joins or leaves, the process restarts on the same ports (a gap of a fraction of a
second). A bridge that dies on its own is reported (`on_died`), and the call is paired back
without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from site_node.media import ports
from site_node.media.engine import _die_with_parent

log = logging.getLogger(__name__)

GST = "gst-launch-1.0"
# The live mixer's host runs on the system's Python, which has Debian's PyGObject.
SYSTEM_PYTHON = "/usr/bin/python3"
MIXER_HOST = Path(__file__).with_name("mixer_host.py")
STOP_GRACE_S = 2.0
# How long the live mixer may take to say it listens (a Python and GStreamer start, on a busy
# machine); gst-launch has no such line, so only a refusal within GST_REFUSAL_S is seen there.
READY_S = 30.0
GST_REFUSAL_S = 0.3
# The jitter buffer of each input, and the mixer's own latency (ms): small, a supervisor talks live.
JITTER_MS = 60
MIX_LATENCY_MS = 40
PACKET_MS = 20
_RTP_CAPS = "application/x-rtp,media=audio,clock-rate=8000,encoding-name=PCMA,payload=8"


class BridgeError(Exception):
    """The bridge could not be started (no GStreamer, or the process exited at once)."""


@dataclass(frozen=True, slots=True)
class Leg:
    """One party on the bridge: the bridge receives its voice on `listen`, sends it the mix to
    `send_to` (the engine's port for that party)."""

    name: str
    listen: int
    send_to: int


def free_rtp_port(host: str = "127.0.0.1") -> int:
    """An even UDP port for a leg, from the site's bridge range (site_node/media/ports.py), never
    inside rtpengine's. `host` is the pool's (the site's media interface)."""
    try:
        return ports.pool().take()
    except ports.NoFreePort as exc:
        raise BridgeError(str(exc)) from None


def pipeline(legs: Sequence[Leg], hears: Mapping[str, Sequence[str]], host: str = "127.0.0.1") -> list[str]:
    """The gst-launch description of a bridge: every leg's voice decoded once (a tee), each leg
    sent the mix of the legs it hears (none: silence is not sent, the leg gets nothing)."""
    parts = _inputs(legs, hears, host)
    for leg in legs:
        ins = hears.get(leg.name, ())
        if not ins:
            continue
        parts += _mixer(leg, host)
        for i in ins:
            parts += [f"in_{i}.", "!", "queue", "!", f"mix_{leg.name}."]
    return parts


@functools.cache
def live_mixing() -> bool:
    """The system can change a bridge's mix live: its Python has PyGObject and GStreamer's typelib
    (looked up on disk, no process started)."""
    if not Path(SYSTEM_PYTHON).exists() or not Path("/usr/lib/python3/dist-packages/gi/__init__.py").exists():
        return False
    return any(Path("/usr/lib").glob("*/girepository-1.0/Gst-1.0.typelib"))


def _inputs(legs: Sequence[Leg], hears: Mapping[str, Sequence[str]], host: str) -> list[str]:
    """Both descriptions begin alike: the mix checked, then every leg's voice received and decoded
    once, into a tee its mixers take it from."""
    _check(legs, hears)
    return [part for leg in legs for part in _input(leg, host)]


def _input(leg: Leg, host: str) -> list[str]:
    return [
        # reuse=false: a port another process holds is an error at start, not a voice split
        # between two sockets (udpsrc's default shares the port).
        "udpsrc", f"address={host}", f"port={leg.listen}", "reuse=false", f"caps={_RTP_CAPS}", "!",
        "rtpjitterbuffer", f"latency={JITTER_MS}", "!", "rtppcmadepay", "!", "alawdec", "!",
        "audioconvert", "!", "audioresample", "!", "audio/x-raw,format=S16LE,rate=8000,channels=1", "!",
        "tee", f"name=in_{leg.name}",
        # A tee needs a branch always: a voice nobody hears goes here.
        f"in_{leg.name}.", "!", "queue", "!", "fakesink", "sync=false", "async=false",
    ]  # fmt: skip


def _mixer(leg: Leg, host: str, gate: str = "") -> list[str]:
    # 20 ms per buffer, so each RTP packet is 20 ms of G.711 (the mixer's default is 10 ms).
    valve = ["valve", f"name=gate_{leg.name}", f"drop={gate}", "!"] if gate else []
    return [
        "audiomixer", f"name=mix_{leg.name}", f"latency={MIX_LATENCY_MS * 1_000_000}",
        "ignore-inactive-pads=true", f"output-buffer-duration={PACKET_MS * 1_000_000}",
        "start-time-selection=first", "!", "audioconvert", "!", "alawenc", "!", "rtppcmapay", "pt=8", "!",
        *valve, "udpsink", f"host={host}", f"port={leg.send_to}", "sync=false", "async=false",
    ]  # fmt: skip


def _check(legs: Sequence[Leg], hears: Mapping[str, Sequence[str]]) -> None:
    names = [leg.name for leg in legs]
    if len(set(names)) != len(names):
        raise ValueError("two legs with one name")
    for out, ins in hears.items():
        if out not in names or any(i not in names or i == out for i in ins):
            raise ValueError(f"leg {out} hears {list(ins)}: not legs of this bridge, or itself")


def live_pipeline(
    legs: Sequence[Leg], hears: Mapping[str, Sequence[str]], host: str = "127.0.0.1"
) -> list[str]:
    """The description of a live bridge: every leg's mixer takes every other leg through a
    `volume` element named `v_<leg>_<other>` (1 heard, 0 not), and sends through a `valve` named
    `gate_<leg>` (dropping while the leg hears nobody: silence is not sent)."""
    parts = _inputs(legs, hears, host)
    for leg in legs:
        ins = hears.get(leg.name, ())
        parts += _mixer(leg, host, gate="false" if ins else "true")
        for other in legs:
            if other.name != leg.name:
                level = 1 if other.name in ins else 0
                parts += [f"in_{other.name}.", "!", "queue", "!", "volume", f"name=v_{leg.name}_{other.name}",
                          f"volume={level}", "!", f"mix_{leg.name}."]  # fmt: skip
    return parts


def live_changes(legs: Sequence[Leg], hears: Mapping[str, Sequence[str]]) -> list[str]:
    """The property lines that make a live bridge mix as `hears` says."""
    _check(legs, hears)
    lines: list[str] = []
    for leg in legs:
        ins = hears.get(leg.name, ())
        lines.append(f"gate_{leg.name} drop {'false' if ins else 'true'}")
        others = [o.name for o in legs if o.name != leg.name]
        lines += [f"v_{leg.name}_{o} volume {1 if o in ins else 0}" for o in others]
    return lines


class MixBridge:
    """One bridge process for one call. `start` (re)starts it, `rehear` changes its mix (live, or
    by a restart), `relink` changes its legs (a restart); `stop` ends it."""

    def __init__(
        self, name: str, legs: Sequence[Leg], log_path: Path, host: str = "127.0.0.1",
        *, live: bool | None = None,
    ) -> None:  # fmt: skip
        self.name = name
        # The mix changed live (mixer_host.py) or by a restart (gst-launch-1.0).
        self.live = live_mixing() if live is None else live
        # Changes of mix made live, without a restart.
        self.retunes = 0
        self.legs = list(legs)
        self.host = host
        self.log_path = log_path
        self.hears: dict[str, list[str]] = {}
        self.on_died: Callable[[MixBridge, int], None] = lambda bridge, code: None
        self.starts = 0
        # The live mixer's `ok` answers to property lines, counted per process (rehear waits for
        # its own), and a wake-up for whoever waits for them.
        self._confirmed = 0
        self._answered = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        self._holds_ports = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    async def start(self, hears: Mapping[str, Sequence[str]]) -> None:
        if self.live:
            command = [SYSTEM_PYTHON, str(MIXER_HOST), *live_pipeline(self.legs, hears, self.host)]
        else:
            binary = shutil.which(GST)
            if binary is None:
                raise BridgeError(f"{GST} is not installed (bash deploy/install-system-deps.sh)")
            command = [binary, "-q", *pipeline(self.legs, hears, self.host)]
        await self._end_process()
        if not self._holds_ports:
            try:
                ports.pool().pin(leg.listen for leg in self.legs)
            except ports.NoFreePort as exc:
                raise BridgeError(str(exc)) from None
            self._holds_ports = True
        self._stopping = False
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self._proc = await asyncio.create_subprocess_exec(
                *_die_with_parent(), *command,
                stdin=asyncio.subprocess.PIPE if self.live else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if self.live else out, stderr=out,
            )  # fmt: skip
        self.hears = {k: list(v) for k, v in hears.items()}
        self.starts += 1
        self._confirmed = 0
        proc = self._proc
        if self.live:
            await self._until_ready(proc)
        else:
            # A description GStreamer refuses ends the process at once: say so, not a silent call.
            with contextlib.suppress(TimeoutError):
                # One-shot (a start): a lost cancel goes on to the next step of this start, no loop.
                code = await asyncio.wait_for(proc.wait(), GST_REFUSAL_S)  # noqa: TID251
                raise BridgeError(f"the mixing bridge exited at once ({code}; log: {self.log_path})")
        self._watch = asyncio.get_running_loop().create_task(self._follow(proc), name=f"bridge-{self.name}")
        log.info("bridge %s: pid %s, %s", self.name, proc.pid, self.hears)

    async def rehear(self, hears: Mapping[str, Sequence[str]]) -> None:
        """Who hears whom changed: the same legs, a new mix (live: told to the running mixer, and
        returned once it answered that it took every line of it)."""
        wanted = {k: list(v) for k, v in hears.items()}
        proc = self._proc
        if wanted == self.hears and self.pid is not None:
            return
        if self.live and proc is not None and proc.stdin is not None and self.pid is not None:
            lines = live_changes(self.legs, hears)
            target = self._confirmed + len(lines)
            try:
                proc.stdin.write("".join(f"{line}\n" for line in lines).encode())
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise BridgeError(f"the live mixer is gone: {exc}") from exc
            await self._until_confirmed(proc, target)
            self.hears = wanted
            self.retunes += 1
            log.info("bridge %s: mix changed live, %s", self.name, self.hears)
            return
        await self.start(hears)

    async def relink(self, legs: Sequence[Leg], hears: Mapping[str, Sequence[str]]) -> None:
        """The parties on the bridge, or who hears whom, changed: a new mix on the legs' ports
        (nothing restarts when neither changed)."""
        if list(legs) == self.legs:
            await self.rehear(hears)
            return
        self.legs = list(legs)
        await self.start(hears)

    async def _until_ready(self, proc: asyncio.subprocess.Process) -> None:
        """The live mixer's `ready` (every port bound), or a BridgeError with the process ended."""
        assert proc.stdout is not None
        try:
            # One-shot (a start): a lost cancel reads the ready line, no loop.
            line = await asyncio.wait_for(proc.stdout.readline(), READY_S)  # noqa: TID251
        except TimeoutError:
            line = b""
        if line.strip() != b"ready":
            await self._end_process()
            raise BridgeError(f"the mixing bridge did not start ({line!r}; log: {self.log_path})")

    async def _until_confirmed(self, proc: asyncio.subprocess.Process, target: int) -> None:
        """The live mixer answered every line of a change: from now on each leg gets the new mix
        (what it mixed before is still in flight for a jitter buffer's length)."""
        deadline = asyncio.get_running_loop().time() + READY_S
        while True:
            self._answered.clear()
            if self._confirmed >= target:
                return
            if proc is not self._proc or proc.returncode is not None:
                raise BridgeError("the live mixer is gone before it took the new mix")
            left = deadline - asyncio.get_running_loop().time()
            try:
                async with asyncio.timeout(max(left, 0.0)):
                    await self._answered.wait()
            except TimeoutError:
                raise BridgeError(f"the live mixer did not take the new mix in {READY_S:.0f} s") from None

    async def _follow(self, proc: asyncio.subprocess.Process) -> None:
        if proc.stdout is not None:
            # The live mixer's answers are read, so its pipe never fills and blocks the mix; each
            # `ok` is a line of a change taken.
            while line := await proc.stdout.readline():
                if line.startswith(b"ok ") and proc is self._proc:
                    self._confirmed += 1
                    self._answered.set()
        self._answered.set()  # EOF: a waiter sees the process gone
        code = await proc.wait()
        if self._stopping or proc is not self._proc:
            return
        log.error("bridge %s: the mixer exited (%s)", self.name, code)
        self.on_died(self, code)

    async def _end_process(self) -> None:
        proc, watch = self._proc, self._watch
        self._stopping = True
        self._proc, self._watch = None, None
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        proc.terminate()
        try:
            # One-shot (the end of a mixer): a lost cancel only skips the kill of an ended process.
            await asyncio.wait_for(proc.wait(), STOP_GRACE_S)  # noqa: TID251
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def stop(self) -> None:
        await self._end_process()
        if self._holds_ports:
            ports.pool().give_back(leg.listen for leg in self.legs)
            self._holds_ports = False
        # One log per bridged call: kept only when the mixer said something (an error).
        await asyncio.to_thread(_drop_if_empty, self.log_path)


def _drop_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.stat().st_size == 0:
            path.unlink()
