"""Fixtures of the SIP tests: prompts built once, a site node with its SIP trunk and rtpengine."""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

import pytest

from site_node.app import SiteNode
from site_node.media import ports
from site_node.sip.registrar import ha1
from tests.integration.support import password_hash
from tools.province.etcd_server import EtcdServer
from tools.province.generate import SiteSpec, generate_province
from tools.province.netutil import free_port
from tools.province.prompts import build_prompts
from tools.province.sip import add_sip
from vcc.config import ProvinceConfig, parse_province

for tool in ("rtpengine", "sipp", "espeak-ng", "sox"):
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is missing: bash deploy/install-system-deps.sh", pytrace=False)


# Every test agent's phone password (the config holds only its HA1).
PHONE_PASSWORD = "4321"


# Each test process's RTP ports: a slot of RTP_SLOT_PORTS UDP ports (a province of the tests takes
# up to rtp_base() + 1099) below the kernel's ephemeral range (32768-60999), held for the process's
# life by a lock every session on the machine sees. The slots were pid % 40 * 500 from 40000
# before: two sessions of two worktrees overlapped, and one's rtpengine took a port the other's
# peer still sent to; rtpengine learnt that stranger as the tie leg's peer and the far phone
# heard nothing (docs/RELIABILITY.md). Below the ephemeral range no socket bound to port 0 (an
# ear, a SIP listener, a mixer's sender) ever takes one of these ports either.
RTP_LOW, RTP_SLOT_PORTS, RTP_SLOTS = 10000, 1200, 17  # up to 30399: the bridges' default range is above
_slot_lock: list[IO[str]] = []


@functools.cache
def rtp_base() -> int:
    for slot in range(RTP_SLOTS):
        lock = open(f"/tmp/vcc-test-rtp-slot-{slot}.lock", "w")  # noqa: SIM115 (held until exit)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        _slot_lock.append(lock)
        return RTP_LOW + slot * RTP_SLOT_PORTS
    # Every slot held (17 sessions at once): share one, as before.
    return RTP_LOW + (os.getpid() % RTP_SLOTS) * RTP_SLOT_PORTS


@pytest.fixture(autouse=True, scope="session")
def _bridge_ports_of_this_worker() -> None:
    """Side-by-side xdist workers take bridges' ports from disjoint halves of the default range
    (each process's pool only knows its own bridges)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        low, high = ports.DEFAULT_RANGE
        half = (high - low + 1) // 2
        start = low + (int(worker[2:]) % 2) * half
        ports.use_range(start, start + half - 1)


@pytest.fixture(scope="session")
def prompts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("prompts")
    # Every voice the tests use: one province per language; with each, the example flows' prompts
    # (espeak-ng runs once per text on a machine: the build's cache links them in).
    for lang in ("en", "zh"):
        raw = sip_config_dict(folder, folder, "127.0.0.1:2379", lang=lang)
        build_prompts(parse_province(raw), folder)
    return folder


def sip_config_dict(
    tmp: Path, prompts: Path, etcd: str, *, channels: int = 3, agents: int = 1, lang: str = "en",
    busy_status: int = 503, session_min_se_s: int = 90,
) -> dict[str, Any]:  # fmt: skip
    raw = generate_province(
        [SiteSpec("gz", "Guangzhou", trunk_channels=channels, agents={"general": agents, "billing": 1})],
        etcd_endpoint=etcd,
        central_listen=f"127.0.0.1:{free_port()}",  # no central: records wait in the outbox
        database_url="sqlite+aiosqlite:///unused.db",
        password_hash=password_hash(),
        outbox_dir=tmp,
        ring_timeout_s=30,
        digit_timeout_s=8,
    )
    add_sip(raw, prompts_dir=prompts, rtp_base=rtp_base(), busy_status=busy_status, language=lang)
    raw["sites"][0]["sip"]["session_min_se_s"] = session_min_se_s
    for agent in raw["sites"][0]["agents"]:
        agent["sip_ha1"] = ha1(agent["code"], "vcc", PHONE_PASSWORD)
    return raw


def sip_config(tmp: Path, prompts: Path, etcd: EtcdServer, **kw: Any) -> ProvinceConfig:
    return parse_province(sip_config_dict(tmp, prompts, etcd.endpoint, **kw))


@pytest.fixture
async def sip_node(tmp_path: Path, etcd_server: EtcdServer, prompts_dir: Path) -> AsyncIterator[SiteNode]:
    node = SiteNode(sip_config(tmp_path, prompts_dir, etcd_server), "gz")
    await node.start()
    yield node
    await node.stop()
