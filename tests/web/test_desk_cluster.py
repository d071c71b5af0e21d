"""The agent desktop and the group leader's console of a real province (etcd, central, two site
processes) in headless Chromium: two agents in two cities, one page each (one in English, one in
Chinese); a call arrives on the trunk; the first agent answers, sees the screen pop, consults
the other city's agent and completes; the second sees the caller's record and the call's history;
the group leader forces the first agent not ready and its page shows it; monitor, whisper,
barge-in and intercept each change the call, and central's record of it shows the leader's part."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest

from tests.helpers import eventually
from tests.integration.support import Caller, password_hash
from tests.web.conftest import need_chromium
from tools.province.chromium import CHROMIUM, CHROMIUM_ARGS
from tools.province.cluster import Cluster
from tools.province.generate import DEFAULT_PASSWORD, SiteSpec, desk_people, generate_province, write_province
from tools.province.netutil import free_port
from vcc import rpc
from vcc.tls import TRUNK
from vcc.v1 import central_pb2, central_pb2_grpc, common_pb2, trunk_pb2

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]

WAIT_MS = 20_000
GZ, SZ = "gz", "sz"
# A seeded customer (central seeds phones 13800000000 upwards).
ANI = "13800000007"


async def start_province(tmp_path: Path) -> tuple[Cluster, dict[str, Any]]:
    raw = generate_province(
        [
            SiteSpec(GZ, "广州 Guangzhou", trunk_channels=5, agents={"general": 1}),
            SiteSpec(SZ, "深圳 Shenzhen", trunk_channels=5, agents={"general": 1}),
        ],
        etcd_endpoint="127.0.0.1:2379",
        central_listen=f"127.0.0.1:{free_port()}",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        password_hash=password_hash(),
        outbox_dir=tmp_path / "outbox",
        routing={"mode": "isolated"},
        ring_timeout_s=60,
        wrap_up_s=60,
        people=True,
        desktop=True,
    )
    path = await asyncio.to_thread(write_province, raw, tmp_path / "province.yaml")
    cluster = await Cluster.start(path, tmp_path / "run", seed_customers=20)
    return cluster, raw


async def desk_up(base: str) -> None:
    async with httpx.AsyncClient(base_url=base) as http:

        async def up() -> bool:
            try:
                return (await http.get("/healthz", timeout=2)).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(up, timeout_s=30, what=f"{base} answering")


async def log_in(page: Page, url: str, code: str, zh: bool = False) -> None:
    from playwright.async_api import expect

    await page.goto(url)
    await page.get_by_label("工号" if zh else "Agent code").fill(code)
    await page.get_by_label("密码" if zh else "Password").fill(DEFAULT_PASSWORD)
    await page.get_by_role("button", name="登录" if zh else "Log in").click()
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=WAIT_MS)


async def place_call(cluster: Cluster, site_id: str) -> tuple[Caller, str, asyncio.Task[Any]]:
    ch = rpc.channel(cluster.config.site(site_id).listen, persona=TRUNK)
    caller = Caller(ch, ani=ANI)
    accepted = await caller.until("accepted")
    # The caller keeps listening (and pressing 1 at the prompt) until the call ends, however long
    # the agents talk.
    listening = asyncio.create_task(stay_on_the_line(caller, ch))
    return caller, accepted.call_id, listening


async def stay_on_the_line(caller: Caller, ch: grpc.aio.Channel) -> list[str]:
    heard: list[str] = []
    try:
        while (msg := await caller.stream.read()) is not grpc.aio.EOF:
            heard.append(msg.WhichOneof("progress") or "")
            if heard[-1] == "prompt":
                caller._actions.put_nowait(
                    trunk_pb2.PlaceCallRequest(digits=trunk_pb2.CallerDigits(digits="1"))
                )
            if heard[-1] == "ended":
                break
    finally:
        await ch.close()
    return heard


async def central_events(cluster: Cluster, call_id: str) -> list[common_pb2.CallEvent]:
    async with rpc.channel(cluster.central_address()) as ch:
        stub = central_pb2_grpc.CentralServiceStub(ch)
        reply = await stub.GetCallRecord(central_pb2.GetCallRecordRequest(call_id=call_id), timeout=5)
        return list(reply.record.events)


def kind(name: str) -> int:
    return common_pb2.CallEventKind.Value(f"CALL_EVENT_KIND_{name}")


async def test_desktops_and_console_of_a_live_province(tmp_path: Path, screenshots: Path) -> None:
    need_chromium()
    from playwright.async_api import async_playwright

    cluster, raw = await start_province(tmp_path)
    async with cluster:
        gz_desk = f"http://{cluster.config.site(GZ).desktop_listen}"
        sz_desk = f"http://{cluster.config.site(SZ).desktop_listen}"
        await desk_up(gz_desk)
        await desk_up(sz_desk)
        # Scripts find each city's desktop in the run folder's cluster.json.
        state = json.loads(await asyncio.to_thread((tmp_path / "run" / "cluster.json").read_text))
        assert state["sites"][GZ]["desktop"] == f"{gz_desk}/"
        assert state["sites"][SZ]["desktop"] == f"{sz_desk}/"
        a_code, leader_code = desk_people(raw, GZ)["agent"], desk_people(raw, GZ)["group_leader"]
        b_code = desk_people(raw, SZ)["agent"]
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                await scenario(cluster, browser, gz_desk, sz_desk, a_code, b_code, leader_code, tmp_path)
            finally:
                await browser.close()
    for picture in await asyncio.to_thread(lambda: list(tmp_path.glob("desk-*.png"))):
        await asyncio.to_thread(shutil.copy, picture, screenshots / picture.name)


async def scenario(
    cluster: Cluster,
    browser: Browser,
    gz: str,
    sz: str,
    a_code: str,
    b_code: str,
    leader_code: str,
    shots: Path,
) -> None:
    from playwright.async_api import expect

    view = {"viewport": {"width": 1400, "height": 1100}}
    a = await (await browser.new_context(**view)).new_page()  # type: ignore[arg-type]
    b = await (await browser.new_context(**view)).new_page()  # type: ignore[arg-type]
    lead = await (await browser.new_context(**view)).new_page()  # type: ignore[arg-type]
    await log_in(a, f"{gz}/desk?lang=en", a_code)
    await log_in(b, f"{sz}/desk?lang=zh", b_code, zh=True)
    await log_in(lead, f"{gz}/console?lang=en", leader_code)
    a_state, b_state = a.locator('[data-field="state"]'), b.locator('[data-field="state"]')
    await expect(a_state).to_have_attribute("data-state", "NOT_READY", timeout=WAIT_MS)
    await a.get_by_role("button", name="Ready", exact=True).click()
    await b.get_by_role("button", name="就绪", exact=True).click()
    await expect(a_state).to_have_attribute("data-state", "READY", timeout=WAIT_MS)
    await expect(b_state).to_have_attribute("data-state", "READY", timeout=WAIT_MS)

    # A call arrives in Guangzhou and rings the only ready agent there, with its screen pop.
    caller, call_id, listening = await place_call(cluster, GZ)
    offer = a.get_by_role("region", name="Incoming call", exact=True)
    await expect(offer).to_be_visible(timeout=WAIT_MS)
    await expect(offer.locator('[data-field="offer-ani"]')).to_have_text(ANI)
    await expect(offer.locator("[data-customer]")).to_be_visible()
    customer_name = await offer.locator('[data-field="customer-name"]').text_content()
    assert customer_name
    await a.screenshot(path=str(shots / "desk-offer-en.png"), full_page=True)
    await offer.get_by_role("button", name="Answer").click()
    on_call = a.get_by_role("region", name="Call", exact=True)
    await expect(a_state).to_have_attribute("data-state", "TALKING", timeout=WAIT_MS)
    record = on_call.get_by_role("region", name="Customer record", exact=True)
    await expect(record).to_contain_text(customer_name)

    # Consult the other city's agent, chosen from the live directory (with presence), then complete.
    target = a.get_by_label("Target")
    option = a.locator(f'#target option[value="agent:{b_code}"]')
    await expect(option).to_have_count(1, timeout=WAIT_MS)
    await expect(option).to_contain_text("Ready", timeout=WAIT_MS)
    await target.select_option(f"agent:{b_code}")
    await a.get_by_label("Note for the colleague").fill("asks about the bill")
    await a.get_by_role("button", name="Consult").click()
    b_offer = b.get_by_role("region", name="来电", exact=True)
    await expect(b_offer).to_be_visible(timeout=WAIT_MS)
    await expect(b_offer.locator("[data-customer]")).to_contain_text(customer_name)
    await b_offer.get_by_role("button", name="接听").click()
    await expect(a.get_by_role("button", name="Complete")).to_be_visible(timeout=WAIT_MS)
    await a.screenshot(path=str(shots / "desk-consult-en.png"), full_page=True)
    await a.get_by_role("button", name="Complete").click()
    await expect(a_state).to_have_attribute("data-state", "WRAP_UP", timeout=WAIT_MS)
    # The second agent has the caller, the caller's record and the call's history.
    b_call = b.get_by_role("region", name="通话", exact=True)
    await expect(b_state).to_have_attribute("data-state", "TALKING", timeout=WAIT_MS)
    await expect(b_call.get_by_role("region", name="客户资料", exact=True)).to_contain_text(customer_name)
    await expect(b_call.get_by_role("list", name="通话经历")).to_contain_text(a_code)
    await expect(b_call).to_contain_text("asks about the bill")
    await b.screenshot(path=str(shots / "desk-consulted-zh.png"), full_page=True)
    await b_call.get_by_role("button", name="挂断").click()
    await expect(b_state).to_have_attribute("data-state", "WRAP_UP", timeout=WAIT_MS)
    assert (await listening)[-1] == "ended"

    # Wrap-up with a code and a note, then ready; the call is in the agent's calls today.
    await a.get_by_label("Wrap-up code").select_option("resolved")
    await a.get_by_label("Note", exact=True).fill("explained the bill")
    await a.get_by_role("button", name="Ready", exact=True).click()
    await expect(a_state).to_have_attribute("data-state", "READY", timeout=WAIT_MS)
    today = a.get_by_role("region", name="My calls today", exact=True)
    await expect(today).to_contain_text("explained the bill")

    # The group leader forces the agent not ready: the agent's page shows it.
    row = lead.locator(f'[data-agent-row="{a_code}"]')
    await expect(row).to_have_attribute("data-state", "READY", timeout=WAIT_MS)
    await lead.get_by_label("Reason for not ready").select_option("meeting")
    await row.get_by_role("button", name="Force not ready").click()
    await expect(a_state).to_have_attribute("data-state", "NOT_READY", timeout=WAIT_MS)
    await expect(a.locator('[data-notice="forced"]')).to_contain_text(leader_code)
    await expect(row).to_have_attribute("data-state", "NOT_READY", timeout=WAIT_MS)
    await row.get_by_role("button", name="Force ready").click()
    await expect(a_state).to_have_attribute("data-state", "READY", timeout=WAIT_MS)

    # A second call: monitor, whisper, barge in, intercept.
    caller2, call2, listening2 = await place_call(cluster, GZ)
    second_offer = a.get_by_role("region", name="Incoming call", exact=True)
    await second_offer.get_by_role("button", name="Answer").click()
    await expect(a_state).to_have_attribute("data-state", "TALKING", timeout=WAIT_MS)
    await expect(row).to_have_attribute("data-state", "TALKING", timeout=WAIT_MS)
    await row.get_by_role("button", name="Monitor").click()
    await expect(lead.locator('[data-field="supervising"]')).to_contain_text("monitoring", timeout=WAIT_MS)
    await expect(a.locator('[data-notice="supervision"]')).to_have_count(0)  # a silent monitor
    await row.get_by_role("button", name="Whisper").click()
    await expect(a.locator('[data-notice="supervision"]')).to_contain_text("coaching", timeout=WAIT_MS)
    await row.get_by_role("button", name="Barge in").click()
    await expect(a.locator('[data-notice="supervision"]')).to_contain_text("joined", timeout=WAIT_MS)
    await lead.screenshot(path=str(shots / "desk-console-barge-en.png"), full_page=True)
    await row.get_by_role("button", name="Intercept").click()
    await expect(a_state).to_have_attribute("data-state", "WRAP_UP", timeout=WAIT_MS)
    leader_state = lead.locator('[data-field="state"]').first
    await expect(leader_state).to_have_attribute("data-state", "TALKING", timeout=WAIT_MS)
    # The leader has the caller: the leader's own desktop (same session) hangs up.
    await lead.goto(lead.url.replace("/console", "/desk"))
    leader_call = lead.get_by_role("region", name="Call", exact=True)
    await expect(leader_call.locator('[data-field="call-ani"]')).to_have_text(ANI, timeout=WAIT_MS)
    await leader_call.get_by_role("button", name="Hang up").click()
    assert (await listening2)[-1] == "ended"
    del caller, caller2

    # Central's record of each call shows what happened, the supervisor's part included.
    async def recorded() -> list[common_pb2.CallEvent]:
        events = await central_events(cluster, call2)
        assert any(e.kind == kind("ENDED") for e in events), events
        return events

    events = await eventually(recorded, timeout_s=30, what="the second call's record at central")
    supervised = [(dict(e.data)["mode"], e.agent_code) for e in events if e.kind == kind("SUPERVISED")]
    assert supervised == [("monitor", leader_code), ("whisper", leader_code), ("barge", leader_code)]
    [intercepted] = [e for e in events if e.kind == kind("INTERCEPTED")]
    assert (intercepted.agent_code, dict(intercepted.data)["agent"]) == (leader_code, a_code)
    assert [e.agent_code for e in events if e.kind == kind("AGENT_HUNG_UP")] == [leader_code]
    first = await eventually(lambda: central_events(cluster, call_id), timeout_s=30)
    assert any(e.kind == kind("TRANSFERRED") for e in first)
