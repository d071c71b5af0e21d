"""`vcc call --sip`: the scripted test call over real SIP (SIPp, our own ear) to a site's SIP
trunk. The two-prompt flow of test_flow_prompts: the caller hears the first prompt, presses 1
once it is quiet, hears the second, presses 2, and the flow hangs up. The report tells the
prompts from the audio alone, in order, and that the site hung up; bad keys are refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from site_node.app import SiteNode
from site_node.media.prompts import prompt_path, site_prompts
from tests.sip.test_flow_prompts import FIRST, SECOND, flow_doc, flow_node  # noqa: F401 (the fixture)
from tools.admin.call_sip import candidates, sip_call
from tools.cli import app
from vcc.ivr.validate import load_flow

pytestmark = [pytest.mark.timeout(120)]


def options(node: SiteNode) -> list:  # type: ignore[type-arg]
    assert node.sip is not None and node.sip.hear.prompts_dir is not None
    prompts = node.sip.hear.prompts_dir
    files = {k: (prompt_path(prompts, s), s.text) for k, s in site_prompts(node.site).items()}
    return candidates([load_flow(flow_doc(1, FIRST))], prompts, files)


async def test_a_sip_call_reports_the_prompts_heard_in_order_and_who_hung_up(
    flow_node: SiteNode,  # noqa: F811
    tmp_path: Path,
) -> None:
    assert flow_node.sip is not None
    found = options(flow_node)
    # The key prompt has {key}: its fixed part and the number clips.
    assert {c.prompt for c in found} == {"first", "second", "key", "number", "menu", "queue"}
    report = await sip_call(flow_node.sip.address, "10000", ["1", "2"], found, tmp_path, hang_up_after_s=40)
    events = [
        (e.kind, dict(e.data))
        for _, e in await flow_node.outbox.pending(10_000)
        if e.call_id == report["call_id"]
    ]
    print("DBG", report["steps"], report["heard"], report["heard_s"], report["ended"])
    assert [h["prompt"] for h in report["heard"]] == ["first", "second"], (report, events)
    assert [h["text"] for h in report["heard"]] == [FIRST, SECOND]
    assert [s["keys"] for s in report["steps"]] == ["1", "2"]
    assert report["ended"] == {"hung_up_by": "site"}
    assert report["call_id"] in {e.call_id for _, e in await flow_node.outbox.pending(10_000)}


def test_vcc_call_sip_refuses_a_site_without_sip_and_keys_that_are_not_keys(tmp_path: Path) -> None:
    from tests.integration.support import local_province
    from tools.province.generate import SiteSpec

    config = local_province(tmp_path, [SiteSpec("gz", "Guangzhou", trunk_channels=2, agents={"general": 1})])
    result = CliRunner().invoke(
        app, ["call", "--config", str(config), "--site", "gz", "--number", "10000", "--sip"]
    )
    assert result.exit_code == 2 and "has no SIP trunk" in result.output, result.output


async def test_keys_that_are_not_phone_keys_are_refused_before_dialling(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a phone key"):
        await sip_call("127.0.0.1:9", "10000", ["1", "2x"], [], tmp_path)
    assert not await asyncio.to_thread(lambda: list(tmp_path.iterdir()))  # nothing was dialled
