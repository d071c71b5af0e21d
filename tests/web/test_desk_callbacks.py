"""Preview callbacks on the agent's desktop in headless Chromium, on a real site node: a callback
asked in a flow (a call over the real gRPC trunk) is shown to the ready agent of its group, who
declines it (in Chinese: the next callback is shown) and accepts the next (in English: dialled
for that agent). Bad answers are refused in words and change nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ivr.flows import as_yaml, small
from tests.web.conftest import need_chromium
from tests.web.test_desk_api import Site, key, site  # noqa: F401  (the site fixture)
from tools.admin.call import scripted_call
from tools.province.chromium import launch
from tools.province.generate import DEFAULT_PASSWORD
from vcc.ivr.catalog import parse_catalog
from vcc.ivr.keys import canonical_catalog, canonical_flow, catalog_key, flow_key
from vcc.ivr.validate import load_flow

pytestmark = pytest.mark.timeout(120)
WAIT_MS = 20_000
NUMBER = "95577"


def publish_preview_flow(s: Site) -> None:
    """What the site's etcd watcher does with central's push: the flow, then the catalog."""
    data = small()
    data["prompts"]["cb"] = {"zh": "我们会回电。", "en": "We will call you back."}
    data["nodes"]["a_queue"] = {
        "kind": "callback",
        "prompt": "cb",
        "skill_group": "billing",
        "mode": "preview",
    }
    flow = load_flow(as_yaml(data))
    etcd = s.node.province.etcd
    province = s.node.province.province.id
    catalog = s.node.flows
    catalog.put(
        flow_key(etcd.prefix, province, flow.id, 1), canonical_flow(flow).encode(), etcd.prefix, province
    )
    services = parse_catalog(
        as_yaml({"services": [{"id": "cb", "name": {"zh": "回呼"}, "numbers": [NUMBER], "flow": "small",
                               "cities": ["gz"], "skill_groups": ["billing", "general"]}]})
    )  # fmt: skip
    catalog.put(
        catalog_key(etcd.prefix, province), canonical_catalog(services, 1).encode(), etcd.prefix, province
    )


async def test_an_agent_declines_one_callback_and_accepts_the_next(site: Site, tmp_path: Path) -> None:  # noqa: F811
    need_chromium()
    from playwright.async_api import async_playwright, expect

    publish_preview_flow(site)
    sb = site.node.switchboard
    billing = next(a.code for a in sb.site.agents if "billing" in a.skills and a.code != site.other_leader)
    asked = []
    for ani in ("13800000031", "13800000032"):
        report = await scripted_call(site.node.address, NUMBER, ["1"], ani=ani)
        assert report["ended"]["reason"] == "callback-asked", report
        asked.append(report["call_id"])
    first, second = (f"{c}-cb" for c in asked)
    async with site.client() as client:
        # No desk session: refused, nothing changes.
        refused = await client.post(f"/api/callbacks/{first}/accept", json={"idempotency_key": key()})
        assert refused.status_code == 401
    async with async_playwright() as pw:
        browser = await launch(pw, None)  # an in-process site without tls: plain HTTP
        try:
            page = await browser.new_page()
            await page.goto(f"{site.base}/desk?lang=zh")
            await page.get_by_label("工号").fill(billing)
            await page.get_by_label("密码").fill(DEFAULT_PASSWORD)
            await page.get_by_role("button", name="登录").click()
            await page.get_by_role("button", name="就绪", exact=True).click()
            card = page.get_by_role("region", name="待回呼")
            await expect(card).to_be_visible(timeout=WAIT_MS)
            await expect(card.locator('[data-field="cbp-number"]')).to_have_text("13800000031")
            await expect(card.locator('[data-field="cbp-reason"]')).to_have_text("语音导航中预约")
            await card.get_by_role("button", name="拒绝").click()
            # The next callback is shown; the declined one waits for another agent.
            await expect(card.locator('[data-field="cbp-number"]')).to_have_text(
                "13800000032", timeout=WAIT_MS
            )
            assert sb.dialler.callbacks.get(first).attempts[-1].outcome == "agent-declined"
            await page.get_by_role("button", name="English").click()
            card = page.get_by_role("region", name="Callback to make")
            await card.get_by_role("button", name="Accept").click()
            await expect(card).to_be_hidden(timeout=WAIT_MS)
            (attempt,) = sb.dialler.callbacks.get(second).attempts
            assert attempt.agent_code == billing  # dialled for the agent who accepted it
            # Answering a callback shown to nobody is refused in words.
            async with site.client() as client:
                cookies = {c["name"]: c["value"] for c in await page.context.cookies()}
                client.cookies.update(cookies)
                again = await client.post(f"/api/callbacks/{second}/accept", json={"idempotency_key": key()})
                assert again.status_code == 404 and "not shown to anyone" in again.text
                bad = await client.post(f"/api/callbacks/{second}/maybe", json={"idempotency_key": key()})
                assert bad.status_code == 404 and "accept or decline" in bad.text
            assert "Traceback" not in (await page.content())
            await page.screenshot(path=str(tmp_path / "desk-callback.png"), full_page=True)
        finally:
            await browser.close()


async def test_the_cti_api_shows_the_callback_and_takes_one_answer_per_key(site: Site) -> None:  # noqa: F811
    import asyncio

    import grpc

    from tests.integration.support import Desktop
    from vcc import rpc
    from vcc.tls import DESKTOP
    from vcc.v1 import cti_pb2

    publish_preview_flow(site)
    sb = site.node.switchboard
    billing = next(a.code for a in sb.site.agents if "billing" in a.skills and a.code != site.other_leader)
    report = await scripted_call(site.node.address, NUMBER, ["1"], ani="13800000033")
    callback_id = f"{report['call_id']}-cb"
    async with rpc.channel(site.node.address, persona=DESKTOP) as ch:
        desk = Desktop(ch, billing)
        await desk.login()
        await desk.next_event("state_changed")  # the stream is open: nothing said after is missed
        await desk.ready()
        shown = (await desk.next_event("callback_preview")).callback_preview
        assert (shown.callback_id, shown.stage, shown.number, shown.skill_group, shown.reason) == (
            callback_id,
            "offered",
            "13800000033",
            "billing",
            "flow-offer",
        )
        assert shown.call_id == report["call_id"] and shown.attempt == 1 and shown.timeout_s > 0

        def answer(accept: bool, idem: str, cb: str = callback_id) -> object:
            return desk.stub.AnswerCallbackPreview(
                cti_pb2.AnswerCallbackPreviewRequest(
                    idempotency_key=idem, session_token=desk.token, callback_id=cb, accept=accept
                ),
                timeout=5,
            )

        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await answer(True, key(), cb="")
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await answer(True, key(), cb="nobody-cb")
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert sb.dialler.previews == {callback_id: billing}  # nothing changed
        # A trunk gateway follows the dial-outs: accepted, the callback is dialled for this agent,
        # and the callee who answers rings this agent (not whoever the queue would choose).
        from tests.integration.support import Caller
        from vcc.tls import TRUNK
        from vcc.v1 import dialout_pb2, dialout_pb2_grpc

        async with rpc.channel(site.node.address, persona=TRUNK) as trunk_ch:
            gateway = dialout_pb2_grpc.DialOutServiceStub(trunk_ch).WatchDialOuts(
                dialout_pb2.WatchDialOutsRequest()
            )
            await asyncio.sleep(0.3)  # its stream is open before the dial
            once = key()
            await answer(True, once)
            await answer(True, once)  # retried with its key: answered as the first time, applied once
            assert len(sb.dialler.callbacks.get(callback_id).attempts) == 1
            dial = await asyncio.wait_for(gateway.read(), 10)
            assert isinstance(dial, dialout_pb2.DialOut) and dial.number == "13800000033"
            callee = Caller(trunk_ch, ani="13800000033", dial_id=dial.dial_id)
            offered = (await desk.next_event("call_offered")).call_offered
            assert offered.call_id == (await callee.until("ringing")).call_id
            callee.hang_up()
            await callee.until("ended")
            gateway.cancel()
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await answer(False, key())  # a new request: nothing is shown any more
        assert again.value.code() == grpc.StatusCode.NOT_FOUND
        await desk.close()
