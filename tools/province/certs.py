"""`vcc certs`: a province CA and every node's certificate (the `cryptography` package).

Every certificate names its identity in a SAN URI, spiffe://vcc/<kind>/<name>, and in its CN as
`<kind>-<name>` (the name etcd would use for its roles). Kinds: a site (`site/gz`), a central
replica (`central/1`), an operator's tool (`tool/cli`), agent desktop servers and robots
(`desktop/robots`), the exchange's trunk gateway (`trunk/gateway`) and the etcd server. Every
certificate also names the hosts it serves on (localhost and 127.0.0.1, plus `hosts`), because
each node is both a server and a client.

Files, in one folder: `ca.crt`, `ca.key` (keep it offline in production), `<kind>-<name>.crt`
and `.key` (mode 0600).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vcc import tls
from vcc.authz import identity_uri
from vcc.config import ProvinceConfig, parse_province

CA_STEM = "ca"
DEFAULT_DAYS = 365
LOCAL_HOSTS = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class Issued:
    kind: str
    name: str
    cert: Path
    key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_suffix(".tmp")
    # Created 0600: a private key is never readable by others, not even for an instant.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    # Replaced atomically: a server that reloads it never reads half a file.
    tmp.replace(path)


def make_ca(folder: Path, province_id: str, days: int = DEFAULT_DAYS * 10) -> Path:
    """A new CA in `folder` (ca.crt, ca.key); returns the certificate's path."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"vcc province {province_id} CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(folder / f"{CA_STEM}.key", key)
    _write_cert(folder / f"{CA_STEM}.crt", cert)
    return folder / f"{CA_STEM}.crt"


