"""`vcc screenshots`: pictures of the agent desktop and the group leader's console, in English and
Chinese, taken in headless Chromium on a real one-city province (etcd, central, a site process):
an agent on a call with the caller's record on screen, while the group leader barges in.

Files: desk-en.png, desk-zh.png, console-en.png, console-zh.png in the output folder (docs/ by
default). Needs Debian's chromium (deploy/install-system-deps.sh).
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path
from typing import Any

import grpc

from tools.province.chromium import launch
from tools.province.cluster import Cluster
from tools.province.generate import DEFAULT_PASSWORD, SiteSpec, desk_people, generate_province, write_province
from tools.province.netutil import free_port
from vcc import rpc
from vcc.https import province_ca, web_url
from vcc.tls import TRUNK, site_server
from vcc.v1 import trunk_pb2, trunk_pb2_grpc

WAIT_MS = 30_000
SITE = "gz"


async def take(out_dir: Path) -> list[Path]:
    from playwright.async_api import async_playwright, expect

    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vcc-screens-") as tmp:
        run = Path(tmp)
        raw = generate_province(
            [SiteSpec(SITE, "广州 Guangzhou", trunk_channels=5, agents={"general": 2, "billing": 1})],
            etcd_endpoint="127.0.0.1:2379",
            central_listen=f"127.0.0.1:{free_port()}",
            database_url=f"sqlite+aiosqlite:///{run / 'central.db'}",
            outbox_dir=run / "outbox",
            routing={"mode": "isolated"},
            ring_timeout_s=120,
            wrap_up_s=60,
            people=True,
            desktop=True,
        )
        path = await asyncio.to_thread(write_province, raw, run / "province.yaml")
        people = desk_people(raw, SITE)
        async with await Cluster.start(path, run / "run", seed_customers=20) as cluster:
            base = web_url(cluster.config, cluster.config.site(SITE).desktop_listen, "")
            async with async_playwright() as pw:
                browser = await launch(pw, province_ca(cluster.config))
                try:
                    size: Any = {"viewport": {"width": 1400, "height": 1000}}
                    agent = await (await browser.new_context(**size)).new_page()
                    leader = await (await browser.new_context(**size)).new_page()
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
                    await agent.get_by_role("button", name="Ready", exact=True).click()
                    async with rpc.channel(
                        cluster.config.site(SITE).listen, persona=TRUNK, expect=site_server(SITE)
                    ) as ch:
                        line = _Caller(ch)
                        caller = asyncio.create_task(line.stay())
                        offer = agent.get_by_role("region", name="Incoming call", exact=True)
                        await offer.get_by_role("button", name="Answer").click(timeout=WAIT_MS)
                        await expect(agent.locator('[data-field="state"]')).to_have_attribute(
                            "data-state", "TALKING", timeout=WAIT_MS
                        )
                        row = leader.locator(f'[data-agent-row="{people["agent"]}"]')
                        await row.get_by_role("button", name="Barge in").click(timeout=WAIT_MS)
                        await expect(agent.locator('[data-notice="supervision"]')).to_be_visible(
                            timeout=WAIT_MS
                        )
                        await leader.get_by_label("Message to the team").fill(
                            "Busy hour: please keep calls short."
                        )
                        await leader.get_by_role("button", name="Broadcast").click()
                        await expect(agent.locator("#messages li")).to_have_count(1, timeout=WAIT_MS)
                        shots = []
                        for lang, toggle in (("en", None), ("zh", "中文")):
                            for page, name in ((agent, "desk"), (leader, "console")):
                                if toggle:
                                    await page.get_by_role("button", name=toggle).click()
                                await expect(page.locator("html")).to_have_attribute(
                                    "lang", "zh-CN" if lang == "zh" else "en"
                                )
                                target = out_dir / f"{name}-{lang}.png"
                                await page.screenshot(path=str(target), full_page=True)
                                shots.append(target)
                        line.hang_up()
                        await asyncio.wait_for(caller, 30)
                    return shots
                finally:
                    await browser.close()


class _Caller:
    """One caller on the trunk who presses 1 and stays on the line until told to hang up."""

    def __init__(self, ch: grpc.aio.Channel) -> None:
        self._actions: asyncio.Queue[trunk_pb2.PlaceCallRequest | None] = asyncio.Queue()
        self._actions.put_nowait(
            trunk_pb2.PlaceCallRequest(
                offer=trunk_pb2.CallOffer(idempotency_key=uuid.uuid4().hex, ani="13800000007", dnis="10000")
            )
        )
        self._stream = trunk_pb2_grpc.TrunkIngressServiceStub(ch).PlaceCall(self._requests())

    async def _requests(self) -> Any:
        while (action := await self._actions.get()) is not None:
            yield action

    async def stay(self) -> None:
        async for msg in self._stream:
            kind = msg.WhichOneof("progress")
            if kind == "prompt":
                self._actions.put_nowait(
                    trunk_pb2.PlaceCallRequest(digits=trunk_pb2.CallerDigits(digits="1"))
                )
            if kind == "ended":
                return

    def hang_up(self) -> None:
        self._actions.put_nowait(trunk_pb2.PlaceCallRequest(hang_up=trunk_pb2.CallerHangUp()))
        self._actions.put_nowait(None)
