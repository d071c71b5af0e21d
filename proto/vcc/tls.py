"""Mutual TLS for every vcc link: which files a process uses, and the gRPC / etcd credentials.

A province has one CA (`tls.ca_file` in the province config, public). Every process has its own
certificate and key, never named in the shared province file: they come from the environment
(`VCC_TLS_CERT`, `VCC_TLS_KEY`) or, by convention, from the CA's folder (`site-gz.crt`,
`central-1.crt`...: what `vcc certs province` writes). A process adopts its identity once at
start (`adopt`); from then on `vcc.rpc.channel` and `etcd_client` dial with it, like the dial map.

A tool that acts as several clients at once (the simulator is the trunk gateway, the robot
agents' desktop and an operator's CLI) also has `VCC_TLS_DIR`, the folder of those personas'
certificates, and names the persona per channel (`rpc.channel(address, persona=TRUNK)`).

Rotation: a server reads its files again at each new handshake when they changed (gRPC's dynamic
server credentials); a client reads them at each new channel. See docs/SECURITY.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aetcd
import grpc
from aetcd import rpc as etcd_rpc
from aetcd import watcher as etcd_watcher

log = logging.getLogger(__name__)

CA_ENV = "VCC_TLS_CA"
CERT_ENV = "VCC_TLS_CERT"
KEY_ENV = "VCC_TLS_KEY"
DIR_ENV = "VCC_TLS_DIR"

# Identity kinds (the second part of a certificate's SAN URI, spiffe://vcc/<kind>/<name>).
SITE = "site"
CENTRAL = "central"
TOOL = "tool"
DESKTOP = "desktop"
TRUNK = "trunk"
ETCD = "etcd"
KINDS = (SITE, CENTRAL, TOOL, DESKTOP, TRUNK, ETCD)
# A server's identity, as its certificate names it for a client's host-name check (a DNS SAN):
# `<name>.<kind>.vcc.internal`, and every central replica's also `central.vcc.internal`. A client
# that knows whom it dials checks that name instead of the address's host (vcc.rpc.channel's
# `expect`): a site dialling site X refuses any other province certificate answering there.
IDENTITY_DOMAIN = "vcc.internal"


def identity_dns(kind: str, name: str | None = None) -> str:
    """The DNS name that proves `kind/name` (any member of `kind` when name is None)."""
    return f"{name}.{kind}.{IDENTITY_DOMAIN}" if name else f"{kind}.{IDENTITY_DOMAIN}"


def site_server(site_id: str) -> str:
    return identity_dns(SITE, site_id)


def central_server() -> str:
    """Any central replica (a site follows whichever leads)."""
    return identity_dns(CENTRAL)


def etcd_server() -> str:
    """Any member of the province's etcd cluster."""
    return identity_dns(ETCD)


# The file stem of each persona a tool may take (`vcc certs province` issues them).
PERSONA_STEMS = {TOOL: "tool-cli", DESKTOP: "desktop-robots", TRUNK: "trunk-gateway"}


class TlsError(Exception):
    """A certificate or key that cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class TlsFiles:
    """One identity: the province CA, and this identity's certificate chain and private key (PEM)."""

    ca: Path
    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        out = []
        for what, path in (("CA", self.ca), ("certificate", self.cert), ("key", self.key)):
            try:
                out.append(path.read_bytes())
            except OSError as exc:
                raise TlsError(f"{what} {path}: cannot read: {exc.strerror}") from None
        return out[0], out[1], out[2]

    def stamp(self) -> tuple[float, ...]:
        """Changes when any of the three files is replaced (rotation)."""
        stamps = []
        for path in (self.ca, self.cert, self.key):
            try:
                st = path.stat()
                stamps += [st.st_mtime, float(st.st_size), float(st.st_ino)]
            except OSError:
                stamps += [-1.0, -1.0, -1.0]
        return tuple(stamps)

    def env(self) -> dict[str, str]:
        return {CA_ENV: str(self.ca), CERT_ENV: str(self.cert), KEY_ENV: str(self.key)}


def node_files(ca_file: str | Path, stem: str) -> TlsFiles:
    """A node's identity: the environment's cert/key if set, else `<stem>.crt/.key` beside the CA."""
    ca = Path(ca_file)
    cert = os.environ.get(CERT_ENV, "")
    key = os.environ.get(KEY_ENV, "")
    if not (cert and key):
        return TlsFiles(ca, ca.parent / f"{stem}.crt", ca.parent / f"{stem}.key")
    from vcc.authz import _identity_of_pem  # (authz imports this module)

    try:
        who = _identity_of_pem(Path(cert).read_bytes())
    except OSError as exc:
        raise TlsError(f"{CERT_ENV} {cert}: cannot read: {exc.strerror}") from None
    # A node never runs as another identity (an environment inherited from a tool, say).
    if who is None or f"{who.kind}-{who.name}" != stem:
        raise TlsError(f"{CERT_ENV} {cert} is the certificate of {who or 'no vcc identity'}, not of {stem}")
    return TlsFiles(ca, Path(cert), Path(key))


