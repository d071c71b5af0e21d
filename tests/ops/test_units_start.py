"""Central and a site started the way their systemd units start them: the unit's own ExecStart
line, NOTIFY_SOCKET pointing at a datagram socket this test owns, a watchdog period. Each says
READY=1 once it serves, feeds the watchdog, logs JSON lines with its ids, and on SIGTERM says
STOPPING=1 and exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.helpers import eventually
from tests.integration.support import password_hash
from tools.province.etcd_server import EtcdServer
from tools.province.generate import SiteSpec, generate_province
from tools.province.netutil import free_port
from vcc.sdnotify import Notifier

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
pytestmark = pytest.mark.cluster


class NotifySocket:
    """The service manager's end: a datagram socket that collects what the process says, read
    as it arrives (as systemd does). Read only while a test waits, the queue (10 datagrams on
    Linux) filled with watchdog pings while the other process started and stopped on a busy
    machine, and the STOPPING=1 sent meanwhile was dropped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._receive)

    def _receive(self) -> None:
        while True:
            try:
                raw = self.sock.recv(4096)
            except BlockingIOError:
                return
            self.messages.append(
                dict(line.split("=", 1) for line in raw.decode().splitlines() if "=" in line)
            )

    async def until(self, key: str, value: str = "1", timeout_s: float = 60.0) -> None:
        async def seen() -> bool:
            self._receive()
            return any(m.get(key) == value for m in self.messages)

        await eventually(seen, timeout_s=timeout_s, what=f"{key}={value} on {self.path.name}")

    def close(self) -> None:
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()


def exec_start(unit: str, instance: str, config: Path) -> list[str]:
    """The unit's ExecStart, with %i, the program and the config file of this test."""
    text = (UNITS / unit).read_text()
    line = next(row for row in text.splitlines() if row.startswith("ExecStart="))
    line = line.removeprefix("ExecStart=").replace("%i", instance).replace("$VCC_CENTRAL_ARGS", "")
    argv = shlex.split(line)
    assert argv[0] == "/opt/vcc/bin/vcc"
    return [
        sys.executable,
        "-m",
        "tools",
        *[str(config) if a == "/etc/vcc/province.yaml" else a for a in argv[1:]],
    ]


@pytest.fixture
def province(tmp_path: Path, etcd_server: EtcdServer) -> Iterator[Path]:
    config = generate_province(
        [SiteSpec("gz", "Guangzhou", trunk_channels=2, agents={"general": 1})],
        etcd_endpoint=etcd_server.endpoint,
        # A province of its own in the shared etcd.
        province_id=f"u{os.getpid()}",
        central_listen=f"127.0.0.1:{free_port()}",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        password_hash=password_hash(),
        outbox_dir=tmp_path / "outbox",
        lease_ttl_s=1,
    )
    path = tmp_path / "province.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    yield path


async def test_central_and_a_site_start_and_stop_as_their_units_say(tmp_path: Path, province: Path) -> None:
    procs: list[tuple[asyncio.subprocess.Process, NotifySocket, Path]] = []
    try:
        for unit, instance in (("vcc-central@.service", "1"), ("vcc-site@.service", "gz")):
            notify = NotifySocket(tmp_path / f"notify-{instance}.sock")
            log = tmp_path / f"{instance}.log"
            with log.open("wb") as out:
                proc = await asyncio.create_subprocess_exec(
                    *exec_start(unit, instance, province),
                    cwd=tmp_path,  # the unit's WorkingDirectory
                    env={**os.environ, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            procs.append((proc, notify, log))
            await notify.until("READY")
            # The watchdog is fed (every half period) from the running loop.
            await notify.until("WATCHDOG")
            assert proc.returncode is None, log.read_text()[-2000:]
        for proc, notify, _ in reversed(procs):
            proc.send_signal(signal.SIGTERM)
            await notify.until("STOPPING")
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        # --log-format json (from the units): every line is one JSON object, the site's with its id.
        for _, _, log in procs:
            lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
            assert lines and all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
        site_lines = [json.loads(line) for line in procs[1][2].read_text().splitlines() if line.strip()]
        assert all(line.get("site") == "gz" for line in site_lines)
    finally:
        for proc, notify, _ in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            notify.close()


async def test_the_notifier_speaks_the_protocol(tmp_path: Path) -> None:
    manager = NotifySocket(tmp_path / "n.sock")
    try:
        notifier = Notifier.from_env({"NOTIFY_SOCKET": str(manager.path), "WATCHDOG_USEC": "200000"})
        assert notifier.enabled and notifier.watchdog_s == pytest.approx(0.2)
        notifier.ready("serving")
        await manager.until("READY")
        assert manager.messages[0] == {"READY": "1", "STATUS": "serving"}
        await manager.until("WATCHDOG")
        await notifier.stopping()
        await manager.until("STOPPING")
        await notifier.close()
    finally:
        manager.close()
    # Outside systemd, or a watchdog meant for another process: nothing to do.
    assert not Notifier.from_env({}).notify(ready=1)
    assert (
        Notifier.from_env({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "5", "WATCHDOG_PID": "1"}).watchdog_s
        is None
    )
    assert Notifier.from_env({"NOTIFY_SOCKET": "@abstract"})._address == "\0abstract"
