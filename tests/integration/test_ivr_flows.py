"""IVR flows on real processes: etcd, central and a site; flows pushed to central reach the site
through etcd, and test calls over the real gRPC trunk walk them (`vcc call`'s own code).

One cluster for the module: a 5x5 flow walked to every leaf, a version pushed while calls are in
the flow (none dropped, each finishing its own version), a VIP and a normal caller hearing
different menus, a look-up whose answer comes after its timeout, the closed message on a holiday
(the flow's calendar, the call's time), the maximum wait leading to a callback offer, and a
voicemail left. Every call's record at central is checked: one record, its outcome, its keys.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import struct
import uuid
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from typer.testing import CliRunner

from central.customer_pins import DEMO_PIN
from tests.helpers import eventually
from tests.integration.support import Caller, Desktop, address, central_records, password_hash
from tests.ivr.flows import FLOWS, as_yaml
from tests.web.conftest import need_chromium
from tools.admin.call import scripted_call
from tools.cli import app
from tools.province.chromium import launch
from tools.province.cluster import Cluster, vcc_command
from tools.province.generate import DEFAULT_PASSWORD, SiteSpec, generate_province
from tools.province.netutil import free_port
from vcc import rpc
from vcc.https import client_verify, province_ca, web_url
from vcc.tls import DESKTOP, TOOL, TRUNK
from vcc.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    common_pb2,
    cti_pb2,
    dialout_pb2,
    dialout_pb2_grpc,
    ivr_pb2,
    ivr_pb2_grpc,
    voicemail_pb2,
    voicemail_pb2_grpc,
)

pytestmark = pytest.mark.cluster

GOLD = "13800000000"  # demo customer 0 is gold, 2 is normal (central.customers.LEVELS)
NORMAL = "13800000002"
WRONG_PIN = "975318"
TREE = "95501"
SMART = "95502"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    run_dir = tmp_path_factory.mktemp("ivr-flows")
    config = generate_province(
        [SiteSpec("gz", "广州 Guangzhou", trunk_channels=40, agents={"general": 1, "parcel": 1})],
        etcd_endpoint="127.0.0.1:2379",
        central_listen=f"127.0.0.1:{free_port()}",
        database_url=f"sqlite+aiosqlite:///{run_dir / 'central.db'}",
        password_hash=password_hash(),
        outbox_dir=run_dir / "outbox",
        lease_ttl_s=2,
        routing={"mode": "isolated"},
        desktop=True,
    )
    path = run_dir / "province.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    started = asyncio.run(Cluster.start(path, run_dir / "run", seed_customers=3, fresh_ports=True))
    try:
        asyncio.run(_push_all(started))
        yield started
    finally:
        asyncio.run(started.stop())


def _prompts(*ids: str) -> dict[str, dict[str, str]]:
    texts = {i: {"zh": f"{i}。"} for i in ids}
    texts["key"] = {"zh": "，请按{key}。"}
    return texts


def tree_flow(version: int = 1) -> dict[str, Any]:
    """Five menus deep, five options wide: options 1-4 end at a leaf, 5 goes one level down."""
    nodes: dict[str, Any] = {}
    prompts = _prompts("key", "opt", "down", *(f"menu{k}" for k in range(1, 6)))
    for level in range(1, 6):
        options = [{"prompt": "opt", "next": f"leaf_{level}_{j}"} for j in range(1, 5)]
        options.append(
            {"prompt": "down", "next": f"menu{level + 1}"}
            if level < 5
            else {"prompt": "opt", "next": "leaf_5_5"}
        )
        nodes[f"menu{level}"] = {
            "kind": "menu",
            "prompt": f"menu{level}",
            "options": options,
            "timeout_s": 10,
        }
        for j in range(1, 6 if level == 5 else 5):
            nodes[f"leaf_{level}_{j}"] = {"kind": "hangup", "reason": f"leaf-{level}-{j}-v{version}"}
    return {
        "id": "tree", "version": version, "languages": ["zh"], "start": "menu1", "on_fail": "leaf_1_1",
        "key_prompt": "key", "prompts": prompts, "nodes": nodes,
    }  # fmt: skip


def smart_flow() -> dict[str, Any]:
    """A look-up decides the menu (VIP or not); then: a slow look-up, a queue with a maximum wait
    and a callback offer, a voicemail; closed on the calendar's holiday (today, in China)."""
    today = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date()
    return {
        "id": "smart", "version": 1, "languages": ["zh"], "start": "hours", "on_fail": "bye",
        "key_prompt": "key",
        "calendar": {"utc_offset_h": 8, "holidays": []},
        "prompts": _prompts("key", "closed", "vip_menu", "menu", "slow", "late", "pos", "cb", "tone", "opt"),
        "nodes": {
            # The closed test pushes the same flow with today as a holiday (version 2).
            "hours": {"kind": "branch", "cases": [{"when": {"holiday": True}, "next": "closed"}],
                      "else": "who"},
            "closed": {"kind": "hangup", "prompt": "closed", "reason": "closed"},
            "who": {"kind": "lookup", "name": "customer", "args": {"phone": "{ani}"}, "into": "customer",
                    "timeout_s": 5, "next": "level", "on_timeout": "menu"},
            "level": {"kind": "branch", "cases": [{"when": {"var": "customer.level", "eq": "gold"},
                                                   "next": "vip_menu"}], "else": "menu"},
            "vip_menu": {"kind": "menu", "prompt": "vip_menu", "timeout_s": 10,
                         "options": [{"prompt": "opt", "next": "bye"}]},
            "menu": {"kind": "menu", "prompt": "menu", "timeout_s": 10, "options": [
                {"prompt": "opt", "next": "slow"}, {"prompt": "opt", "next": "wait"},
                {"prompt": "opt", "next": "message"}]},
            # Central cannot answer within a millisecond: its answer comes late, the timeout's path.
            "slow": {"kind": "lookup", "name": "customer", "args": {"phone": "{ani}"}, "timeout_s": 0.001,
                     "prompt": "slow", "next": "bye", "on_timeout": "late_end"},
            "late_end": {"kind": "hangup", "prompt": "late", "reason": "lookup-late"},
            "wait": {"kind": "queue", "skill_group": "parcel", "treatment": {
                "position_prompt": "pos", "announce_every_s": 5, "max_wait_s": 1.5,
                "on_max_wait": "callback"}},
            "callback": {"kind": "callback", "prompt": "cb", "skill_group": "parcel"},
            "message": {"kind": "voicemail", "prompt": "tone", "box": "parcel"},
            "bye": {"kind": "hangup", "reason": "done"},
        },
        "_today": today.isoformat(),
    }  # fmt: skip


