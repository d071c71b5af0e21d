"""HTTPS for the web pages (vcc.https): the operations dashboard served with central's own
certificate; plaintext refused at the handshake; a certificate of another CA trusted by neither
the tools nor Chromium; the login form over https in a real Chromium, its cookie Secure, HttpOnly
and SameSite; HSTS on every answer; a renewed certificate taken without a restart. The agent
desktop uses the same listener (`tests/web/test_desk_cluster.py` drives it over https)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.responses import Response

from central.db.engine import create_engine
from central.db.migrate import upgrade
from central.live_state import LiveState
from central.stats.service import StatsService
from central.web.login import OperatorSessions
from central.web.server import Dashboard
from tests.helpers import eventually
from tests.security.conftest import Certs
from tests.web.conftest import OPERATOR, OPERATOR_PASSWORD, SITES, need_chromium, operator_hash
from tools.province.certs import issue, make_ca
from tools.province.chromium import chromium
from vcc.config import OperatorConfig
from vcc.https import client_context, set_page_cookie
from vcc.tls import TlsFiles

pytestmark = pytest.mark.timeout(120)
WAIT_MS = 15_000
STEMS = ("ca.crt", "central-1.crt", "central-1.key")


async def serve(tmp_path: Path, files: TlsFiles) -> AsyncIterator[Dashboard]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'central.db'}"
    await upgrade(url)
    engine = create_engine(url)

    async def record(_entry: object) -> None:
        return None

    operators = OperatorSessions(
        [OperatorConfig(login=OPERATOR, password_hash=operator_hash(), role="operations")],
        record,  # type: ignore[arg-type]
        engine=engine,
    )
    live = LiveState(SITES, membership=list, max_state_age_s=2.0)
    dashboard = Dashboard(live, StatsService(engine), operators=operators, tls=files)
    await dashboard.start()
    try:
        yield dashboard
    finally:
        await dashboard.stop()
        await engine.dispose()


def copy_identity(src: Path, dst: Path) -> TlsFiles:
    """central-1's files in `dst`, replaced atomically (as `vcc certs` writes them)."""
    dst.mkdir(exist_ok=True)
    for name in STEMS:
        tmp = dst / f"{name}.tmp"
        shutil.copyfile(src / name, tmp)
        tmp.replace(dst / name)
    return TlsFiles(dst / "ca.crt", dst / "central-1.crt", dst / "central-1.key")


