"""HTTPS for the web pages (central's operations dashboard, a site's agent desktop and console).

Where the province has `tls`, a web server listens with TLS only, with the node's own certificate
(`vcc certs` gives every node's certificate the serverAuth usage and the hosts `localhost`,
`127.0.0.1` and each `--host`), and no plaintext listener: a browser that speaks plain HTTP to the
port gets its connection closed at the handshake, before any request (or password) is read. There
is no redirecting listener on purpose: the redirect would come only after the browser had sent
its first request in clear (a login form posted to `http://` included). Every answer carries HSTS,
and every cookie the pages set (the sessions', the language's) is `Secure`, `HttpOnly` and
`SameSite=Strict` (set_page_cookie).

Browsers have no client certificate: the pages authenticate people by their password and session,
so the web servers do not ask for one (the gRPC servers do).

Rotation, as the gRPC servers: at each new handshake the certificate and key files are looked at
and, when they changed, loaded for that handshake and every later one (a pair that does not load
is logged and the old one kept). Connections already open keep their session.

Without `tls` (in-process unit tests only) the pages are plain HTTP, like every other link.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
from collections.abc import Generator
from pathlib import Path
from typing import Any

import uvicorn

from vcc.config import ProvinceConfig
from vcc.tls import TlsError, TlsFiles

log = logging.getLogger(__name__)

# One year, the usual HSTS preload figure: once a browser saw the page over HTTPS it never tries
# plain HTTP to that host again.
HSTS = b"max-age=31536000"
GRACEFUL_S = 2


def scheme(tls: object | None) -> str:
    return "http" if tls is None else "https"


# How long a page remembers a person's language (vcc_lang): a year, like the HSTS above.
LANGUAGE_COOKIE = "vcc_lang"
LANGUAGE_MAX_AGE_S = 31536000
LANGUAGES = ("zh", "en")


def set_page_cookie(
    response: Any, name: str, value: str, *, secure: bool, max_age: int | None = None
) -> None:
    """Every cookie the pages set, a session's or a language's: `Secure` (whenever the pages are
    served over https), `HttpOnly` (no page script reads it), `SameSite=Strict`, for the whole site.
    Set by the server only: a cookie a script writes can never be HttpOnly."""
    response.set_cookie(
        name, value, max_age=max_age, httponly=True, samesite="strict", path="/", secure=secure
    )


def delete_page_cookie(response: Any, name: str, *, secure: bool) -> None:
    response.delete_cookie(name, path="/", secure=secure, httponly=True, samesite="strict")


def web_url(config: ProvinceConfig, listen: str, path: str = "/") -> str:
    """The address of a web page the province serves at `listen` (https when it has `tls`)."""
    return f"{scheme(config.tls)}://{listen}{path}"


def province_ca(config: ProvinceConfig) -> str | None:
    """The province CA's file (None: no tls, plain HTTP pages)."""
    return config.tls.ca_file if config.tls is not None else None


def client_context(ca_file: str | Path) -> ssl.SSLContext:
    """What a tool verifies a vcc web server with: the province CA only (never the system's)."""
    return ssl.create_default_context(cafile=str(ca_file))


def client_verify(config: ProvinceConfig) -> ssl.SSLContext | bool:
    """httpx's `verify=` for the province's web pages (True: plain HTTP, nothing to verify)."""
    ca = province_ca(config)
    return client_context(ca) if ca is not None else True


class RenewingContext:
    """A server SSL context that takes renewed certificate files at the next handshake."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._stamp = files.stamp()
        self.context = self._load()
        self._current = self.context
        # Called for every ClientHello (server_name None when the browser sends no SNI, as for an
        # IP address): the moment to look at the files.
        self.context.sni_callback = self._on_hello

    def _load(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["http/1.1"])
        try:
            ctx.load_cert_chain(self.files.cert, self.files.key)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"web server certificate {self.files.cert} / {self.files.key}: {exc}") from None
        return ctx

    def _on_hello(self, conn: Any, server_name: str | None, ctx: ssl.SSLContext) -> None:
        stamp = self.files.stamp()
        if stamp != self._stamp:
            try:
                self._current = self._load()
                log.info("TLS: renewed web certificate %s picked up", self.files.cert)
            except TlsError as exc:
                log.warning("renewed TLS files not usable, keeping the old ones: %s", exc)
            self._stamp = stamp
        if self._current is not self.context:
            conn.context = self._current


def with_hsts(app: Any) -> Any:
    """The ASGI app with `Strict-Transport-Security` on every answer."""

    async def hsts(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_with_hsts(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"strict-transport-security", HSTS)]
                message = {**message, "headers": headers}
            await send(message)

        await app(scope, receive, send_with_hsts)

    return hsts


def names_host(cert_pem: bytes, host: str) -> bool:
    """Whether a certificate names `host` (an address or a DNS name) among its SANs, as a browser
    checks it; an any-address listener (0.0.0.0, ::) can be reached by any name, so it counts."""
    if host in ("", "0.0.0.0", "::"):
        return True
    from cryptography import x509

    try:
        sans = (
            x509.load_pem_x509_certificate(cert_pem)
            .extensions.get_extension_for_class(x509.SubjectAlternativeName)
            .value
        )
    except (ValueError, x509.ExtensionNotFound):
        return False
    try:
        return ipaddress.ip_address(host) in sans.get_values_for_type(x509.IPAddress)
    except ValueError:
        return host.lower() in (n.lower() for n in sans.get_values_for_type(x509.DNSName))


class WebListener:
    """One web server inside the process's event loop: bound by start() (returns the port),
    TLS only when given the node's files; stop() ends it with uvicorn's grace period."""

    def __init__(self, app: Any, host: str, port: int, tls: TlsFiles | None, name: str) -> None:
        self._host = host
        self._port = port
        self._name = name
        self.tls = tls
        self._renewing = RenewingContext(tls) if tls is not None else None
        renewing = self._renewing
        self._app = with_hsts(app) if tls is not None else app
        self._config = uvicorn.Config(
            self._app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_S,
            ssl_context_factory=(lambda _c, _d: renewing.context) if renewing is not None else None,
        )
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def scheme(self) -> str:
        return scheme(self.tls)

    async def start(self) -> int:
        sock = socket.socket(socket.AF_INET6 if ":" in self._host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        if self.tls is None:
            log.warning("%s: no tls in the province config, serving plain HTTP", self._name)
        elif not names_host(self.tls.read()[1], self._host):
            log.warning(
                "%s: the certificate %s does not name %s: browsers will refuse the page "
                "(issue it with `vcc certs ... --host %s`)",
                self._name,
                self.tls.cert,
                self._host,
                self._host,
            )
        self._server = _EmbeddedServer(self._config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name=self._name)
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError(f"{self._name} stopped while starting")
            await asyncio.sleep(0.01)
        return self.port

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        self._server = self._task = None


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the process's own handlers decide when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield
