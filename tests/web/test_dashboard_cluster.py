"""The dashboard of a real province (etcd, central, two site processes) in a real headless Chromium,
during traffic: figures move without a reload, and a city killed with SIGKILL turns stale, then
unreachable, its numbers gone rather than frozen. Screenshots in the test's folder and run/screenshots."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.helpers import eventually
from tests.integration.support import assert_reconciled, password_hash, traffic_with_robots
from tests.web.conftest import need_chromium
from tools.province.chromium import launch, playwright
from tools.province.cluster import Cluster
from tools.province.generate import (
    DEMO_OPERATOR,
    DEMO_OPERATOR_PASSWORD,
    SiteSpec,
    generate_province,
    write_province,
)
from tools.province.netutil import free_port
from vcc.https import client_verify, province_ca

if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

# Condition waits (not timing assertions): generous for a loaded 2-core machine.
WAIT_MS = 20_000
LOADED, KILLED = "gz", "sz"
# Records every status the killed city's row shows (the page re-renders on each push; polling
# the DOM every 20 ms catches every push of 0.5 s).
WATCH_STATUS = """
() => {
  window.__statuses = [];
  setInterval(() => {
    const row = document.querySelector('[data-site-row="sz"]');
    const badge = row && row.querySelector('[data-status]');
    const status = badge ? badge.getAttribute('data-status') : null;
    const waiting = row ? row.querySelector('[data-field="waiting"]').textContent : null;
    const seen = window.__statuses;
    const prev = seen[seen.length - 1];
    if (!prev || prev.status !== status || prev.waiting !== waiting)
      seen.push({status, waiting, at: Date.now()});
  }, 20);
}
"""


async def start_province(tmp_path: Path, dashboard_port: int) -> Cluster:
    config = generate_province(
        [
            SiteSpec(LOADED, "广州 Guangzhou", trunk_channels=30, agents={"general": 3}),
            SiteSpec(KILLED, "深圳 Shenzhen", trunk_channels=10, agents={"general": 1}),
        ],
        etcd_endpoint="127.0.0.1:2379",
        central_listen=f"127.0.0.1:{free_port()}",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        password_hash=password_hash(),
        outbox_dir=tmp_path / "outbox",
        dashboard_listen=f"127.0.0.1:{dashboard_port}",
        # A killed city's state stays young for max_state_age_s after its stream broke: the
        # dashboard shows it stale for that long, then (state too old, or lease gone) unreachable.
        routing={"mode": "isolated", "max_state_age_s": 3.0},
        lease_ttl_s=5,
    )
    path = await asyncio.to_thread(write_province, config, tmp_path / "province.yaml")
    return await Cluster.start(path, tmp_path / "run", seed_customers=20)


async def test_dashboard_of_a_live_province_in_chromium(tmp_path: Path, screenshots: Path) -> None:
    need_chromium()
    from playwright.async_api import expect

    port = free_port()
    base = f"https://127.0.0.1:{port}"
    async with (
        await start_province(tmp_path, port) as cluster,
        httpx.AsyncClient(base_url=base, verify=client_verify(cluster.config)) as http,
    ):

        async def serving() -> bool:
            try:
                return (await http.get("/healthz", timeout=2)).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(serving, timeout_s=30, what="central's dashboard answering")
        async with playwright(province_ca(cluster.config)) as pw:
            browser = await launch(pw, province_ca(cluster.config))
            try:
                page = await browser.new_page(viewport={"width": 1500, "height": 1000})
                await log_in(page, base, cluster)
                row = page.locator(f'[data-site-row="{KILLED}"] [data-status]')
                await expect(row).to_have_attribute("data-status", "up", timeout=WAIT_MS)
                await page.evaluate("window.__noReload = 42")  # a reload would wipe it out
                await page.evaluate(WATCH_STATUS)
                views, records = await traffic_with_robots(
                    cluster,
                    {LOADED: 3.0},
                    duration_s=10.0,
                    during=watch_and_kill(page, cluster, tmp_path, screenshots),
                    robots_at=[LOADED],
                    handle_s=0.6,
                    patience_s=None,
                )
                assert await page.evaluate("window.__noReload") == 42
                # Every call of the loaded city was recorded; the dashboard's today counts them all.
                assert_reconciled(views, records)
                offered = page.locator(f'[data-site-row="{LOADED}"] [data-field="offered"]')
                await expect(offered).to_have_text(str(len(views)), timeout=WAIT_MS)
            finally:
                await browser.close()


async def log_in(page: Page, base: str, cluster: Cluster) -> None:
    """Refused without a login (the page and the API), a wrong password answered in words, then
    the demo operator logs in by the form and lands on the page it asked for; all audited."""
    from playwright.async_api import expect

    await page.goto(f"{base}/?lang=en")
    await expect(page).to_have_url(re.compile(r"/login\?next=%2F%3Flang%3Den"))
    assert await page.locator("#view").count() == 0  # nothing of the dashboard is on the page
    api = await page.request.get(f"{base}/api/live")
    assert api.status == 401 and (await api.json())["error"] == "login-required"
    await page.get_by_label("User name").fill(DEMO_OPERATOR)
    await page.get_by_label("Password").fill("not-the-password")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("alert")).to_have_text("user name or password is wrong")
    await page.get_by_role("link", name="中文").click()
    await page.get_by_label("用户名").fill(DEMO_OPERATOR)
    await page.get_by_label("密码").fill(DEMO_OPERATOR_PASSWORD)
    await page.get_by_role("button", name="登录").click()
    await expect(page).to_have_url(f"{base}/?lang=en")
    await expect(page.get_by_role("button", name="Log out")).to_be_visible()
    assert (await page.request.get(f"{base}/api/live")).status == 200
    entries = await audit_entries(cluster)
    assert {"dashboard-login-failed", "dashboard-login"} <= {a for a, who in entries if who == "operator:ops"}


async def audit_entries(cluster: Cluster) -> list[tuple[str, str]]:
    from tools.admin.audit import fetch

    found = await fetch(cluster.config, since=None, who="operator:", limit=50, deadline_s=5.0)
    return [(e.action, e.actor) for e in found]


async def watch_and_kill(page: Page, cluster: Cluster, tmp_path: Path, screenshots: Path) -> None:
    from playwright.async_api import expect

    # Figures change without a reload: today's offered calls at the loaded city, as their records
    # reach central (more than once).
    offered = page.locator(f'[data-site-row="{LOADED}"] [data-field="offered"]')
    await expect(offered).to_have_text("0", timeout=WAIT_MS)
    await expect(offered).not_to_have_text("0", timeout=WAIT_MS)
    first = await offered.text_content()
    await expect(offered).not_to_have_text(first or "", timeout=WAIT_MS)

    # SIGKILL the other city: its stream breaks; stale first, then unreachable.
    killed_at: float = await page.evaluate("Date.now()")
    await cluster.kill_site(KILLED)
    status = page.locator(f'[data-site-row="{KILLED}"] [data-status]')
    await expect(status).to_have_attribute("data-status", "stale", timeout=WAIT_MS)
    await page.screenshot(path=str(tmp_path / "dashboard-city-stale.png"), full_page=True)
    await expect(status).to_have_attribute("data-status", "down", timeout=WAIT_MS)
    await expect(page.locator(f'[data-site-row="{KILLED}"] [data-field="waiting"]')).to_have_text("—")
    await expect(page.locator(f'[data-alert="site_down"][data-site="{KILLED}"]')).to_be_visible()
    await expect(status).to_have_text("unreachable")
    # The loaded city keeps moving meanwhile.
    now = await offered.text_content()
    await expect(offered).not_to_have_text(now or "", timeout=WAIT_MS)

    statuses: list[dict[str, Any]] = await page.evaluate("window.__statuses")
    after = [s for s in statuses if s["at"] >= killed_at]
    shown = [s["status"] for s in after]
    assert "stale" in shown and "down" in shown, statuses
    stale, down = shown.index("stale"), shown.index("down")
    assert stale < down, statuses
    # Never back to "up" once stale, never anything but "down" (with no figures) once down.
    assert "up" not in shown[stale:], statuses
    assert all(s["status"] == "down" and s["waiting"] == "—" for s in after[down:]), statuses

    picture = tmp_path / "dashboard-city-killed.png"
    await page.screenshot(path=str(picture), full_page=True)
    for name in ("killed", "stale"):
        await asyncio.to_thread(
            shutil.copy,
            tmp_path / f"dashboard-city-{name}.png",
            screenshots / f"dashboard-live-city-{name}.png",
        )