def catalog() -> str:
    return as_yaml(
        {
            "services": [
                {"id": "tree", "name": {"zh": "树"}, "numbers": [TREE], "flow": "tree", "cities": ["gz"],
                 "skill_groups": ["general"]},
                {"id": "smart", "name": {"zh": "智能"}, "numbers": [SMART], "flow": "smart", "cities": ["gz"],
                 "skill_groups": ["general", "parcel"]},
            ]
        }
    )  # fmt: skip


async def push(cluster: Cluster, document: str, *, is_catalog: bool = False) -> None:
    async with rpc.channel(cluster.config.central.listen) as ch:
        stub = ivr_pb2_grpc.IvrServiceStub(ch)
        if is_catalog:
            await stub.PushServiceCatalog(ivr_pb2.PushServiceCatalogRequest(document=document), timeout=10)
        else:
            await stub.PushFlow(ivr_pb2.PushFlowRequest(document=document), timeout=10)


def smart_doc(holiday: bool = False, version: int = 1) -> str:
    data = smart_flow()
    today = data.pop("_today")
    data["version"] = version
    if holiday:
        data["calendar"]["holidays"] = [today]
    return as_yaml(data)


async def _push_all(cluster: Cluster) -> None:
    await push(cluster, (FLOWS / "pin-check.yaml").read_text(encoding="utf-8"))
    await push(cluster, as_yaml(tree_flow()))
    await push(cluster, smart_doc())
    await push(cluster, catalog(), is_catalog=True)
    await until_version(cluster, TREE, 1)


