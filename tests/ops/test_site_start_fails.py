"""A site whose start fails half-way stops what it had started, nothing else, and says why.

Real parts: rtpengine as the site spawns it, the SIP trunk's UDP socket, the gRPC server, the
agent desktop's HTTP server; a real `vcc site` process for the operator's view of it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from site_node.app import SiteNode
from tests.integration.support import password_hash
from tests.sip.conftest import rtp_base
from tools.province.etcd_server import EtcdServer
from tools.province.generate import SiteSpec, generate_province
from tools.province.netutil import free_port
from tools.province.sip import add_sip
from vcc.config import parse_province

pytestmark = pytest.mark.cluster


def _province(tmp: Path, etcd: str) -> dict[str, Any]:
    raw = generate_province(
        [SiteSpec("gz", "Guangzhou", trunk_channels=2, agents={"general": 1})],
        etcd_endpoint=etcd,
        province_id=f"sf{os.getpid()}",
        central_listen=f"127.0.0.1:{free_port()}",  # no central: nothing is shipped
        database_url="sqlite+aiosqlite:///unused.db",
        password_hash=password_hash(),
        outbox_dir=tmp,
    )
    # No prompts built: the site logs it and would play silence (not what is tested here).
    add_sip(raw, prompts_dir=tmp / "no-prompts", rtp_base=rtp_base())
    raw["sites"][0]["desktop_listen"] = f"127.0.0.1:{free_port()}"
    return raw


@contextmanager
def _taken(listen: str, kind: socket.SocketKind) -> Iterator[None]:
    """Somebody else holds the site's port for the duration."""
    host, port = listen.rsplit(":", 1)
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, int(port)))
        if kind == socket.SOCK_STREAM:
            sock.listen()
        yield


def _free(listen: str, kind: socket.SocketKind) -> bool:
    host, port = listen.rsplit(":", 1)
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind((host, int(port)))
        except OSError:
            return False
    return True


def _exited(process: asyncio.subprocess.Process) -> bool:
    return process.returncode is not None


def _running_under(folder: Path) -> list[str]:
    """Command lines of live processes that name `folder` (rtpengine is given its recordings dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        if str(folder) in cmdline:
            found.append(cmdline)
    return found


# Which port is taken decides how far the start gets: SIP (rtpengine spawned, the trunk not
# bound), gRPC (rtpengine and the SIP trunk up, the server not), desk (all that and the server).
@pytest.mark.parametrize("taken", ["sip", "grpc", "desk"])
async def test_a_half_started_site_stops_each_part_it_started(
    tmp_path: Path, etcd_server: EtcdServer, taken: str
) -> None:
    raw = _province(tmp_path, etcd_server.endpoint)
    site = raw["sites"][0]
    listen, kind = {
        "sip": (site["sip"]["listen"], socket.SOCK_DGRAM),
        "grpc": (site["listen"], socket.SOCK_STREAM),
        "desk": (site["desktop_listen"], socket.SOCK_STREAM),
    }[taken]
    before = asyncio.all_tasks()
    node = SiteNode(parse_province(raw), "gz")
    with _taken(listen, kind):
        with pytest.raises(OSError if taken != "grpc" else RuntimeError):
            await node.start()
        assert node.media is not None and node.media._proc is not None
        rtpengine = node.media._proc
        assert not _exited(rtpengine)  # started before the failure: it must be stopped
        await node.stop()
    assert node.stop_failures == [] and node.stop_overruns == []
    assert _exited(rtpengine)
    assert _running_under(tmp_path) == []
    # Every socket the site had bound is free again, and no task of its is left running.
    if taken != "sip":
        assert _free(site["sip"]["listen"], socket.SOCK_DGRAM)
    if taken == "desk":
        assert _free(site["listen"], socket.SOCK_STREAM)
    assert {t for t in asyncio.all_tasks() if not t.done()} - before == set()


async def test_a_site_that_cannot_open_its_outbox_stops_cleanly(
    tmp_path: Path, etcd_server: EtcdServer
) -> None:
    raw = _province(tmp_path, etcd_server.endpoint)
    (tmp_path / "a-file").write_text("not a folder")
    raw["sites"][0]["outbox_path"] = str(tmp_path / "a-file" / "outbox.db")
    node = SiteNode(parse_province(raw), "gz")
    with pytest.raises(OSError):
        await node.start()
    await node.stop()  # nothing was started: nothing to stop, and no AttributeError
    assert node.stop_failures == [] and node.stop_overruns == []
    assert node.media is None


async def test_a_site_process_whose_port_is_taken_exits_1_with_one_readable_line(
    tmp_path: Path, etcd_server: EtcdServer
) -> None:
    raw = _province(tmp_path, etcd_server.endpoint)
    site = raw["sites"][0]
    config = tmp_path / "province.yaml"
    config.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with _taken(site["listen"], socket.SOCK_STREAM):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tools", "site", "--config", str(config), "--site", "gz",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), str(Path.cwd() / "proto")])},
        )  # fmt: skip
        _, err = await asyncio.wait_for(process.communicate(), 90)
    stderr = err.decode()
    assert process.returncode == 1, stderr
    assert f"site gz cannot start: Failed to bind to address {site['listen']}" in stderr
    assert "Traceback" not in stderr
    # The stop ran whole: rtpengine and the SIP trunk it had started were stopped, none failed.
    assert "site gz stopped in" in stderr
    assert "going on" not in stderr  # vcc.shutdown's words for a step that failed or overran
    assert _running_under(tmp_path) == []
    assert _free(site["sip"]["listen"], socket.SOCK_DGRAM)
