"""The dashboard's change-driven live stream in a real headless Chromium: a page kept open while the
province changes (agents in and out, calls waiting and answered, a city killed) shows exactly what a
freshly loaded page shows (its model and its tables, compared at the same snapshot number); a page
that misses a change opens the stream again and catches up; the page's applyChange gives what
central.web.live_delta's diff describes."""

from __future__ import annotations

import asyncio
import json
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from central.web.live_delta import diff
from tests.helpers import eventually
from tests.web.conftest import Fixture, need_chromium, publishing
from tests.web.test_live_delta import pairs
from tools.province.chromium import launch

# Condition waits (not timing assertions): generous for a loaded 2-core machine.
WAIT_MS = 15_000
pytestmark = pytest.mark.timeout(180)

# What the page shows of its model: the cards, tables and alerts (not the charts: they are drawn
# from /api/history, fetched on its own clock), with the snapshot number they were drawn from.
PICTURE = """() => ({
    seq: window.vccLive.stream.seq,
    model: JSON.stringify(window.vccLive.model()),
    shown: [...document.querySelectorAll("#alerts, #view .cards, #view table, #view h2")]
        .map((e) => e.outerHTML),
})"""
# A page whose stream loses one change (the third) on its way: as after a hiccup of the network.
DROP_THE_THIRD_CHANGE = """(() => {
    const Real = window.EventSource;
    window.__changesSeen = 0;
    window.__changesDropped = 0;
    window.EventSource = class extends Real {
        addEventListener(type, listener, ...rest) {
            if (type !== "delta") return super.addEventListener(type, listener, ...rest);
            return super.addEventListener(type, (e) => {
                window.__changesSeen += 1;
                if (window.__changesSeen === 3) { window.__changesDropped += 1; return; }
                listener(e);
            }, ...rest);
        }
    };
})();"""


def province_streaming(
    dash: Fixture, figures: dict[str, dict[str, int]]
) -> AbstractAsyncContextManager[None]:
    """Every live city publishes its figures (`figures[site]`), as its stream does."""
    return publishing(dash, lambda s: figures.get(s, {}))


