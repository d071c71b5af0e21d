"""The mixing bridges' UDP ports: drawn from the site's own range, disjoint from rtpengine's.

Ports asked of the kernel (bind to port 0) came from the ephemeral range, where the RTP ranges of
the site's rtpengine (and of other sites and tests on the host) also lie: a bridge could take a
port the engine was about to offer. The pool hands out even ports (RTP's convention) from
the top `sip.media.bridge_ports` of the site's range, in turn, so a port given back is the last one
handed out again.

A port handed out is reserved; a bridge that starts pins its ports until it stops, so two
running bridges never share one. A reservation never pinned (the bridge was not set up: no
phone, the supervisor did not answer) lapses after `RESERVED_S`: nobody has to give it back.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable

# The range when no site configured one (a bench or test process): vcc.config's default's.
DEFAULT_RANGE = (30900, 30999)
# How long a reservation holds without a bridge started on it: beyond any ring timeout.
RESERVED_S = 600.0


class NoFreePort(Exception):
    """Every port of the range is reserved, pinned or bound by another process."""


class PortPool:
    def __init__(self, low: int, high: int, host: str = "127.0.0.1") -> None:
        if low > high:
            raise ValueError(f"bridge port range {low}-{high} is empty")
        self.low, self.high, self.host = low, high, host
        self._ports = [p for p in range(low + low % 2, high, 2)]  # an even port and the odd one above
        if not self._ports:
            raise ValueError(f"bridge port range {low}-{high} holds no even port with its odd neighbour")
        self._next = 0
        self._reserved: dict[int, float] = {}
        self._pinned: set[int] = set()

    def __contains__(self, port: int) -> bool:
        return self.low <= port <= self.high

    def take(self) -> int:
        """A port nobody holds, free now (with its RTCP neighbour); reserved for the caller."""
        now = time.monotonic()
        for _ in range(len(self._ports)):
            port = self._ports[self._next]
            self._next = (self._next + 1) % len(self._ports)
            if port in self._pinned:
                continue
            since = self._reserved.get(port)
            if since is not None and now - since < RESERVED_S:
                continue
            if not _bindable(self.host, port):
                continue  # another process (another site's bridge, a test) has it
            self._reserved[port] = now
            return port
        raise NoFreePort(f"no free bridge port in {self.low}-{self.high} (sip.media.bridge_ports)")

    def pin(self, ports: Iterable[int]) -> None:
        """A bridge starts on `ports`: held until `give_back`. A port of the range another
        running bridge holds is refused (NoFreePort) and nothing is pinned."""
        mine = [p for p in ports if p in self]
        clash = [p for p in mine if p in self._pinned]
        if clash:
            raise NoFreePort(f"bridge ports {clash} are held by another bridge")
        self._pinned.update(mine)
        for p in mine:
            self._reserved.pop(p, None)

    def give_back(self, ports: Iterable[int]) -> None:
        for p in ports:
            self._pinned.discard(p)
            self._reserved.pop(p, None)

    def held(self) -> set[int]:
        now = time.monotonic()
        return self._pinned | {p for p, t in self._reserved.items() if now - t < RESERVED_S}


def _bindable(host: str, port: int) -> bool:
    for p in (port, port + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((host, p))
            except OSError:
                return False
    return True


# The process's pool (one site node per process), made on first use.
_current: dict[str, PortPool] = {}


def use_range(low: int, high: int, host: str = "127.0.0.1") -> PortPool:
    """The process's bridge ports from now on (the site node sets its configured range)."""
    _current["pool"] = PortPool(low, high, host)
    return _current["pool"]


def pool() -> PortPool:
    if "pool" not in _current:
        _current["pool"] = PortPool(*DEFAULT_RANGE)
    return _current["pool"]
