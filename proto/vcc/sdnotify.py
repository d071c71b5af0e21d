"""systemd's readiness and watchdog protocol (sd_notify), over the NOTIFY_SOCKET datagram socket.

A unit with Type=notify waits for READY=1 before it counts the service as started; with
WatchdogSec it expects WATCHDOG=1 at least that often and restarts a process that stops sending
it. The watchdog is fed from the event loop itself, so a loop that is stuck (a blocking call, a
busy loop) stops feeding it and gets restarted. Outside systemd (no NOTIFY_SOCKET) every call
does nothing.

The protocol is one datagram of `KEY=value` lines to the socket named in NOTIFY_SOCKET (a path,
or an abstract address when it starts with '@'); sendto on a local datagram socket does not
block for long, so it is done on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping

from vcc.digits import is_digits

log = logging.getLogger(__name__)

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"


class Notifier:
    """One process's link to its service manager; build it with `Notifier.from_env()`."""

    def __init__(self, address: str | None, watchdog_s: float | None) -> None:
        self._address = address
        self.watchdog_s = watchdog_s
        self._sock: socket.socket | None = None
        self._watchdog: asyncio.Task[None] | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        raw = env.get(NOTIFY_SOCKET_ENV, "")
        address = ("\0" + raw[1:]) if raw.startswith("@") else raw or None
        watchdog_s: float | None = None
        usec = env.get(WATCHDOG_USEC_ENV, "")
        pid = env.get(WATCHDOG_PID_ENV, "")
        # WATCHDOG_PID names the process the watchdog is meant for (not a child that inherited it).
        if is_digits(usec) and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog_s = int(usec) / 1e6
        return cls(address, watchdog_s)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send `KEY=value` lines (keys upper-cased): notify(ready=1, status="serving")."""
        if self._address is None:
            return False
        payload = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload, self._address)
            return True
        except OSError as exc:  # the manager went away, or the socket is full: never fatal
            log.debug("sd_notify %r failed: %s", payload, exc)
            return False

    def ready(self, status: str = "") -> None:
        self.notify(ready=1, **({"status": status} if status else {}))
        if self.watchdog_s is not None and self._watchdog is None:
            self._watchdog = asyncio.create_task(self._feed(self.watchdog_s / 2), name="sd-watchdog")

    def status(self, text: str) -> None:
        self.notify(status=text)

    async def stopping(self) -> None:
        """STOPPING=1, and the watchdog stops (a graceful stop may take longer than its period)."""
        self.notify(stopping=1)
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None

    async def _feed(self, period_s: float) -> None:
        while True:
            self.notify(watchdog=1)
            await asyncio.sleep(period_s)

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
