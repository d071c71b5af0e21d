"""Small helpers for launching local servers: free ports."""

from __future__ import annotations

import os
import random
import socket

# Listening ports are taken below the kernel's ephemeral range (32768-60999 on Linux), so that no
# client's outgoing connection can be given a port between our check and the server's bind (a
# site once failed to start, "Address already in use", beside a busy test lane), and above where
# system services listen. Side-by-side pytest-xdist workers draw from disjoint halves.
LOW, HIGH = 10000, 30000
_handed_out: set[int] = set()
_rng = random.SystemRandom()  # a test seeding `random` must not make two processes agree


def _worker_range() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        half = (HIGH - LOW) // 2
        low = LOW + (int(worker[2:]) % 2) * half
        return range(low, low + half)
    return range(LOW, HIGH)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the caller binds it soon after); never the same twice
    in one process, so two servers of one cluster cannot be handed one port."""
    ports = _worker_range()
    for _ in range(200):
        port = _rng.choice(ports)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    # A crowded range: let the kernel choose, as before.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