def adopt(files: TlsFiles, persona_dir: Path | None = None) -> None:
    """This process dials every link with `files` from now on (the process-wide identity)."""
    files.read()  # fails now, naming the file, rather than at the first dial
    os.environ.update(files.env())
    if persona_dir is not None:
        os.environ[DIR_ENV] = str(persona_dir)
    log.info("TLS identity %s (CA %s)", files.cert, files.ca)


def forget() -> None:
    """Back to no process identity (a tool that stopped its cluster)."""
    for name in (CA_ENV, CERT_ENV, KEY_ENV, DIR_ENV):
        os.environ.pop(name, None)


def process_files(persona: str | None = None) -> TlsFiles | None:
    """The identity this process dials with (None: plaintext, TLS not configured)."""
    ca = os.environ.get(CA_ENV, "")
    if not ca:
        return None
    folder = os.environ.get(DIR_ENV, "")
    if persona is not None and folder:
        stem = PERSONA_STEMS.get(persona, persona)
        return TlsFiles(Path(ca), Path(folder) / f"{stem}.crt", Path(folder) / f"{stem}.key")
    cert, key = os.environ.get(CERT_ENV, ""), os.environ.get(KEY_ENV, "")
    if not (cert and key):
        raise TlsError(f"{CA_ENV} is set but {CERT_ENV}/{KEY_ENV} are not: no identity to dial with")
    return TlsFiles(Path(ca), Path(cert), Path(key))


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    ca, cert, key = files.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Client certificates required; renewed files are picked up at the next handshake."""
    ca, cert, key = files.read()
    current = [files.stamp()]

    def config(ca: bytes, cert: bytes, key: bytes) -> Any:
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def fetch() -> Any:
        # Called by gRPC before each handshake; None keeps the configuration in use.
        stamp = files.stamp()
        if stamp == current[0]:
            return None
        try:
            new = config(*files.read())
        except TlsError as exc:
            log.warning("renewed TLS files not usable, keeping the old ones: %s", exc)
            return None
        current[0] = stamp
        log.info("TLS: renewed certificate %s picked up", files.cert)
        return new

    return grpc.dynamic_ssl_server_credentials(
        config(ca, cert, key), fetch, require_client_authentication=True
    )


# --- etcd -----------------------------------------------------------------------------------------


class _TlsEtcdClient(aetcd.Client):  # type: ignore[misc]
    """aetcd dials plaintext only; this is its connect() over a TLS channel with our identity."""

    def __init__(self, host: str, port: int, timeout: float | None, files: TlsFiles) -> None:
        super().__init__(host=host, port=port, timeout=timeout)
        self._files = files

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        target = f"{self._host}:{self._port}"
        # An etcd member must answer (its certificate names etcd.vcc.internal), not any other
        # certificate of the province at that address.
        self.channel = grpc.aio.secure_channel(
            target,
            channel_credentials(self._files),
            options=[("grpc.ssl_target_name_override", etcd_server())],
        )
        self.kvstub = etcd_rpc.KVStub(self.channel)
        self.clusterstub = etcd_rpc.ClusterStub(self.channel)
        self.leasestub = etcd_rpc.LeaseStub(self.channel)
        self.maintenancestub = etcd_rpc.MaintenanceStub(self.channel)
        self._watcher = etcd_watcher.Watcher(
            etcd_rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
        )
        self._connected.set()


async def close_etcd_client(client: aetcd.Client, timeout_s: float = 2.0) -> None:
    """Close an etcd client within a bound: aetcd's close waits for its watches, and a dead or
    cut etcd can keep that wait open for ever (a stop, or a cancelled watcher, must not hang)."""
    try:
        async with asyncio.timeout(timeout_s):
            await client.close()
    except Exception as exc:
        log.debug("closing the etcd client: %s", exc)


def etcd_client(host: str, port: int, timeout: float | None = None) -> aetcd.Client:
    """An etcd client with this process's identity (plaintext when TLS is not configured)."""
    files = process_files()
    if files is None:
        return aetcd.Client(host=host, port=port, timeout=timeout)
    return _TlsEtcdClient(host, port, timeout, files)