async def change_the_province(dash: Fixture, figures: dict[str, dict[str, int]]) -> None:
    """Agents log in and out, calls arrive and wait, calls are answered, Foshan is killed."""
    for step in range(6):
        figures["gz"] = {"waiting": 2 + step, "ready": 3 + step % 3, "talking": 2 + step // 2}
        figures["sz"] = {"waiting": step % 2, "ready": 5 - step % 4, "talking": step}
        if step == 2:
            await dash.answered_call("c1", "gz", wait_s=3.0)
            await dash.answered_call("c2", "sz", wait_s=40.0)
        await asyncio.sleep(0.5)
    dash.kill("fs")
    dash.tokens["fs"] = None


async def shown_alike(kept: Any, fresh: Any) -> dict[str, Any]:
    """The kept page and the fresh page drawn from the same snapshot number: the same model and
    the same tables. (Both follow the stream; try until a moment finds them at one number.)"""

    async def alike() -> dict[str, Any] | None:
        a = await kept.evaluate(PICTURE)
        b = await fresh.evaluate(PICTURE)
        if a["seq"] is None or a["seq"] != b["seq"] or a["seq"] != (await kept.evaluate(PICTURE))["seq"]:
            return None
        assert json.loads(a["model"]) == json.loads(b["model"])
        assert a["model"] == b["model"]  # the keys' order too
        assert a["shown"] == b["shown"]
        return a

    picture: dict[str, Any] = await eventually(
        alike, timeout_s=WAIT_MS / 1000, what="both pages at one snapshot"
    )
    return picture


def in_order(value: Any) -> Any:
    """Objects as lists of (key, value): equal only in the same order of keys."""
    if isinstance(value, dict):
        return [(k, in_order(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [in_order(v) for v in value]
    return value


async def open_page(context: Any, url: str) -> Any:
    from playwright.async_api import expect

    page = await context.new_page()
    await page.goto(url)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    return page


async def logged_in(browser: Any, dash: Fixture, script: str = "") -> Any:
    context = await browser.new_context(viewport={"width": 1500, "height": 1000})
    await context.add_cookies([{"name": "vcc_ops", "value": dash.cookie, "url": dash.base}])
    if script:
        await context.add_init_script(script)
    return context


async def test_a_page_kept_open_shows_what_a_fresh_load_shows(dash: Fixture) -> None:
    need_chromium()
    from playwright.async_api import async_playwright, expect

    figures: dict[str, dict[str, int]] = {}
    views = ["/?lang=en", "/site/gz?lang=en", "/site/sz/skill/general?lang=en"]
    async with province_streaming(dash, figures), async_playwright() as pw:
        browser = await launch(pw, dash.ca)
        try:
            context = await logged_in(browser, dash)
            kept = [await open_page(context, dash.base + v) for v in views]
            await change_the_province(dash, figures)
            fs = kept[0].locator('[data-site-row="fs"] [data-status]')
            await expect(fs).to_have_attribute("data-status", "down", timeout=WAIT_MS)
            offered = kept[0].locator('[data-field="province-offered"] .value')
            await expect(offered).to_have_text("2", timeout=WAIT_MS)
            for page in kept:
                stream = await page.evaluate("window.vccLive.stream")
                # One whole snapshot, then changes only; never out of step.
                assert stream["lives"] == 1 and stream["resyncs"] == 0, stream
                assert stream["deltas"] >= 3, stream
            fresh_context = await logged_in(browser, dash)
            for view, page in zip(views, kept, strict=True):
                fresh = await open_page(fresh_context, dash.base + view)
                picture = await shown_alike(page, fresh)
                model = json.loads(picture["model"])
                assert next(s for s in model["sites"] if s["site_id"] == "fs")["live"] is None
                assert model["province"]["records"]["today"]["offered"] == 2
        finally:
            await browser.close()


async def test_a_page_that_misses_a_change_opens_the_stream_again(dash: Fixture) -> None:
    need_chromium()
    from playwright.async_api import async_playwright

    figures: dict[str, dict[str, int]] = {}
    async with province_streaming(dash, figures), async_playwright() as pw:
        browser = await launch(pw, dash.ca)
        try:
            lossy = await open_page(
                await logged_in(browser, dash, DROP_THE_THIRD_CHANGE), dash.base + "/?lang=en"
            )
            await change_the_province(dash, figures)

            async def caught_up() -> dict[str, Any] | None:
                stream = await lossy.evaluate("window.vccLive.stream")
                dropped = await lossy.evaluate("window.__changesDropped")
                return stream if dropped == 1 and stream["deltas"] >= 3 else None

            stream = await eventually(caught_up, timeout_s=WAIT_MS / 1000, what="changes after the lost one")
            # The change after the lost one did not fit: the page opened the stream again,
            # started from a whole snapshot, and went on with changes.
            assert stream["resyncs"] == 1 and stream["lives"] == 2, stream
            fresh = await open_page(await logged_in(browser, dash), dash.base + "/?lang=en")
            await shown_alike(lossy, fresh)
        finally:
            await browser.close()


async def test_the_pages_apply_is_the_servers(dash: Fixture) -> None:
    """The page's applyChange on changes diff() made of many JSON values (Hypothesis's) gives the
    new values, keys' order included."""
    need_chromium()
    from playwright.async_api import async_playwright

    from tests.web.test_live_delta import BAD_CHANGES

    cases: list[dict[str, Any]] = []

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(pairs())
    def collect(pair: tuple[Any, Any]) -> None:
        old, new = pair
        cases.append({"old": old, "change": diff(old, new), "new": new})

    collect()
    # A key named "__proto__" coming new (an assignment would set the object's prototype).
    for old, new in [({"a": 1}, {"a": 1, "__proto__": {"x": 1}}), ({}, {"__proto__": 2})]:
        cases.append({"old": old, "change": diff(old, new), "new": new})
    async with async_playwright() as pw:
        browser = await launch(pw, dash.ca)
        try:
            page = await open_page(await logged_in(browser, dash), dash.base + "/?lang=en")
            got = await page.evaluate(
                # As JSON text, parsed by the page as the stream's messages are (a key "__proto__"
                # stays a key).
                """(text) => JSON.parse(text).map(
                    (c) => JSON.stringify(window.vccLive.apply(c.old, c.change) ?? null))""",
                json.dumps(cases),
            )
            # A change that does not fit is refused (the page then resyncs).
            refused = await page.evaluate(
                """(bad) => bad.map(([v, c]) => {
                    try { window.vccLive.apply(v, c); return false; } catch (e) { return true; }
                })""",
                BAD_CHANGES,
            )
        finally:
            await browser.close()
    assert len(got) == len(cases) >= 100
    for case, text in zip(cases, got, strict=True):
        assert in_order(json.loads(text)) == in_order(case["new"]), case
    assert refused == [True] * len(BAD_CHANGES)
