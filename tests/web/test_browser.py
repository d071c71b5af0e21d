"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): live updates without
reload, a killed city turning to down, the language switch, drill-down; screenshots in run/screenshots."""

from __future__ import annotations

import re
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from tests.web.conftest import SITES, Fixture, need_chromium, publishing
from tools.province.chromium import launch

# Condition waits (not timing assertions): generous for a loaded 2-core machine.
WAIT_MS = 15_000

pytestmark = pytest.mark.timeout(120)


def keep_streaming(dash: Fixture, sites: list[str], silent: set[str]) -> AbstractAsyncContextManager[None]:
    """Sites keep publishing, as their streams do (at least every second), unless silenced."""
    return publishing(
        dash, lambda s: {"waiting": dash.waiting.get(s, 1)} if s in sites and s not in silent else None
    )


async def test_dashboard_in_chromium(dash: Fixture, screenshots: Path) -> None:
    need_chromium()
    from playwright.async_api import async_playwright, expect

    alive = [site_id for site_id, _ in SITES]
    silent: set[str] = set()
    async with keep_streaming(dash, alive, silent), async_playwright() as pw:
        browser = await launch(pw, dash.ca)
        try:
            page = await browser.new_page(viewport={"width": 1500, "height": 1000})
            await page.context.add_cookies([{"name": "vcc_ops", "value": dash.cookie, "url": dash.base}])
            await page.goto(f"{dash.base}/?lang=en")
            waiting = page.locator('[data-site-row="gz"] [data-field="waiting"]')
            await expect(waiting).to_have_text("1", timeout=WAIT_MS)
            # A marker that a reload would wipe out.
            await page.evaluate("window.__noReload = 42")

            # Figures change without reloading: the live state and the call records.
            dash.waiting["gz"] = 7
            await expect(waiting).to_have_text("7", timeout=WAIT_MS)
            offered = page.locator('[data-site-row="gz"] [data-field="offered"]')
            await expect(offered).to_have_text("0", timeout=WAIT_MS)
            await dash.answered_call("c1", "gz", wait_s=3.0)
            await dash.answered_call("c2", "gz", wait_s=45.0)
            await expect(offered).to_have_text("2", timeout=WAIT_MS)
            await expect(page.locator('[data-field="province-offered"] .value')).to_have_text("2")

            # A city whose stream goes quiet turns stale (figures flagged with their age), then,
            # killed (its stream breaks), down: its figures disappear and an alert shows.
            silent.add("fs")
            fs_status = page.locator('[data-site-row="fs"] [data-status]')
            await expect(fs_status).to_have_attribute("data-status", "stale", timeout=WAIT_MS)
            await expect(page.locator('[data-alert="site_stale"][data-site="fs"]')).to_be_visible()
            dash.kill("fs")
            dash.tokens["fs"] = None
            await expect(fs_status).to_have_attribute("data-status", "down", timeout=WAIT_MS)
            await expect(page.locator('[data-site-row="fs"] [data-field="waiting"]')).to_have_text("—")
            await expect(page.locator('[data-alert="site_down"][data-site="fs"]')).to_be_visible()
            await expect(page.locator('[data-alert="sl_below_target"][data-site="gz"]')).to_be_visible()
            assert await page.evaluate("window.__noReload") == 42

            # Wait for a chart sample or two, then keep the picture.
            await expect(page.locator("#ch-waiting path").first).to_have_attribute(
                "d", re.compile(r"M\S"), timeout=WAIT_MS
            )
            await page.screenshot(path=str(screenshots / "dashboard-province-en.png"), full_page=True)

            # Chinese, switched in place.
            await page.click("#lang-toggle")
            await expect(page.locator('[data-i18n="nav_province"]')).to_have_text("全省总览")
            await expect(fs_status).to_have_text("不可达")
            assert await page.evaluate("window.__noReload") == 42
            await page.screenshot(path=str(screenshots / "dashboard-province-zh.png"), full_page=True)

            # Drill down to the city, then to a skill group.
            await page.click('[data-site-row="gz"] a')
            await expect(page.locator("#site-title")).to_contain_text("Guangzhou", timeout=WAIT_MS)
            await expect(page.locator('[data-field="site-waiting"] .value')).to_have_text("7")
            await page.screenshot(path=str(screenshots / "dashboard-city.png"), full_page=True)
            await page.click('a[href="/site/gz/skill/general"]')
            await expect(page.locator('[data-field="skill-waiting"] .value')).to_have_text(
                "7", timeout=WAIT_MS
            )

            # The interval report and its CSV link.
            await page.goto(f"{dash.base}/report?lang=en")
            await expect(page.locator("#report tbody tr").first).to_be_visible(timeout=WAIT_MS)
            href = await page.locator("#csv-link").get_attribute("href")
            assert href is not None and href.startswith("/api/intervals.csv?")
            await page.screenshot(path=str(screenshots / "dashboard-report.png"), full_page=True)
        finally:
            await browser.close()
