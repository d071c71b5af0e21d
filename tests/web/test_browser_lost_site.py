"""The dashboard in a real headless Chromium: a city that dies with a call still open there shows
"N calls open at a city that is down since T" (never an outcome), and a city up shows nothing."""

from __future__ import annotations

import time

import pytest

from central.membership_view import SiteLiveness
from central.records import CallEvent
from tests.web.conftest import SITES, Fixture, need_chromium, publishing
from tools.province.chromium import launch
from vcc.call_events import EventKind

WAIT_MS = 15_000

pytestmark = pytest.mark.timeout(120)


async def test_a_dead_citys_open_calls_are_shown_open_at_a_down_city(dash: Fixture) -> None:
    need_chromium()
    from playwright.async_api import async_playwright, expect

    now = dash.clock()
    down_since = now - 30.0
    # Central's membership watch: fs's lease is gone since `down_since` (the others stream).
    dash.live._membership = lambda: [
        SiteLiveness("fs", "Foshan", up=False, down_since=down_since, down_in_etcd=True)
    ]
    for site_id, call_id in (("fs", "open-at-fs"), ("gz", "open-at-gz")):
        await dash.store.ingest(
            site_id,
            [
                CallEvent(call_id, site_id, 1, EventKind.ARRIVED, now - 50, ani="13800000001", dnis="10000"),
                CallEvent(call_id, site_id, 2, EventKind.QUEUED, now - 49, skill_group="general"),
            ],
        )
    streaming = {site_id for site_id, _ in SITES}
    async with (
        publishing(dash, lambda s: {"waiting": 1} if s in streaming else None),
        async_playwright() as pw,
    ):
        browser = await launch(pw, dash.ca)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            await page.context.add_cookies([{"name": "vcc_ops", "value": dash.cookie, "url": dash.base}])
            await page.goto(f"{dash.base}/?lang=en")
            await expect(page.locator('[data-site-row="fs"] [data-status]')).to_have_attribute(
                "data-status", "up", timeout=WAIT_MS
            )
            # Up: its open call is its own business.
            assert await page.locator('[data-alert="open_at_down_site"]').count() == 0
            streaming.discard("fs")
            dash.kill("fs")
            dash.tokens["fs"] = None
            alert = page.locator('[data-alert="open_at_down_site"][data-site="fs"]')
            await expect(alert).to_be_visible(timeout=WAIT_MS)
            since = time.strftime("%H:%M", time.localtime(down_since))
            await expect(alert).to_contain_text(f"1 calls open at a city that is down since {since}")
            # gz is up: its open call is not flagged.
            assert await page.locator('[data-alert="open_at_down_site"][data-site="gz"]').count() == 0
        finally:
            await browser.close()
