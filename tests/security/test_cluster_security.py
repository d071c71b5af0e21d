"""A real local province (separate processes, etcd with TLS): what a stranger on the network gets,
and what central's audit log shows afterwards."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import aetcd
import grpc
import pytest
import yaml

from tests.helpers import eventually
from tests.integration.support import password_hash
from tests.site_node.test_shipper import calls
from tools.province.cluster import Cluster
from tools.province.generate import DEFAULT_PASSWORD, SiteSpec, generate_province
from tools.province.netutil import free_port
from vcc import rpc
from vcc.tls import DESKTOP
from vcc.v1 import central_pb2, central_pb2_grpc, cti_pb2, cti_pb2_grpc

pytestmark = pytest.mark.cluster
Code = grpc.StatusCode


async def _start(folder: Path) -> Cluster:
    config = generate_province(
        [
            SiteSpec("gz", "Guangzhou", trunk_channels=4, agents={"general": 2}),
            SiteSpec("sz", "Shenzhen", trunk_channels=4, agents={"general": 1}),
        ],
        etcd_endpoint="127.0.0.1:2379",
        central_listen=f"127.0.0.1:{free_port()}",
        database_url=f"sqlite+aiosqlite:///{folder / 'central.db'}",
        password_hash=password_hash(),
        outbox_dir=folder / "outbox",
    )
    path = folder / "province.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return await Cluster.start(path, folder / "run", fresh_ports=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One province for both tests: neither changes it (the strangers are refused, the audit
    only grows, and each test looks for its own entries)."""
    started = asyncio.run(_start(tmp_path_factory.mktemp("security")))
    try:
        yield started
    finally:
        asyncio.run(started.stop())


def vcc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools", *args], capture_output=True, text=True, timeout=60, check=False
    )


async def test_strangers_are_refused_and_what_happened_is_audited(cluster: Cluster) -> None:
    central = cluster.config.central.listen
    gz = cluster.config.site("gz").listen
    # Plaintext to central, to a site and to etcd: refused.
    for address in (central, gz):
        async with grpc.aio.insecure_channel(address) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await central_pb2_grpc.CentralServiceStub(ch).GetProvinceStatus(
                    central_pb2.GetProvinceStatusRequest(), timeout=3
                )
            assert info.value.code() == Code.UNAVAILABLE
    host, _, port = cluster.addresses.etcd.rpartition(":")
    plain = aetcd.Client(host=host, port=int(port), timeout=2)
    with pytest.raises((aetcd.ClientError, TimeoutError, OSError)):
        await plain.put(b"/vcc/gd/central/leader", b"impostor")
    await plain.close()

    # A desktop certificate (a desktop server, the robots) cannot ingest call records at central.
    async with rpc.channel(central, persona=DESKTOP) as ch:
        request = central_pb2.IngestCallEventsRequest(site_id="gz", events=calls("forged", 1, 1))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await central_pb2_grpc.CentralServiceStub(ch).IngestCallEvents(request, timeout=3)
        assert info.value.code() == Code.PERMISSION_DENIED

    # A failed login and a login at gz, through the desktop persona.
    code = cluster.config.site("gz").agents[0].code
    async with rpc.channel(gz, persona=DESKTOP) as ch:
        stub = cti_pb2_grpc.AgentDesktopServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Login(
                cti_pb2.LoginRequest(idempotency_key=uuid.uuid4().hex, agent_code=code, password="000000"),
                timeout=10,
            )
        await stub.Login(
            cti_pb2.LoginRequest(
                idempotency_key=uuid.uuid4().hex, agent_code=code, password=DEFAULT_PASSWORD
            ),
            timeout=10,
        )

    async def audited() -> list[dict[str, object]] | None:
        done = await asyncio.to_thread(
            vcc, "audit", "--config", str(cluster.config_path), "--json", "--since", "1h"
        )
        assert done.returncode == 0, done.stderr
        entries = [json.loads(line) for line in done.stdout.splitlines()]
        actions = {(e.get("actor"), e.get("action")) for e in entries}
        wanted = {
            (f"agent:{code}", "login-failed"),
            (f"agent:{code}", "login"),
            ("desktop/robots", "permission-denied"),
            ("central/1", "config-sync"),
        }
        return entries if wanted <= actions else None

    entries = await eventually(audited, timeout_s=20, interval_s=0.5, what="central's audit log has it all")
    login = next(e for e in entries if e["action"] == "login")
    assert login["site_id"] == "gz" and "cn=desktop-robots" in str(login["source"])
    denied = next(e for e in entries if e["action"] == "permission-denied")
    assert denied["target"] == "/vcc.v1.CentralService/IngestCallEvents"
    assert (
        await asyncio.to_thread(vcc, "audit", "--config", str(cluster.config_path), "--who", "nobody")
    ).stdout == ""


async def test_etcd_keys_are_writable_only_by_their_owner(cluster: Cluster) -> None:
    from tests.helpers import eventually as until
    from vcc.membership import central_leader_key, site_key
    from vcc.tls import _TlsEtcdClient

    assert cluster.tls is not None
    host, _, port = cluster.addresses.etcd.rpartition(":")
    prefix, province = cluster.config.etcd.prefix, cluster.config.province.id
    leader_key = central_leader_key(prefix, province).encode()
    gz_key = site_key(prefix, province, "gz").encode()

    def client(stem: str) -> aetcd.Client:
        return _TlsEtcdClient(host, int(port), 3, cluster.tls.files(stem))  # type: ignore[union-attr]

    async def current(key: bytes) -> bytes | None:
        async with client("tool-cli") as reader:
            got = await reader.get(key)
            return None if got is None else bytes(got.value)

    async def gz_registered() -> bool:
        return await current(gz_key) is not None

    await until(gz_registered, what="gz registered in etcd")
    leader = await current(leader_key)
    assert leader is not None
    # Another site, a tool, a desktop or the trunk gateway: neither the leader key nor gz's key.
    for stem in ("site-sz", "tool-cli", "desktop-robots", "trunk-gateway"):
        for key in (leader_key, gz_key):
            c = client(stem)
            with pytest.raises(aetcd.ClientError):
                await c.put(key, b"impostor")
            await c.close()
    # Readers read; a desktop or trunk certificate reads nothing either.
    for stem in ("desktop-robots", "trunk-gateway"):
        c = client(stem)
        with pytest.raises(aetcd.ClientError):
            await c.get(leader_key)
        await c.close()
    # The leader is the same; gz's key still holds gz's own summary (it refreshes it itself).
    assert await current(leader_key) == leader
    now = await current(gz_key)
    assert now is not None and b"impostor" not in now and b'"site_id": "gz"' in now
