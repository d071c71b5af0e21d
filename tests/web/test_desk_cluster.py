"""The agent desktop and the group leader's console of a real province (etcd, central, two site
processes) in headless Chromium: two agents in two cities, one page each (one in English, one in
Chinese); a call arrives on the trunk; the first agent answers, sees the screen pop, consults
the other city's agent and completes; the second sees the caller's record and the call's history;
the group leader forces the first agent not ready and its page shows it; monitor, whisper,
barge-in and intercept each change the call, and central's record of it shows the leader's part."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import ssl
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest

from tests.helpers import eventually
from tests.integration.support import Caller, password_hash
from tests.web.conftest import need_chromium
from tools.province.chromium import launch, playwright
from tools.province.cluster import Cluster
from tools.province.generate import DEFAULT_PASSWORD, SiteSpec, desk_people, generate_province, write_province
from tools.province.netutil import free_port
from vcc import rpc
from vcc.https import client_verify, province_ca, web_url
from vcc.tls import TRUNK
from vcc.v1 import central_pb2, central_pb2_grpc, common_pb2, servicedesk_pb2, servicedesk_pb2_grpc, trunk_pb2

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


async def desk_up(base: str, verify: ssl.SSLContext | bool) -> None:
    async with httpx.AsyncClient(base_url=base, verify=verify) as http:

        async def up() -> bool:
            try:
                return (await http.get("/healthz", timeout=2)).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(up, timeout_s=30, what=f"{base} answering")


async def log_in(page: Page, url: str, code: str, zh: bool = False, password: str = DEFAULT_PASSWORD) -> None:
    from playwright.async_api import expect

    await page.goto(url)
    await page.get_by_label("工号" if zh else "Agent code").fill(code)
    await page.get_by_label("密码" if zh else "Password").fill(password)
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

    cluster, raw = await start_province(tmp_path)
    async with cluster:
        gz_desk = web_url(cluster.config, cluster.config.site(GZ).desktop_listen, "")
        sz_desk = web_url(cluster.config, cluster.config.site(SZ).desktop_listen, "")
        await desk_up(gz_desk, client_verify(cluster.config))
        await desk_up(sz_desk, client_verify(cluster.config))
        # HTTPS only: plain HTTP to the desk's port gets no answer at all (not even a redirect).
        assert gz_desk.startswith("https://")
        async with httpx.AsyncClient(timeout=10) as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get(gz_desk.replace("https://", "http://", 1) + "/healthz")
        # Scripts find each city's desktop in the run folder's cluster.json.
        state = json.loads(await asyncio.to_thread((tmp_path / "run" / "cluster.json").read_text))
        assert state["sites"][GZ]["desktop"] == f"{gz_desk}/"
        assert state["sites"][SZ]["desktop"] == f"{sz_desk}/"
        a_code, leader_code = desk_people(raw, GZ)["agent"], desk_people(raw, GZ)["group_leader"]
        b_code = desk_people(raw, SZ)["agent"]
        async with playwright(province_ca(cluster.config)) as pw:
            browser = await launch(pw, province_ca(cluster.config))
            try:
                await scenario(cluster, browser, gz_desk, sz_desk, a_code, b_code, leader_code, tmp_path)
                await administration(cluster, browser, gz_desk, raw, tmp_path)
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

    # An article for the service the caller will choose, published at central.
    title = await publish_article(cluster, "general")

    # A call arrives in Guangzhou and rings the only ready agent there, with its screen pop.
    caller, call_id, listening = await place_call(cluster, GZ)
    offer = a.get_by_role("region", name="Incoming call", exact=True)
    await expect(offer).to_be_visible(timeout=WAIT_MS)
    await expect(offer.locator('[data-field="offer-ani"]')).to_have_text(ANI)
    await expect(offer.locator("[data-customer]")).to_be_visible()
    customer_name = await offer.locator('[data-field="customer-name"]').text_content()
    assert customer_name
    # The knowledge articles of the call's service, at the offer.
    knowledge = a.get_by_role("region", name="Knowledge for this service", exact=True)
    await expect(knowledge).to_contain_text(title, timeout=WAIT_MS)
    await a.screenshot(path=str(shots / "desk-offer-en.png"), full_page=True)
    await offer.get_by_role("button", name="Answer").click()
    on_call = a.get_by_role("region", name="Call", exact=True)
    await expect(a_state).to_have_attribute("data-state", "TALKING", timeout=WAIT_MS)
    record = on_call.get_by_role("region", name="Customer record", exact=True)
    await expect(record).to_contain_text(customer_name)

    # The agent edits the caller's record: saved at central; an edit made on a version someone
    # else has changed since is refused in words, nothing saved.
    await on_call.get_by_role("button", name="Edit record").click()
    await expect(a.get_by_label("Notes", exact=True)).to_have_value(re.compile(".*"), timeout=WAIT_MS)
    await a.get_by_label("Notes", exact=True).fill(EDITED_NOTE)
    await a.get_by_role("button", name="Save record").click()
    await expect(a.locator('[data-field="customer-saved"]')).to_contain_text(
        "Saved at central", timeout=WAIT_MS
    )
    customer_id = await offer_customer_id(a)
    saved = await central_customer(cluster, customer_id)
    assert saved.notes == EDITED_NOTE
    await touch_customer(cluster, customer_id)  # someone else saves it meanwhile
    await a.get_by_label("Level", exact=True).fill("gold")
    await a.get_by_role("button", name="Save record").click()
    await expect(a.locator("#error")).to_contain_text("read it again and re-apply the edit", timeout=WAIT_MS)
    assert (await central_customer(cluster, customer_id)).level == saved.level
    for body, error_id in (
        ({"notes": "x"}, "missing-version"),
        ({"version": "7", "notes": "x"}, "missing-version"),
        ({"version": saved.version}, "nothing-to-save"),
        ({"version": saved.version, "name": " "}, "bad-argument"),
        ({"version": saved.version, "notes": "x" * 2001}, "bad-argument"),
    ):
        bad = await a.request.post(
            f"{gz}/api/customers/{customer_id}", data={"idempotency_key": key(), **body}
        )
        assert bad.status == 400 and (await bad.json())["error"]["id"] == error_id, await bad.text()
    await expect(record).to_contain_text(EDITED_NOTE, timeout=WAIT_MS)

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
    # The other city's agent sees the record as edited.
    await expect(b_offer.locator("[data-customer]")).to_contain_text(EDITED_NOTE)
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

    # A message to the other city's agent: delivered through its site, shown on its page.
    await a.get_by_label("To", exact=True).select_option(b_code)
    await a.get_by_label("Message", exact=True).fill("thanks for the help 多谢")
    await a.get_by_role("button", name="Send", exact=True).click()
    await expect(b.locator("#messages")).to_contain_text("thanks for the help 多谢", timeout=WAIT_MS)
    await expect(a.locator("#messages")).to_contain_text("thanks for the help 多谢")

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

    async def wrapped_up() -> list[common_pb2.CallEvent] | None:
        events = await central_events(cluster, call_id)
        return events if any(e.kind == kind("WRAPPED_UP") for e in events) else None

    first = await eventually(wrapped_up, timeout_s=30, what="the first call's wrap-up at central")
    assert any(e.kind == kind("TRANSFERRED") for e in first)
    # The agent's wrap-up code and note are in the call's record.
    [wrap] = [e for e in first if e.kind == kind("WRAPPED_UP")]
    assert (wrap.agent_code, dict(wrap.data)) == (a_code, {"code": "resolved", "note": "explained the bill"})


NEW_AGENT, NEW_PASSWORD = "0190", "246810"


def key() -> str:
    return uuid.uuid4().hex


EDITED_NOTE = "prefers e-mail 喜欢邮件联系"
# A new channel's TLS handshake on a loaded machine can take seconds: a generous deadline.
RPC_S = 20.0


async def publish_article(cluster: Cluster, service: str) -> str:
    title = f"How to answer about {service}"
    async with rpc.channel(cluster.central_address()) as ch:
        kb = servicedesk_pb2_grpc.KnowledgeServiceStub(ch)
        proposed = await kb.ProposeArticle(
            servicedesk_pb2.ProposeArticleRequest(
                title=title, body="Check the account first.", category="faq", service=service,
                author="0101", idempotency_key="kb-1",
            ),
            timeout=RPC_S,
        )  # fmt: skip
        await kb.PublishArticle(
            servicedesk_pb2.PublishArticleRequest(article_id=proposed.article.article_id, reviewer="qa"),
            timeout=RPC_S,
        )
    return title


async def offer_customer_id(page: Page) -> str:
    found = await page.locator("#call-customer [data-customer]").get_attribute("data-customer")
    assert found
    return found


async def central_customer(cluster: Cluster, customer_id: str) -> common_pb2.Customer:
    async with rpc.channel(cluster.central_address()) as ch:
        stub = servicedesk_pb2_grpc.CustomerServiceStub(ch)
        reply = await stub.GetCustomer(
            servicedesk_pb2.GetCustomerRequest(customer_id=customer_id), timeout=RPC_S
        )
        found: common_pb2.Customer = reply.customer
        return found


async def touch_customer(cluster: Cluster, customer_id: str) -> None:
    """Another desk saves the record: its version moves on."""
    current = await central_customer(cluster, customer_id)
    current.city = current.city or "广州"
    async with rpc.channel(cluster.central_address()) as ch:
        stub = servicedesk_pb2_grpc.CustomerServiceStub(ch)
        request = servicedesk_pb2.UpdateCustomerRequest(customer=current, expected_version=current.version)
        await stub.UpdateCustomer(request, timeout=RPC_S)


async def roster_cli(cluster: Cluster, admin: str, *args: str) -> tuple[int, str]:
    """`vcc roster ...` against the running province, as `admin` (the password in its environment)."""
    from typer.testing import CliRunner

    from tools.cli import app

    env = {"VCC_ADMIN": admin, "VCC_ADMIN_PASSWORD": DEFAULT_PASSWORD, "VCC_NEW_PASSWORD": NEW_PASSWORD}
    argv = ["roster", args[0], "--config", str(cluster.config_path), *args[1:]]
    result = await asyncio.to_thread(CliRunner(env=env).invoke, app, argv)
    return result.exit_code, result.output


async def administration(
    cluster: Cluster, browser: Browser, gz: str, raw: dict[str, Any], shots: Path
) -> None:
    """The site's administrator adds an agent from the CLI, changes its skills and disables it from
    the console (in Chinese); a group leader is refused; the new agent works at once; central's
    audit log has every step."""
    from playwright.async_api import expect

    from tools.admin.audit import fetch

    admin = desk_people(raw, GZ)["administrator"]
    sz_leader = desk_people(raw, SZ)["group_leader"]
    code, out = await roster_cli(cluster, sz_leader, "add", "--site", SZ, "0191", "--skill", "general=5")
    assert code == 1 and "only an administrator manages agents [not-an-administrator]" in out, out
    code, out = await roster_cli(
        cluster, admin, "add", "--site", GZ, NEW_AGENT, "--skill", "general=6", "--name", "new"
    )
    assert code == 0 and out.startswith(NEW_AGENT), out
    code, out = await roster_cli(cluster, admin, "skills", "--site", GZ, NEW_AGENT, "--skill", "sales=1")
    assert code == 1 and "no skill group 'sales' at this site [unknown-skill-group]" in out, out
    code, out = await roster_cli(cluster, admin, "list", "--site", GZ)
    assert code == 0 and f"{NEW_AGENT}  agent" in out and "general=6" in out, out

    view = {"viewport": {"width": 1400, "height": 1100}}
    adm = await (await browser.new_context(**view)).new_page()  # type: ignore[arg-type]
    new = await (await browser.new_context(**view)).new_page()  # type: ignore[arg-type]
    await log_in(adm, f"{gz}/console?lang=zh", admin, zh=True)
    card = adm.get_by_role("region", name="本站坐席管理", exact=True)
    row = card.locator(f'[data-admin-row="{NEW_AGENT}"]')
    await expect(row.locator('[data-field="skills"]')).to_have_text("general=6", timeout=WAIT_MS)
    # The new agent works at once, with the password the administrator gave.
    await log_in(new, f"{gz}/desk?lang=en", NEW_AGENT, password=NEW_PASSWORD)

    # Bad input in words (Chinese), then new skills from the console.
    await card.get_by_label("技能（技能组=等级，…）").fill("sales=5")
    await row.get_by_role("button", name="修改技能").click()
    await expect(adm.locator("#error")).to_contain_text("本站没有这个技能组", timeout=WAIT_MS)
    await card.get_by_label("技能（技能组=等级，…）").fill("general=2")
    await row.get_by_role("button", name="修改技能").click()
    await expect(row.locator('[data-field="skills"]')).to_have_text("general=2", timeout=WAIT_MS)
    await adm.screenshot(path=str(shots / "desk-console-admin-zh.png"), full_page=True)

    # Disabled: the agent's page goes back to the login, and the login is refused.
    await row.get_by_role("button", name="停用").click()
    await expect(row).to_have_attribute("data-disabled", "yes", timeout=WAIT_MS)
    await expect(new.get_by_label("Agent code")).to_be_visible(timeout=WAIT_MS)
    await new.get_by_label("Agent code").fill(NEW_AGENT)
    await new.get_by_label("Password").fill(NEW_PASSWORD)
    await new.get_by_role("button", name="Log in").click()
    await expect(new.locator("#error")).to_contain_text("agent code or password is wrong", timeout=WAIT_MS)

    async def audited() -> list[tuple[str, str, str, str]] | None:
        entries = await fetch(cluster.config, since=None, who="", limit=1000, deadline_s=RPC_S)
        got = [
            (e.site_id, e.action, e.target, e.outcome)
            for e in entries
            if e.action.startswith(("agent-", "admin/"))
        ]
        wanted = {
            (GZ, "agent-add", NEW_AGENT),
            (GZ, "agent-skills", NEW_AGENT),
            (GZ, "agent-disable", NEW_AGENT),
        }
        if not any(e.action == "customer-edit" and e.site_id == GZ for e in entries):
            return None  # the agent's edit of the caller's record is in the same log
        return (
            got
            if wanted <= {g[:3] for g in got} and any(g[0] == SZ and g[3] == "denied" for g in got)
            else None
        )

    await eventually(audited, timeout_s=30, what="the administrator's steps in central's audit log")
