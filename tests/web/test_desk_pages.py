"""The desktop pages in headless Chromium against a real site node: refusals and bad input are
shown in words (in the page's language), never as a stack trace; the console refuses an agent."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.web.conftest import need_chromium
from tests.web.test_desk_api import Site, agent_state, site  # noqa: F401  (the site fixture)
from tools.province.chromium import launch
from tools.province.generate import DEFAULT_PASSWORD

pytestmark = pytest.mark.timeout(120)
WAIT_MS = 20_000


async def test_errors_are_shown_in_words_and_the_console_refuses_an_agent(site: Site, tmp_path: Path) -> None:  # noqa: F811
    need_chromium()
    from playwright.async_api import async_playwright, expect

    async with async_playwright() as pw:
        browser = await launch(pw, None)  # an in-process site without tls: plain HTTP
        try:
            page = await browser.new_page()
            alert = page.get_by_role("alert")
            # A wrong password, in English then in Chinese.
            await page.goto(f"{site.base}/desk?lang=en")
            await page.get_by_label("Agent code").fill(site.person)
            await page.get_by_label("Password").fill("654321")
            await page.get_by_role("button", name="Log in").click()
            await expect(alert).to_have_text("Error: agent code or password is wrong", timeout=WAIT_MS)
            await page.get_by_role("button", name="中文").click()
            await page.get_by_label("工号").fill("12")
            await page.get_by_label("密码").fill(DEFAULT_PASSWORD)
            await page.get_by_role("button", name="登录").click()
            await expect(alert).to_have_text("错误: 工号是四位数字", timeout=WAIT_MS)
            assert agent_state(site, site.person)[0] == "LOGGED_OUT"

            # An agent who opens the console is told why, and sees no team.
            await page.goto(f"{site.base}/console?lang=en")
            await page.get_by_label("Agent code").fill(site.person)
            await page.get_by_label("Password").fill(DEFAULT_PASSWORD)
            await page.get_by_role("button", name="Log in").click()
            await expect(alert).to_contain_text("is not a group leader", timeout=WAIT_MS)
            await expect(page.get_by_role("button", name="Force not ready")).to_have_count(0)

            # The same session on the desktop works; an empty message is refused in words.
            await page.goto(f"{site.base}/desk?lang=en")
            await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
            await page.get_by_role("button", name="Send", exact=True).click()
            await expect(alert).to_have_text("Error: text: 1 to 500 characters", timeout=WAIT_MS)
            # Not ready needs a reason from the list; the list has them, so it works.
            await page.get_by_label("Reason", exact=True).select_option("lunch")
            await page.get_by_role("button", name="Not ready", exact=True).click()
            await expect(page.locator('[data-field="reason"]')).to_have_text("午餐 lunch", timeout=WAIT_MS)
            assert "Traceback" not in (await page.content())
            await page.screenshot(path=str(tmp_path / "desk-errors.png"), full_page=True)
            # Logging out returns to the login form.
            await page.get_by_role("button", name="Log out").click()
            await expect(page.get_by_label("Agent code")).to_be_visible(timeout=WAIT_MS)
            assert agent_state(site, site.person)[0] == "LOGGED_OUT"
        finally:
            await browser.close()