async def until_version(cluster: Cluster, number: str, version: int) -> None:
    """Until the site starts new calls of `number` on `version` (the push reached it)."""
    for _ in range(150):
        report = await scripted_call(address(cluster, "gz"), number, [], hang_up_after_s=0.5)
        versions = {h.get("version") for h in report["heard"]}
        if versions == {version}:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the site never started calls of {number} on version {version}")


def trunk(cluster: Cluster) -> grpc.aio.Channel:
    """One trunk channel for a test's calls (many at once share it, as a real trunk does)."""
    return rpc.channel(address(cluster, "gz"), persona=TRUNK)


async def call(
    ch: grpc.aio.Channel, cluster: Cluster, number: str, keys: list[str], **kw: Any
) -> dict[str, Any]:
    return await scripted_call(
        address(cluster, "gz"), number, keys, central_address=cluster.config.central.listen, channel=ch, **kw
    )


async def test_a_five_by_five_flow_walked_to_every_leaf(cluster: Cluster) -> None:
    async with trunk(cluster) as ch:
        paths = [
            ["5"] * (level - 1) + [str(j)] for level in range(1, 6) for j in range(1, 6 if level == 5 else 5)
        ]
        assert len(paths) == 21
        reports = await asyncio.gather(*(call(ch, cluster, TREE, path) for path in paths))
        for path, report in zip(paths, reports, strict=True):
            level, j = len(path), int(path[-1])
            assert report["ended"] == {"outcome": "self_served", "reason": f"ivr-leaf-{level}-{j}-v1"}, report
            assert [h["prompt"] for h in report["heard"] if h["prompt"].startswith("menu")] == [
                f"menu{k}" for k in range(1, level + 1)
            ]
            keys = [e for e in report["effects"] if e["event"] == "DIGITS"]
            assert [k["digits"] for k in keys] == path
            assert keys[-1]["effect"] == f"option {j} -> leaf_{level}_{j}"
            assert report["record"]["outcome"] == "self_served"
        ids = [r["call_id"] for r in reports]
        records = [r for r in await central_records(cluster) if r.call_id in set(ids)]
        assert sorted(r.call_id for r in records) == sorted(ids)


async def test_a_version_pushed_while_calls_are_in_the_flow_drops_none(cluster: Cluster) -> None:
    async with trunk(cluster) as ch:
        gate = asyncio.Event()
        old_calls = [asyncio.create_task(call(ch, cluster, TREE, ["5", "2"], gate=gate)) for _ in range(3)]
        await asyncio.sleep(0.5)  # the three wait at the first menu, on version 1
        await push(cluster, as_yaml(tree_flow(version=2)))
        await until_version(cluster, TREE, 2)
        new = await call(ch, cluster, TREE, ["5", "2"])
        gate.set()
        old = await asyncio.gather(*old_calls)
        for report in old:
            assert report["ended"] == {"outcome": "self_served", "reason": "ivr-leaf-2-2-v1"}, report
            assert {h["version"] for h in report["heard"]} == {1}
        assert new["ended"] == {"outcome": "self_served", "reason": "ivr-leaf-2-2-v2"}


async def test_a_vip_and_a_normal_caller_hear_different_menus(cluster: Cluster) -> None:
    async with trunk(cluster) as ch:
        vip, normal = await asyncio.gather(
            call(ch, cluster, SMART, ["1"], ani=GOLD),
            call(ch, cluster, SMART, ["1"], ani=NORMAL),
        )
        assert "vip_menu" in [h["prompt"] for h in vip["heard"]]
        assert "menu" in [h["prompt"] for h in normal["heard"]]
        assert "vip_menu" not in [h["prompt"] for h in normal["heard"]]
        assert vip["ended"] == {"outcome": "self_served", "reason": "ivr-done"}


