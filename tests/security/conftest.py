"""Certificates for the security tests: one province CA with every identity, and a foreign CA."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tools.province.certs import issue, make_ca
from vcc.tls import TlsFiles

IDENTITIES = [
    ("site", "gz"),
    ("site", "sz"),
    ("site", "fs"),
    ("site", "xx"),  # signed by the province CA, but no such site in the config
    ("central", "1"),
    ("tool", "cli"),
    ("desktop", "robots"),
    ("trunk", "gateway"),
    ("etcd", "server"),
]


@dataclass(frozen=True)
class Certs:
    folder: Path
    foreign: Path

    def files(self, stem: str) -> TlsFiles:
        return TlsFiles(self.folder / "ca.crt", self.folder / f"{stem}.crt", self.folder / f"{stem}.key")

    def foreign_files(self, stem: str) -> TlsFiles:
        """A certificate from another CA (trusting only that CA)."""
        return TlsFiles(self.foreign / "ca.crt", self.foreign / f"{stem}.crt", self.foreign / f"{stem}.key")


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    folder = tmp_path_factory.mktemp("certs")
    make_ca(folder, "gd")
    for kind, name in IDENTITIES:
        issue(folder, kind, name)
    foreign = tmp_path_factory.mktemp("foreign-ca")
    make_ca(foreign, "gd")
    issue(foreign, "site", "gz")
    issue(foreign, "tool", "cli")
    return Certs(folder, foreign)