def _load_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((folder / f"{CA_STEM}.crt").read_bytes())
    key = serialization.load_pem_private_key((folder / f"{CA_STEM}.key").read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise tls.TlsError(f"{folder / CA_STEM}.key: not an EC key")
    return cert, key


def issue(folder: Path, kind: str, name: str, hosts: Iterable[str] = (), days: int = DEFAULT_DAYS) -> Issued:
    """`<kind>-<name>.crt/.key` in `folder`, signed by the CA there (replaced if present: renewal)."""
    if kind not in tls.KINDS:
        raise tls.TlsError(f"kind: one of {', '.join(tls.KINDS)}, not {kind!r}")
    ca_cert, ca_key = _load_ca(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(identity_uri(kind, name)),
        # The names a client dialling this identity checks (vcc.tls.identity_dns).
        x509.DNSName(tls.identity_dns(kind, name)),
    ]
    if kind == tls.CENTRAL:
        sans.append(x509.DNSName(tls.central_server()))
    if kind == tls.ETCD:
        sans.append(x509.DNSName(tls.etcd_server()))
    for host in dict.fromkeys([*LOCAL_HOSTS, *hosts]):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{kind}-{name}")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        # Every node is a server and a client of the others.
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    stem = folder / f"{kind}-{name}"
    _write_key(stem.with_suffix(".key"), key)
    _write_cert(stem.with_suffix(".crt"), cert)
    return Issued(kind, name, stem.with_suffix(".crt"), stem.with_suffix(".key"))


ETCD_ROOT_STEM = "etcd-root"


def issue_root(folder: Path, days: int = DEFAULT_DAYS) -> tls.TlsFiles:
    """etcd's `root` user (CN=root): sets etcd's users and roles up. No vcc identity: refused by
    every vcc server."""
    ca_cert, ca_key = _load_ca(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "root")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    stem = folder / ETCD_ROOT_STEM
    _write_key(stem.with_suffix(".key"), key)
    _write_cert(stem.with_suffix(".crt"), cert)
    return tls.TlsFiles(folder / f"{CA_STEM}.crt", stem.with_suffix(".crt"), stem.with_suffix(".key"))


def province_identities(config: ProvinceConfig, central_replicas: int = 1) -> list[tuple[str, str]]:
    """(kind, name) of every process of a province, and of the tools' personas."""
    out = [(tls.SITE, s.id) for s in config.sites]
    out += [(tls.CENTRAL, str(n)) for n in range(1, central_replicas + 1)]
    out += [(kind, stem.split("-", 1)[1]) for kind, stem in tls.PERSONA_STEMS.items()]
    out.append((tls.ETCD, "server"))
    return out


def province_certs(
    config: ProvinceConfig,
    folder: Path,
    *,
    central_replicas: int = 1,
    hosts: Sequence[str] = (),
    days: int = DEFAULT_DAYS,
) -> list[Issued]:
    """The CA (made unless present) and a fresh certificate for every identity of the province, and
    etcd's `root` (it sets etcd's users and roles up: `vcc etcd roles`)."""
    if not (folder / f"{CA_STEM}.crt").exists():
        make_ca(folder, config.province.id)
    issued = [
        issue(folder, kind, name, hosts, days) for kind, name in province_identities(config, central_replicas)
    ]
    root = issue_root(folder, days)
    return [*issued, Issued("etcd", "root", root.cert, root.key)]


def site_stem(site_id: str) -> str:
    return f"{tls.SITE}-{site_id}"


def central_stem(replica_id: str) -> str:
    return f"{tls.CENTRAL}-{replica_id}"


# --- a local cluster's certificates (tools/province/cluster.py) ---------------------------------------------

CLUSTER_CERTS_DIR = "certs"


@dataclass
class ClusterTls:
    """The certificates of a run folder's province, and the environment each process gets."""

    folder: Path
    # Made by the cluster; False: the operator's own CA (its etcd roles set up when the folder holds
    # etcd's root certificate, as `vcc certs province` makes it).
    own_ca: bool = False
    saved_env: dict[str, str | None] | None = None

    @property
    def ca(self) -> Path:
        return self.folder / f"{CA_STEM}.crt"

    def files(self, stem: str) -> tls.TlsFiles:
        return tls.TlsFiles(self.ca, self.folder / f"{stem}.crt", self.folder / f"{stem}.key")

    def tool(self) -> tls.TlsFiles:
        return self.files(tls.PERSONA_STEMS[tls.TOOL])

    def etcd(self) -> tls.TlsFiles:
        return self.files(f"{tls.ETCD}-server")

    def etcd_root(self) -> tls.TlsFiles:
        return self.files(ETCD_ROOT_STEM)

    def has_etcd_root(self) -> bool:
        root = self.etcd_root()
        return root.cert.is_file() and root.key.is_file()

    def child_env(self, env: dict[str, str], stem: str) -> dict[str, str]:
        """`env` for a child process whose identity is `stem` (and no tool personas)."""
        out = {k: v for k, v in env.items() if k != tls.DIR_ENV}
        out.update(self.files(stem).env())
        return out

    def adopt_tool(self) -> None:
        """The launching process (a tool) dials as the tool, and as its personas; undone by restore()."""
        if self.saved_env is None:
            names = (tls.CA_ENV, tls.CERT_ENV, tls.KEY_ENV, tls.DIR_ENV)
            self.saved_env = {name: os.environ.get(name) for name in names}
        tls.adopt(self.tool(), persona_dir=self.folder)

    def restore(self) -> None:
        if self.saved_env is None:
            return
        for name, value in self.saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self.saved_env = None


def cluster_tls(run: Path, raw: dict[str, object], config_path: Path, central_replicas: int) -> ClusterTls:
    """Fresh certificates in `run/certs` (unless the operator's config names its own CA), and the
    run config's `tls.ca_file` pointing at them (absolute: tools read the run config from anywhere)."""
    given = raw.get("tls")
    if isinstance(given, dict) and given.get("ca_file"):
        ca = Path(str(given["ca_file"]))
        ca = ca if ca.is_absolute() else (config_path.resolve().parent / ca).resolve()
        raw["tls"] = {**given, "ca_file": str(ca)}
        return ClusterTls(ca.parent)
    folder = run / CLUSTER_CERTS_DIR
    if folder.exists():
        for old in folder.iterdir():
            old.unlink()
    config = parse_province({k: v for k, v in raw.items() if k != "tls"})
    province_certs(config, folder, central_replicas=central_replicas)
    raw["tls"] = {"ca_file": str(folder / f"{CA_STEM}.crt")}
    return ClusterTls(folder, own_ca=True)


def adopt_tool_identity(config: ProvinceConfig) -> None:
    """A command-line tool dials as `tool-cli` (beside the CA), unless its environment names one."""
    if config.tls is None or os.environ.get(tls.CA_ENV):
        return
    folder = Path(config.tls.ca_file).parent
    stem = tls.PERSONA_STEMS[tls.TOOL]
    tls.adopt(tls.TlsFiles(Path(config.tls.ca_file), folder / f"{stem}.crt", folder / f"{stem}.key"), folder)
