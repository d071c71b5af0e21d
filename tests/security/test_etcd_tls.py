"""etcd with its own TLS and client certificates: plaintext and foreign certificates are refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aetcd
import pytest

from tests.security.conftest import Certs
from tools.province.certs import issue
from tools.province.etcd_server import EtcdServer
from vcc import tls


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[EtcdServer]:
    issue(certs.folder, "etcd", "server")
    server = EtcdServer(
        data_dir=tmp_path_factory.mktemp("etcd-tls") / "data", tls=certs.files("etcd-server")
    ).start()
    yield server
    server.stop()


def client(server: EtcdServer, files: tls.TlsFiles | None) -> aetcd.Client:
    host, _, port = server.endpoint.rpartition(":")
    if files is None:
        return aetcd.Client(host=host, port=int(port), timeout=2)
    return tls._TlsEtcdClient(host, int(port), 2, files)


async def test_a_province_certificate_reads_and_writes(etcd: EtcdServer, certs: Certs) -> None:
    async with client(etcd, certs.files("site-gz")) as c:
        await c.put(b"/vcc/test/key", b"gz")
        got = await c.get(b"/vcc/test/key")
        assert got is not None and got.value == b"gz"


@pytest.mark.parametrize("who", ["plaintext", "foreign-ca"])
async def test_plaintext_and_foreign_certificates_are_refused(
    etcd: EtcdServer, certs: Certs, who: str, tmp_path: Path
) -> None:
    files = None if who == "plaintext" else certs.foreign_files("site-gz")
    c = client(etcd, files)
    with pytest.raises((aetcd.ClientError, TimeoutError, OSError)):
        await c.put(b"/vcc/gd/central/leader", b"impostor")
    await c.close()
    async with client(etcd, certs.files("tool-cli")) as reader:
        assert await reader.get(b"/vcc/gd/central/leader") is None


def test_the_process_identity_picks_the_tls_client(monkeypatch: pytest.MonkeyPatch, certs: Certs) -> None:
    monkeypatch.delenv(tls.CA_ENV, raising=False)
    assert not isinstance(tls.etcd_client("127.0.0.1", 1), tls._TlsEtcdClient)
    for name, value in certs.files("site-gz").env().items():
        monkeypatch.setenv(name, value)
    assert isinstance(tls.etcd_client("127.0.0.1", 1), tls._TlsEtcdClient)


def test_a_node_refuses_to_run_as_another_identity(monkeypatch: pytest.MonkeyPatch, certs: Certs) -> None:
    # An environment inherited from a tool names the tool's certificate: the site will not use it.
    for name, value in certs.files("tool-cli").env().items():
        monkeypatch.setenv(name, value)
    with pytest.raises(tls.TlsError, match="tool/cli, not of site-gz"):
        tls.node_files(certs.folder / "ca.crt", "site-gz")
    for name, value in certs.files("site-gz").env().items():
        monkeypatch.setenv(name, value)
    assert tls.node_files(certs.folder / "ca.crt", "site-gz").cert == certs.folder / "site-gz.crt"
