"""`vcc call --sip`: what it refuses before dialling (a site with no SIP trunk, keys that are
not phone keys). Its call itself is tested in test_number_prompts.py (prompts told from the
audio, two key groups, the site hanging up)."""

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
