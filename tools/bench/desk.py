"""`vcc bench desk`: a group leader's click to the agent's page showing it.

A real one-city province (etcd and a site process), two headless Chromium pages: the leader's
console clicks Force not ready / Force ready in turn; the agent's desktop notes when its state
badge changes (a MutationObserver). Both pages read the same machine's clock, so the difference
is the whole path: click → HTTP API → call control → event → server-sent view → page drawn. Beside
it, in the same run, a bare HTTP round trip to the same server (GET /healthz from Python on a
kept-alive connection), and the same from the page's fetch (which in headless Chromium carries
about 40 ms of its own, so it is no yardstick).
"""

from __future__ import annotations

import asyncio
import ssl
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tools.province.chromium import launch
from tools.province.cluster import Cluster
from tools.province.generate import DEFAULT_PASSWORD, SiteSpec, desk_people, generate_province, write_province
from tools.province.netutil import free_port
from vcc.https import client_verify, province_ca, web_url

WAIT_MS = 30_000
WATCH = """
() => {
  window.__seen = [];
  const badge = document.querySelector('[data-field="state"]');
  new MutationObserver(() => window.__seen.push({state: badge.dataset.state, at: Date.now()}))
    .observe(badge, {attributes: true, attributeFilter: ["data-state"]});
}
"""
CLICKS = """
() => {
  window.__clicks = [];
  document.addEventListener("click", () => window.__clicks.push(Date.now()), true);
}
"""
BARE = """
async (n) => {
  const out = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await (await fetch("/healthz", {cache: "no-store"})).json();
    out.push(performance.now() - t0);
  }
  return out;
}
"""


async def _bare_round_trips(base: str, n: int, verify: ssl.SSLContext | bool) -> list[float]:
    """GET /healthz from Python on a kept-alive connection: the server's bare HTTPS cost."""
    import httpx

    out = []
    async with httpx.AsyncClient(base_url=base, verify=verify) as http:
        await http.get("/healthz")
        for _ in range(n):
            t0 = time.perf_counter()
            (await http.get("/healthz")).raise_for_status()
            out.append((time.perf_counter() - t0) * 1000)
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(samples: int = 40) -> dict[str, Any]:
    from playwright.async_api import async_playwright, expect

    with tempfile.TemporaryDirectory(prefix="vcc-bench-desk-") as tmp:
        run = Path(tmp)
        raw = generate_province(
            [SiteSpec("gz", "广州 Guangzhou", trunk_channels=5, agents={"general": 1})],
            etcd_endpoint="127.0.0.1:2379",
            central_listen=f"127.0.0.1:{free_port()}",
            database_url=f"sqlite+aiosqlite:///{run / 'central.db'}",
            outbox_dir=run / "outbox",
            people=True,
            desktop=True,
        )
        path = await asyncio.to_thread(write_province, raw, run / "province.yaml")
        people = desk_people(raw, "gz")
        async with await Cluster.start(path, run / "run", central=False) as cluster:
            base = web_url(cluster.config, cluster.config.site("gz").desktop_listen, "")
            async with async_playwright() as pw:
                browser = await launch(pw, province_ca(cluster.config))
                try:
                    agent = await (await browser.new_context()).new_page()
                    leader = await (await browser.new_context()).new_page()
                    for page, url, code in (
                        (agent, "desk", people["agent"]),
                        (leader, "console", people["group_leader"]),
                    ):
                        await page.goto(f"{base}/{url}?lang=en", timeout=WAIT_MS)
                        await page.get_by_label("Agent code").fill(code)
                        await page.get_by_label("Password").fill(DEFAULT_PASSWORD)
                        await page.get_by_role("button", name="Log in").click()
                        await expect(page.locator("#conn")).to_have_attribute(
                            "data-state", "live", timeout=WAIT_MS
                        )
                    await agent.evaluate(WATCH)
                    await leader.evaluate(CLICKS)
                    row = leader.locator(f'[data-agent-row="{people["agent"]}"]')
                    badge = agent.locator('[data-field="state"]')
                    latencies: list[float] = []
                    for i in range(samples):
                        want = "READY" if i % 2 == 0 else "NOT_READY"
                        name = "Force ready" if want == "READY" else "Force not ready"
                        await row.get_by_role("button", name=name).click(timeout=WAIT_MS)
                        await expect(badge).to_have_attribute("data-state", want, timeout=WAIT_MS)
                        clicked: float = (await leader.evaluate("window.__clicks"))[-1]
                        seen = [s for s in await agent.evaluate("window.__seen") if s["state"] == want]
                        latencies.append(seen[-1]["at"] - clicked)
                    page_fetch: list[float] = await agent.evaluate(BARE, samples)
                finally:
                    await browser.close()
            bare = await _bare_round_trips(base, samples, client_verify(cluster.config))
    p50, p99 = _pct(latencies, 0.5), _pct(latencies, 0.99)
    b50, b99 = _pct(bare, 0.5), _pct(bare, 0.99)
    return {
        "samples": samples,
        "click_to_page_ms": {
            "p50": p50,
            "p99": p99,
            "mean": statistics.fmean(latencies),
            "max": max(latencies),
        },
        "bare_http_ms": {"p50": b50, "p99": b99},
        "page_fetch_ms": {"p50": _pct(page_fetch, 0.5), "p99": _pct(page_fetch, 0.99)},
        "ratio": {"p50": p50 / b50 if b50 else None, "p99": p99 / b99 if b99 else None},
    }