async def plain_answer(port: int) -> bytes:
    """What a plain HTTP request to the port gets back before the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


async def test_plaintext_is_refused_and_https_served(certs: Certs, tmp_path: Path) -> None:
    async for dash in serve(tmp_path, certs.files("central-1")):
        assert dash.url.startswith("https://")
        # No HTTP answer at all (no redirect either): the request is read as a bad handshake.
        answer = await plain_answer(dash.port)
        assert not answer.startswith(b"HTTP/")
        async with httpx.AsyncClient(timeout=10) as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get(f"http://127.0.0.1:{dash.port}/healthz")
        async with httpx.AsyncClient(verify=client_context(certs.folder / "ca.crt"), timeout=10) as http:
            reply = await http.get(f"{dash.url}healthz")
            assert reply.status_code == 200
            assert reply.headers["strict-transport-security"] == "max-age=31536000"
            login = await http.post(
                f"{dash.url}api/login", json={"user": OPERATOR, "password": OPERATOR_PASSWORD}
            )
            assert login.status_code == 200, login.text
            cookie = login.headers["set-cookie"].lower()
            for flag in ("secure", "httponly", "samesite=strict"):
                assert flag in cookie, cookie
            # The server is still well after the plaintext attempts.
            assert (await http.get(f"{dash.url}api/live")).status_code == 200


async def test_the_language_cookie_is_set_by_the_server_secure_httponly_and_strict(
    certs: Certs, tmp_path: Path
) -> None:
    """The dashboard's language toggle: the cookie comes in the server's Set-Cookie with the
    session cookie's flags (a page script's document.cookie was neither Secure nor HttpOnly)."""
    async for dash in serve(tmp_path, certs.files("central-1")):
        async with httpx.AsyncClient(verify=client_context(certs.folder / "ca.crt"), timeout=10) as http:
            chosen = await http.post(f"{dash.url}api/lang", json={"lang": "en"})
            assert chosen.status_code == 200 and chosen.json() == {"lang": "en"}
            cookie = chosen.headers["set-cookie"].lower()
            assert cookie.startswith("vcc_lang=en;") and "max-age=31536000" in cookie
            for flag in ("secure", "httponly", "samesite=strict", "path=/"):
                assert flag in cookie, cookie
            # The page after it speaks that language without being told again.
            assert '<html lang="en">' in (await http.get(f"{dash.url}login")).text
            # No language but zh and en, and only a JSON body (no cross-site form): no cookie.
            for bad in (
                http.post(f"{dash.url}api/lang", json={"lang": "fr"}),
                http.post(f"{dash.url}api/lang", json=["en"]),
                http.post(f"{dash.url}api/lang", data={"lang": "en"}),
            ):
                refused = await bad
                assert refused.status_code == 400 and "set-cookie" not in refused.headers
            assert http.cookies.get("vcc_lang") == "en"


def test_every_page_cookie_is_secure_httponly_and_strict_over_https() -> None:
    """The one way the dashboard and the desk set a cookie (the sessions' and the language's)."""
    response = Response()
    set_page_cookie(response, "vcc_lang", "en", secure=True, max_age=60)
    set_page_cookie(response, "vcc_plain", "x", secure=False)
    over_https, plain = (v.decode().lower() for k, v in response.raw_headers if k == b"set-cookie")
    for flag in ("secure", "httponly", "samesite=strict", "path=/", "max-age=60"):
        assert flag in over_https, over_https
    assert "secure" not in plain and "httponly" in plain and "samesite=strict" in plain


async def test_a_certificate_of_another_ca_is_not_trusted(certs: Certs, tmp_path: Path) -> None:
    # A server holding a certificate from another CA where the dashboard should be (a moved
    # address, an impostor on the network): the tools and the browser both refuse it.
    foreign = tmp_path / "foreign"
    make_ca(foreign, "gd")
    issue(foreign, "central", "1")
    async for dash in serve(
        tmp_path, TlsFiles(foreign / "ca.crt", foreign / "central-1.crt", foreign / "central-1.key")
    ):
        async with httpx.AsyncClient(verify=client_context(certs.folder / "ca.crt"), timeout=10) as http:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.get(f"{dash.url}healthz")
        need_chromium()
        from playwright.async_api import Error, async_playwright

        async with async_playwright() as pw, chromium(pw, certs.folder / "ca.crt") as browser:
            page = await browser.new_page()
            with pytest.raises(Error, match="ERR_CERT_AUTHORITY_INVALID"):
                await page.goto(f"{dash.url}login")


async def test_the_login_form_works_over_https_in_chromium(certs: Certs, tmp_path: Path) -> None:
    need_chromium()
    from playwright.async_api import async_playwright, expect

    async for dash in serve(tmp_path, certs.files("central-1")):
        async with async_playwright() as pw, chromium(pw, certs.folder / "ca.crt") as browser:
            page = await browser.new_page(locale="en-US")
            reply = await page.goto(f"{dash.url}report")
            assert reply is not None and reply.ok
            await expect(page).to_have_url(f"{dash.url}login?next=%2Freport&lang=en", timeout=WAIT_MS)
            await page.fill("#user", OPERATOR)
            await page.fill("#password", OPERATOR_PASSWORD)
            await page.click("button[type=submit]")
            await expect(page).to_have_url(f"{dash.url}report", timeout=WAIT_MS)
            assert (await page.evaluate("location.protocol")) == "https:"
            assert (await page.evaluate("window.isSecureContext")) is True
            [cookie] = [c for c in await page.context.cookies() if c["name"] == "vcc_ops"]
            assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            # HttpOnly: the page's own scripts never see the session.
            assert "vcc_ops" not in await page.evaluate("document.cookie")
            # The language toggle's cookie comes from the server with the same flags, and every
            # cookie the pages set is Secure, HttpOnly and SameSite=Strict.
            await page.click("#lang-toggle")
            await expect(page.locator("html")).to_have_attribute("lang", "zh-CN", timeout=WAIT_MS)

            async def with_language(context: Any = page.context) -> list[Any] | None:
                cookies = await context.cookies()
                return cookies if any(c["name"] == "vcc_lang" for c in cookies) else None

            cookies = await eventually(with_language, timeout_s=60, what="the language cookie")
            assert {c["name"] for c in cookies} == {"vcc_ops", "vcc_lang"}
            for c in cookies:
                assert c["secure"] and c["httpOnly"] and c["sameSite"] == "Strict", c
            assert [c["value"] for c in cookies if c["name"] == "vcc_lang"] == ["zh"]
            assert await page.evaluate("document.cookie") == ""


async def test_a_renewed_web_certificate_is_picked_up_without_a_restart(tmp_path: Path) -> None:
    # The hardest renewal, as for the gRPC servers: the files replaced by ones of a new CA. The
    # next handshake uses them; the process never restarts.
    old, new = tmp_path / "old", tmp_path / "new"
    for folder in (old, new):
        make_ca(folder, "gd")
        issue(folder, "central", "1")
    files = copy_identity(old, tmp_path / "live")

    async def healthy(ca: Path, url: str) -> bool:
        async with httpx.AsyncClient(verify=client_context(ca), timeout=10) as http:
            try:
                return (await http.get(f"{url}healthz")).status_code == 200
            except httpx.ConnectError as exc:
                assert "CERTIFICATE_VERIFY_FAILED" in str(exc)
                return False

    async for dash in serve(tmp_path, files):
        assert await healthy(old / "ca.crt", dash.url)
        assert not await healthy(new / "ca.crt", dash.url)
        copy_identity(new, tmp_path / "live")
        assert await healthy(new / "ca.crt", dash.url)
        assert not await healthy(old / "ca.crt", dash.url)
        # A renewal that cannot be used (a key that is not the certificate's) keeps the last good pair.
        shutil.copyfile(old / "central-1.key", tmp_path / "live" / "central-1.key.tmp")
        (tmp_path / "live" / "central-1.key.tmp").replace(tmp_path / "live" / "central-1.key")
        assert await healthy(new / "ca.crt", dash.url)


def test_the_client_context_trusts_the_province_ca_only(certs: Certs) -> None:
    ctx = client_context(certs.folder / "ca.crt")
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "vcc province gd CA"),),)]


def test_a_listen_host_the_certificate_does_not_name_is_warned_about(tmp_path: Path) -> None:
    from vcc.https import names_host

    make_ca(tmp_path, "gd")
    issued = issue(tmp_path, "site", "gz", hosts=["desk.gz.example", "10.1.2.3"])
    pem = issued.cert.read_bytes()
    for host in ("127.0.0.1", "localhost", "10.1.2.3", "DESK.gz.example", "0.0.0.0", "::"):
        assert names_host(pem, host), host
    for host in ("10.1.2.4", "desk.sz.example", "::1"):
        assert not names_host(pem, host), host


async def test_a_web_server_on_a_host_its_certificate_does_not_name_says_so(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    from starlette.applications import Starlette

    from vcc.https import WebListener

    for host, warned in (("127.0.0.1", False), ("127.0.0.2", True)):
        caplog.clear()
        web = WebListener(Starlette(), host, 0, certs.files("site-gz"), "desk-http")
        await web.start()
        await web.stop()
        assert ("does not name 127.0.0.2" in caplog.text) is warned, caplog.text