async def test_a_late_lookup_takes_the_timeout_path(cluster: Cluster) -> None:
    async with trunk(cluster) as ch:
        report = await call(ch, cluster, SMART, ["1"], ani=NORMAL)
        assert [h["prompt"] for h in report["heard"]][-2:] == ["slow", "late"]
        assert report["ended"] == {"outcome": "self_served", "reason": "ivr-lookup-late"}


async def test_max_wait_leads_to_a_callback_offer_dialled_when_an_agent_is_ready(cluster: Cluster) -> None:
    parcel = next(a.code for a in cluster.config.site("gz").agents if "parcel" in a.skills)
    async with trunk(cluster) as ch, rpc.channel(address(cluster, "gz"), persona=DESKTOP) as desk_ch:
        report = await call(ch, cluster, SMART, ["2"], ani=NORMAL, wait_s=10)
        heard = [h["prompt"] for h in report["heard"]]
        assert heard[-2:] == ["pos", "cb"], heard
        assert report["queue"] == "parcel"
        assert report["ended"] == {"outcome": "self_served", "reason": "callback-asked"}
        (asked,) = [e for e in report["effects"] if e["event"] == "CALLBACK"]
        assert asked["stage"] == "asked" and asked["skill_group"] == "parcel"
        assert "13800000002" not in asked["number"]  # masked in the record
        # A trunk gateway follows the dial-outs; the parcel agent becomes ready: it is dialled.
        gateway = dialout_pb2_grpc.DialOutServiceStub(ch).WatchDialOuts(dialout_pb2.WatchDialOutsRequest())
        desk = Desktop(desk_ch, parcel)
        await desk.login()
        await desk.ready()
        dial = await asyncio.wait_for(gateway.read(), 10)
        assert isinstance(dial, dialout_pb2.DialOut)
        assert (dial.number, dial.skill_group, dial.attempt) == (NORMAL, "parcel", 1)
        callee = Caller(ch, ani=NORMAL, dial_id=dial.dial_id)
        offered = await desk.answer_next()
        assert offered.call_id == (await callee.until("connected")).call_id
        callee.hang_up()
        await callee.until("ended")
        gateway.cancel()
        await desk.close()

    async def dialled() -> list[str] | None:
        (record,) = [r for r in await central_records(cluster) if r.call_id == report["call_id"]]
        stages = [e.data["stage"] for e in record.events if e.kind == common_pb2.CALL_EVENT_KIND_CALLBACK]
        return stages if stages[-1] == "answered" else None

    assert await eventually(dialled, what="the callback's attempt at central") == [
        "asked",
        "dialling",
        "answered",
    ]


