"""etcd's roles for an operator's own CA (issue 11): `vcc certs province` makes etcd's root
certificate with the others, `vcc etcd roles` sets the users up on a real etcd (again: harmless),
and then each key is writable only by its owner; without the root certificate it says so."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aetcd
import pytest
import yaml
from typer.testing import CliRunner

from tests.integration.support import password_hash
from tools.cli import app
from tools.province.etcd_server import EtcdServer
from tools.province.generate import SiteSpec, generate_province
from vcc import tls
from vcc.membership import central_leader_key, site_key


@pytest.fixture(scope="module")
def province(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, EtcdServer]]:
    folder = tmp_path_factory.mktemp("own-ca")
    certs = folder / "operator-certs"
    config = generate_province(
        [
            SiteSpec("gz", "Guangzhou", 1, agents={"general": 1}),
            SiteSpec("sz", "Shenzhen", 1, agents={"general": 1}),
        ],
        etcd_endpoint="127.0.0.1:2379",
        central_listen="127.0.0.1:1",
        database_url=f"sqlite+aiosqlite:///{folder / 'central.db'}",
        password_hash=password_hash(),
        outbox_dir=folder / "outbox",
    )
    path = folder / "province.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    made = CliRunner().invoke(app, ["certs", "province", "--config", str(path), "--out", str(certs)])
    assert made.exit_code == 0, made.output
    assert "etcd/root" in made.output
    server = EtcdServer(
        data_dir=folder / "etcd",
        tls=tls.TlsFiles(certs / "ca.crt", certs / "etcd-server.crt", certs / "etcd-server.key"),
    ).start()
    config["etcd"]["endpoints"] = [server.endpoint]
    config["tls"] = {"ca_file": str(certs / "ca.crt")}
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    yield path, certs, server
    server.stop()


def client(server: EtcdServer, certs: Path, stem: str) -> aetcd.Client:
    host, _, port = server.endpoint.rpartition(":")
    files = tls.TlsFiles(certs / "ca.crt", certs / f"{stem}.crt", certs / f"{stem}.key")
    return tls._TlsEtcdClient(host, int(port), 3, files)


async def may_write(server: EtcdServer, certs: Path, stem: str, key: str) -> bool:
    c = client(server, certs, stem)
    try:
        await c.put(key.encode(), stem.encode())
    except aetcd.ClientError:
        return False
    finally:
        await c.close()
    return True


async def test_vcc_etcd_roles_makes_each_key_writable_only_by_its_owner(
    province: tuple[Path, Path, EtcdServer],
) -> None:
    path, certs, server = province
    raw = yaml.safe_load(path.read_text())
    prefix, province_id = raw["etcd"].get("prefix", "/vcc"), raw["province"]["id"]
    leader, gz = central_leader_key(prefix, province_id), site_key(prefix, province_id, "gz")
    # Before: any province certificate writes the leader key.
    assert await may_write(server, certs, "site-sz", leader)
    for _ in range(2):  # the second run finds everything there and changes nothing
        done = await asyncio.to_thread(CliRunner().invoke, app, ["etcd", "roles", "--config", str(path)])
        assert done.exit_code == 0, done.output
    # After: the leader key is central's, gz's membership gz's; the others read at most.
    assert not await may_write(server, certs, "site-sz", leader)
    assert not await may_write(server, certs, "site-sz", gz)
    assert not await may_write(server, certs, "tool-cli", leader)
    assert not await may_write(server, certs, "desktop-robots", gz)
    assert await may_write(server, certs, "site-gz", gz)
    assert await may_write(server, certs, "central-1", leader)
    async with client(server, certs, "tool-cli") as reader:
        got = await reader.get(leader.encode())
    assert got is not None and got.value == b"central-1"


def test_without_the_root_certificate_it_says_what_to_do(
    province: tuple[Path, Path, EtcdServer], tmp_path: Path
) -> None:
    path, _, _ = province
    done = CliRunner().invoke(app, ["etcd", "roles", "--config", str(path), "--certs", str(tmp_path)])
    assert done.exit_code == 1
    assert "etcd-root.crt" in done.output and "vcc certs province" in done.output
