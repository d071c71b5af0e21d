"""Debian's Chromium, as this machine's tools drive it headless through Playwright (never its own
browser download); the flags keep it off the closed network."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CERTUTIL = "certutil"
NODE_CA_ENV = "NODE_EXTRA_CA_CERTS"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextlib.asynccontextmanager
async def playwright(ca_file: str | Path | None) -> AsyncIterator[Any]:
    """Playwright whose own HTTP client (`page.request`, run by its Node.js driver, not by
    Chromium) trusts the province CA too: Node.js takes extra roots from `NODE_EXTRA_CA_CERTS`,
    read once when the driver starts."""
    from playwright.async_api import async_playwright

    started = async_playwright()
    saved = os.environ.get(NODE_CA_ENV)
    if ca_file is not None:
        os.environ[NODE_CA_ENV] = str(ca_file)
    try:
        pw = await started.__aenter__()
    finally:
        if saved is None:
            os.environ.pop(NODE_CA_ENV, None)
        else:
            os.environ[NODE_CA_ENV] = saved
    try:
        yield pw
    finally:
        await started.__aexit__(None, None, None)


async def launch(pw: Any, ca_file: str | Path | None, **options: Any) -> Any:
    """Headless Chromium (Playwright's `pw`) that trusts the province CA, as an operator's browser
    would once the CA is installed: Chromium on Linux takes its trusted roots from the user's NSS
    database (`$HOME/.pki/nssdb`), so the browser gets a home of its own whose database holds the
    CA (Debian's `certutil`, libnss3-tools), removed when the browser closes. No certificate error
    is ever ignored: a page served with a certificate of another CA fails to load. `ca_file` None:
    the province has no tls (plain HTTP pages)."""
    home = Path(tempfile.mkdtemp(prefix="vcc-chromium-"))
    try:
        if ca_file is not None:
            await asyncio.to_thread(trust_ca, home, Path(ca_file))
        options.setdefault("args", CHROMIUM_ARGS)
        env = {**os.environ, "HOME": str(home)}
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, env=env, **options)
    except BaseException:
        shutil.rmtree(home, ignore_errors=True)
        raise
    browser.on("disconnected", lambda _browser: shutil.rmtree(home, ignore_errors=True))
    return browser


@contextlib.asynccontextmanager
async def chromium(pw: Any, ca_file: str | Path | None, **options: Any) -> AsyncIterator[Any]:
    """`launch`, closed at the end of the block."""
    browser = await launch(pw, ca_file, **options)
    try:
        yield browser
    finally:
        await browser.close()


def trust_ca(home: Path, ca_file: Path) -> None:
    """`home/.pki/nssdb` with `ca_file` as a trusted issuer of web server certificates."""
    if shutil.which(CERTUTIL) is None:
        raise RuntimeError(f"{CERTUTIL} is missing: run deploy/install-system-deps.sh (libnss3-tools)")
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    for cmd in (
        [CERTUTIL, "-d", f"sql:{db}", "-N", "--empty-password"],
        [CERTUTIL, "-d", f"sql:{db}", "-A", "-t", "C,,", "-n", "vcc province CA", "-i", str(ca_file)],
    ):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip() or done.returncode}")