async def test_a_voicemail_left_and_worked(cluster: Cluster) -> None:
    async with trunk(cluster) as ch:
        report = await call(ch, cluster, SMART, ["3"], ani=NORMAL, hang_up_after_s=2.5)
    assert report["heard"][-1]["prompt"] == "tone"
    assert report["ended"] == {"outcome": "self_served", "reason": "voicemail-left"}
    assert report["voicemail"] == f"{report['call_id']}-vm"  # the trunk is told to record the caller
    stages = [e["stage"] for e in report["effects"] if e["event"] == "VOICEMAIL"]
    assert stages == ["recording", "new"]
    parcel = next(a.code for a in cluster.config.site("gz").agents if "parcel" in a.skills)
    general = next(a.code for a in cluster.config.site("gz").agents if "parcel" not in a.skills)
    async with rpc.channel(address(cluster, "gz"), persona=DESKTOP) as desk_ch:
        box = voicemail_pb2_grpc.VoicemailServiceStub(desk_ch)
        outsider = Desktop(desk_ch, general)
        await outsider.login()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await box.ListVoicemail(
                voicemail_pb2.ListVoicemailRequest(session_token=outsider.token, skill_group="parcel"),
                timeout=5,
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await outsider.close()
        desk = Desktop(desk_ch, parcel)
        await desk.login()
        listed = await box.ListVoicemail(
            voicemail_pb2.ListVoicemailRequest(session_token=desk.token, skill_group="parcel"), timeout=5
        )
        (message,) = [m for m in listed.messages if m.call_id == report["call_id"]]
        assert message.state == "new" and message.caller == NORMAL and message.duration_s > 1
        with pytest.raises(grpc.aio.AioRpcError) as early:
            await box.FinishVoicemail(
                voicemail_pb2.FinishVoicemailRequest(session_token=desk.token, message_id=message.message_id),
                timeout=5,
            )
        assert early.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # not taken yet
        taken = voicemail_pb2.TakeVoicemailRequest(session_token=desk.token, message_id=message.message_id)
        assert (await box.TakeVoicemail(taken, timeout=5)).message.agent_code == parcel
        played = await box.PlayVoicemail(
            voicemail_pb2.PlayVoicemailRequest(session_token=desk.token, message_id=message.message_id),
            timeout=5,
        )
        assert played.message.recording and played.message.plays == 1
        done = await box.FinishVoicemail(
            voicemail_pb2.FinishVoicemailRequest(
                session_token=desk.token, message_id=message.message_id, note="called back"
            ),
            timeout=5,
        )
        assert done.message.state == "done"
        await desk.close()

    async def worked() -> list[str] | None:
        (record,) = [r for r in await central_records(cluster) if r.call_id == report["call_id"]]
        names = [common_pb2.CallEventKind.Name(e.kind) for e in record.events]
        stages = [e.data["stage"] for e in record.events if e.kind == common_pb2.CALL_EVENT_KIND_VOICEMAIL]
        assert names.count("CALL_EVENT_KIND_ENDED") == 1 and record.state == common_pb2.CALL_STATE_ENDED
        return stages if stages[-1] == "done" else None

    assert await eventually(worked, what="the voicemail's steps at central") == [
        "recording",
        "new",
        "assigned",
        "played",
        "done",
    ]


async def test_the_desk_lists_takes_plays_and_finishes_a_voicemail(cluster: Cluster) -> None:
    """The same steps from the agent desktop in headless Chromium (F27): the message listed in the
    panel of the agent's group, taken (in Chinese), played in the page's <audio> element from the
    site's endpoint (in English), marked done; another agent's session is refused its audio (403);
    bad requests are refused in words and change nothing; every step in the record at central."""
    need_chromium()
    from playwright.async_api import async_playwright, expect

    async with trunk(cluster) as ch:
        report = await call(ch, cluster, SMART, ["3"], ani="13900000055", hang_up_after_s=2.5)
    assert report["ended"]["reason"] == "voicemail-left"
    message_id = report["voicemail"]
    # A gRPC trunk keeps the caller's voice itself: its audio, where the site looks for it.
    site = cluster.config.site("gz")
    assert site.outbox_path and site.desktop_listen
    audio = Path(site.outbox_path).parent / "recordings-gz" / "voicemail" / f"{message_id}.wav"
    audio.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 8))) for i in range(16000)))
    parcel = next(a.code for a in site.agents if "parcel" in a.skills)
    general = next(a.code for a in site.agents if "parcel" not in a.skills)
    base = web_url(cluster.config, site.desktop_listen, "")

    def post(client: httpx.AsyncClient, path: str, **body: Any) -> Any:
        return client.post(path, json={"idempotency_key": uuid.uuid4().hex, **body})

    async with httpx.AsyncClient(base_url=base, timeout=10, verify=client_verify(cluster.config)) as other:
        assert (await other.get("/api/voicemail")).status_code == 401  # no session
        assert (await post(other, "/api/login", agent_code=general, password=DEFAULT_PASSWORD)).is_success
        # Not the agent's group: nothing listed, and taking it is refused in words.
        assert (await other.get("/api/voicemail")).json()["messages"] == []
        refused = await post(other, f"/api/voicemail/{message_id}/take")
        assert refused.status_code == 403 and refused.json()["error"]["id"] == "not-your-group"
        async with async_playwright() as pw:
            browser = await launch(pw, province_ca(cluster.config))
            try:
                page = await browser.new_page()
                await page.goto(f"{base}/desk?lang=zh")
                await page.get_by_label("工号").fill(parcel)
                await page.get_by_label("密码").fill(DEFAULT_PASSWORD)
                await page.get_by_role("button", name="登录").click()
                panel = page.get_by_role("region", name="语音留言")
                row = panel.locator(f'tr[data-voicemail="{message_id}"]')
                caller = row.locator('[data-field="vm-caller"]')
                await expect(caller).to_have_text("13900000055", timeout=20_000)
                await expect(row.locator('[data-field="vm-state"]')).to_have_text("未处理")
                await row.get_by_role("button", name="领取").click()
                await expect(row.locator('[data-field="vm-agent"]')).to_have_text(parcel, timeout=20_000)
                # Taken by this agent: another agent's session gets no audio, in words.
                theirs = await other.get(f"/api/voicemail/{message_id}/audio")
                assert theirs.status_code == 403 and "not assigned to" in theirs.json()["error"]["message"]
                await page.get_by_role("button", name="English").click()
                panel = page.get_by_role("region", name="Voicemail")
                row = panel.locator(f'tr[data-voicemail="{message_id}"]')
                await row.get_by_role("button", name="Play").click()
                await page.wait_for_function(
                    "document.querySelector('#voicemail-player').duration > 0", timeout=20_000
                )
                seconds = await page.evaluate("document.querySelector('#voicemail-player').duration")
                assert 1.9 < seconds < 2.1  # the two seconds written, played from the site
                async with httpx.AsyncClient(
                    base_url=base, timeout=10, verify=client_verify(cluster.config)
                ) as mine:
                    mine.cookies.update({c["name"]: c["value"] for c in await page.context.cookies()})
                    for path, body, status, error_id in (
                        (f"/api/voicemail/{message_id}/done", {"note": "x" * 501}, 400, "note-too-long"),
                        ("/api/voicemail/not%20an%20id/take", {}, 400, "bad-message-id"),
                        (f"/api/voicemail/{message_id}/erase", {}, 404, "unknown-action"),
                        ("/api/voicemail/nobody-vm/take", {}, 404, "message-not-found"),
                    ):
                        bad = await post(mine, path, **body)
                        assert (bad.status_code, bad.json()["error"]["id"]) == (status, error_id), bad.text
                        assert bad.json()["error"]["message"]
                    (listed,) = [m for m in (await mine.get("/api/voicemail")).json()["messages"]
                                 if m["message_id"] == message_id]  # fmt: skip
                    assert (listed["state"], listed["agent_code"], listed["plays"]) == ("assigned", parcel, 1)
                    finish = await post(other, f"/api/voicemail/{message_id}/done")
                    assert finish.status_code == 403  # not theirs: still this agent's
                await panel.get_by_label("Note on the message").fill("called the customer back")
                await row.get_by_role("button", name="Done").click()
                await expect(row).to_have_count(0, timeout=20_000)  # done: no longer listed
                assert "Traceback" not in await page.content()
                await page.get_by_role("button", name="Log out").click()
            finally:
                await browser.close()
        await post(other, "/api/logout")

    async def worked() -> list[str] | None:
        (record,) = [r for r in await central_records(cluster) if r.call_id == report["call_id"]]
        steps = [e.data for e in record.events if e.kind == common_pb2.CALL_EVENT_KIND_VOICEMAIL]
        if steps[-1]["stage"] != "done":
            return None
        assert steps[-1]["note"] == "called the customer back" and steps[-1]["agent"] == parcel
        return [step["stage"] for step in steps]

    assert await eventually(worked, what="the desk's voicemail steps at central") == [
        "recording", "new", "assigned", "played", "done",
    ]  # fmt: skip


async def test_the_closed_message_on_a_holiday(cluster: Cluster) -> None:
    async with trunk(cluster) as ch:
        await push(cluster, smart_doc(holiday=True, version=2))
        await until_version(cluster, SMART, 2)
        report = await call(ch, cluster, SMART, [])
        assert [h["prompt"] for h in report["heard"]] == ["closed"]
        assert report["ended"] == {"outcome": "self_served", "reason": "ivr-closed"}
        assert report["record"]["outcome"] == "self_served"


async def test_an_agent_sends_the_caller_for_a_pin_and_gets_them_back(cluster: Cluster) -> None:
    """The same agent twice: the caller's right PIN comes back verified, a wrong one not; central
    checks it against the customer's hash (the demo customers' DEMO_PIN)."""
    general = next(a.code for a in cluster.config.site("gz").agents if "general" in a.skills)
    results: list[dict[str, str]] = []
    reports: list[dict[str, Any]] = []
    async with trunk(cluster) as ch, rpc.channel(address(cluster, "gz"), persona=DESKTOP) as desk_ch:
        desk = Desktop(desk_ch, general)
        await desk.login()
        await desk.ready()
        for pin in (DEMO_PIN, WRONG_PIN):
            caller = asyncio.create_task(
                call(ch, cluster, cluster.config.province.service_number, ["1", pin], ani=NORMAL, wait_s=3)
            )
            offered = await desk.answer_next()
            await desk.transfer(offered.call_id, cti_pb2.TRANSFER_KIND_BLIND, ivr=True, flow_id="pin-check")
            back = (await desk.next_event("call_retrieved")).call_retrieved
            results.append(dict(back.ivr_results))
            assert (await desk.state()).call_id == offered.call_id
            reports.append(await caller)
            await eventually(_ready(desk), timeout_s=15, interval_s=0.2, what="the agent ready again")
        await desk.close()
    assert results == [{"pin_check.verified": "true"}, {"pin_check.verified": "false"}]
    for pin, report in zip((DEMO_PIN, WRONG_PIN), reports, strict=True):
        assert report["ended"]["outcome"] == "answered"
        assert "ask_pin" in [h["prompt"] for h in report["heard"]]
        pressed = [e for e in report["effects"] if e["event"] == "DIGITS" and e.get("node") == "ask_pin"]
        assert [e["digits"] for e in pressed] == ["*"] * 6
        assert pin not in repr(report["effects"]) and pin not in repr(report["record"])
        assert report["record"]["agent_code"] == general
    audit = await _audit(cluster)
    checks = [(e.action, e.outcome) for e in audit if e.action == "pin-check" and e.actor == "site/gz"]
    assert checks[:2] == [("pin-check", "not-verified"), ("pin-check", "verified")]  # newest first
    assert DEMO_PIN not in repr(audit) and WRONG_PIN not in repr(audit)


def _ready(desk: Desktop) -> Any:
    async def check() -> bool:
        return (await desk.state()).state == common_pb2.AGENT_STATE_READY

    return check


async def _audit(cluster: Cluster) -> list[audit_pb2.AuditEntry]:
    async with rpc.channel(cluster.config.central.listen, persona=TOOL) as ch:
        stub = audit_pb2_grpc.AuditServiceStub(ch)
        reply = await stub.ListAudit(audit_pb2.ListAuditRequest(who="site/gz", page_size=100), timeout=10)
    return list(reply.entries)


async def test_vcc_call_prints_the_walk_as_json(cluster: Cluster) -> None:
    async def vcc(*args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            *vcc_command("call", "--config", str(cluster.config_path), *args),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    code, out, err = await vcc("--site", "gz", "--number", TREE, "--digits", "5 3", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["ended"]["reason"] in ("ivr-leaf-2-3-v1", "ivr-leaf-2-3-v2")
    assert [e["effect"] for e in report["effects"] if e["event"] == "DIGITS"] == [
        "option 5 -> menu2",
        "option 3 -> leaf_2_3",
    ]


async def test_vcc_call_sip_finds_the_flow_of_the_number_at_central(cluster: Cluster) -> None:
    """`vcc call --sip` listens for the prompts of the flow the number runs in that city."""
    from tools.admin.call_sip import number_flows

    (flow,) = await number_flows(cluster.config.central.listen, TREE, "gz")
    assert flow.id == "tree" and "menu5" in flow.prompts
    assert await number_flows(cluster.config.central.listen, "99999", "gz") == []


def test_vcc_call_refuses_an_unknown_site(cluster: Cluster) -> None:
    result = CliRunner().invoke(
        app, ["call", "--config", str(cluster.config_path), "--site", "nowhere", "--number", TREE]
    )
    assert result.exit_code == 2 and "no site 'nowhere'" in result.output


async def test_callbacks_and_voicemail_survive_the_site_killed(cluster: Cluster) -> None:
    """Last of the module (it kills the site): a voicemail left and a callback asked, SIGKILL,
    a restart; the message is still listed and worked, the callback still dialled, and every
    step is in the one record of each call at central, numbered on from before (none lost as a
    duplicate of a number used before the kill)."""
    caller = "13900000077"  # no customer at central: the normal menu
    parcel = next(a.code for a in cluster.config.site("gz").agents if "parcel" in a.skills)
    await push(cluster, smart_doc(version=3))  # open again after the holiday's test
    await until_version(cluster, SMART, 3)
    async with trunk(cluster) as ch:
        left = await call(ch, cluster, SMART, ["3"], ani=caller, hang_up_after_s=2.5)
        asked = await call(ch, cluster, SMART, ["2"], ani=caller, wait_s=10)
    assert left["ended"]["reason"] == "voicemail-left" and asked["ended"]["reason"] == "callback-asked"
    await cluster.kill_site("gz")
    await cluster.start_site("gz")
    async with trunk(cluster) as ch, rpc.channel(address(cluster, "gz"), persona=DESKTOP) as desk_ch:
        box = voicemail_pb2_grpc.VoicemailServiceStub(desk_ch)
        desk = Desktop(desk_ch, parcel)
        await desk.login()
        listed = await box.ListVoicemail(
            voicemail_pb2.ListVoicemailRequest(session_token=desk.token, skill_group="parcel"), timeout=5
        )
        (message,) = [m for m in listed.messages if m.call_id == left["call_id"]]
        assert message.state == "new" and message.caller == caller
        for rpc_name, request in (
            ("TakeVoicemail", voicemail_pb2.TakeVoicemailRequest),
            ("PlayVoicemail", voicemail_pb2.PlayVoicemailRequest),
            ("FinishVoicemail", voicemail_pb2.FinishVoicemailRequest),
        ):
            await getattr(box, rpc_name)(
                request(session_token=desk.token, message_id=message.message_id), timeout=5
            )
        gateway = dialout_pb2_grpc.DialOutServiceStub(ch).WatchDialOuts(dialout_pb2.WatchDialOutsRequest())
        await asyncio.sleep(0.3)  # the gateway's stream is open before the agent is ready
        await desk.ready()
        dial = await asyncio.wait_for(gateway.read(), 10)
        assert isinstance(dial, dialout_pb2.DialOut)
        assert (dial.number, dial.skill_group, dial.attempt) == (caller, "parcel", 1)
        callee = Caller(ch, ani=caller, dial_id=dial.dial_id)
        await desk.answer_next()
        await callee.until("connected")
        callee.hang_up()
        await callee.until("ended")
        gateway.cancel()
        await desk.close()

    async def steps() -> dict[str, list[str]] | None:
        found: dict[str, list[str]] = {}
        records = await central_records(cluster)
        for report, kind in ((left, "VOICEMAIL"), (asked, "CALLBACK")):
            (record,) = [r for r in records if r.call_id == report["call_id"]]
            # One record, numbered 1..n with no gap and no number twice.
            assert sorted(e.seq for e in record.events) == list(range(1, len(record.events) + 1))
            names = [common_pb2.CallEventKind.Name(e.kind) for e in record.events]
            assert names.count("CALL_EVENT_KIND_ENDED") == 1
            kind_no = common_pb2.CallEventKind.Value(f"CALL_EVENT_KIND_{kind}")
            found[kind] = [e.data["stage"] for e in record.events if e.kind == kind_no]
        done = found["VOICEMAIL"][-1] == "done" and found["CALLBACK"][-1] == "answered"
        return found if done else None

    assert await eventually(steps, what="the steps after the restart at central") == {
        "VOICEMAIL": ["recording", "new", "assigned", "played", "done"],
        "CALLBACK": ["asked", "dialling", "answered"],
    }
