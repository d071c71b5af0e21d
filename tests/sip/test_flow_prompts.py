"""An IVR flow's prompts over SIP: each prompt the flow says is heard as its own file (built by
`vcc prompts build` from the flow's text), one after the other; a prompt whose file is missing
(its text changed and the prompts were not rebuilt) is heard as the menu file, warned and counted.

A real site node with its rtpengine, the flow and the catalog published in a real etcd under a
prefix of this module's own (as central writes them), SIPp as the caller with our RTP socket as
its ear; the key is an RFC 4733 event sent from that ear."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aetcd
import pytest
from prometheus_client import generate_latest

from site_node.app import SiteNode
from site_node.media.prompts import flow_prompt_name, prompt_path, site_prompts
from tests.helpers import eventually
from tests.sip.audio import best_correlation, read_wav, voiced
from tests.sip.conftest import sip_config_dict
from tools.province.etcd_server import EtcdServer
from tools.province.prompts import build_prompts
from tools.province.rtp_ear import RtpEar
from tools.province.sipp import call_scenario, run_sipp
from vcc.config import parse_province
from vcc.ivr.catalog import parse_catalog
from vcc.ivr.flow import Flow
from vcc.ivr.keys import canonical_catalog, canonical_flow, catalog_key, flow_key
from vcc.ivr.validate import load_flow

pytestmark = [pytest.mark.timeout(120)]

PREFIX = "/vcc-flow-prompts"
FIRST = "Welcome to the parcel desk. Press a key."
SECOND = "Your parcel reaches Shenzhen tomorrow."
CHANGED = "Hello, this greeting was reworded."


def flow_doc(version: int, first: str) -> str:
    return f"""
id: two-prompts
version: {version}
languages: [en]
start: first
on_fail: done
key_prompt: key
prompts:
  key: {{en: ", press {{key}}."}}
  first: {{en: "{first}"}}
  second: {{en: "{SECOND}"}}
nodes:
  first: {{kind: collect, prompt: first, into: choice, max_length: 1, terminator: null, timeout_s: 30,
          next: second}}
  second: {{kind: collect, prompt: second, into: more, max_length: 1, terminator: null, timeout_s: 30,
           next: done}}
  done: {{kind: hangup}}
"""


CATALOG = """
services:
  - id: parcel-desk
    name: {en: Parcel desk}
    numbers: ["10000"]
    flow: two-prompts
    cities: [gz]
    skill_groups: [general]
"""


async def publish(etcd: EtcdServer, province: str, flow: Flow | None = None) -> None:
    """What central's leader writes: the flow version, then the catalog."""
    await publish_as(etcd, PREFIX, province, flow, CATALOG if flow is None else None)


async def publish_as(
    etcd: EtcdServer, prefix: str, province: str, flow: Flow | None, catalog: str | None
) -> None:
    """The flow version (if given), then the catalog (if given), under `prefix`."""
    host, port = etcd.endpoint.rsplit(":", 1)
    async with aetcd.Client(host=host, port=int(port), timeout=5) as client:
        if flow is not None:
            key = flow_key(prefix, province, flow.id, flow.version)
            await client.put(key.encode(), canonical_flow(flow).encode())
        if catalog is not None:
            text = canonical_catalog(parse_catalog(catalog), 1)
            await client.put(catalog_key(prefix, province).encode(), text.encode())


@pytest.fixture
async def flow_node(
    tmp_path_factory: pytest.TempPathFactory, etcd_server: EtcdServer
) -> AsyncIterator[SiteNode]:
    tmp = tmp_path_factory.mktemp("flow-prompts")
    prompts = tmp / "prompts"
    raw = sip_config_dict(tmp, prompts, etcd_server.endpoint)
    raw["etcd"]["prefix"] = PREFIX  # the other SIP tests' sites play the one menu
    config = parse_province(raw)
    # The site's menu and queue, and the flow's prompts, as `vcc prompts build` makes them.
    build_prompts(config, prompts, flows=[load_flow(flow_doc(1, FIRST))])
    province = config.province.id
    await publish(etcd_server, province, load_flow(flow_doc(1, FIRST)))
    await publish(etcd_server, province)
    node = SiteNode(config, "gz")
    await node.start()

    async def has_flow() -> bool:
        return node.flows.current("two-prompts") is not None and node.flows.catalog is not None

    await eventually(has_flow, what="the site holds the flow and the catalog")
    yield node
    await node.stop()


def prompt_file(node: SiteNode, prompt_id: str, text: str) -> Path:
    assert node.sip is not None and node.sip.hear.prompts_dir is not None
    return node.sip.hear.prompts_dir / f"{flow_prompt_name('two-prompts', prompt_id, text, 'en')}.wav"


async def call_and_press(
    node: SiteNode, tmp: Path, first: list[int], second: list[int] | None
) -> tuple[list[int], list[int]]:
    """Dial, listen until `first` was heard, press 1, listen to `second` (when given): the audio
    before the key and after it."""
    assert node.sip is not None
    ear = await RtpEar.open()
    # The prompts and the key between them; a busy machine delays the key's effect, not playback.
    hold_ms = int((len(first) + len(second or [])) / 8) + 3000
    scenario = call_scenario("", media_port=str(ear.port), settle_ms=0)
    caller = asyncio.create_task(run_sipp(scenario, node.sip.address, tmp, hold_ms=hold_ms))
    try:

        async def heard_first() -> bool:
            return len(voiced(ear.audio())) >= len(voiced(first)) - 320

        await eventually(heard_first, timeout_s=30, interval_s=0.1, what="the first prompt heard")
        await asyncio.sleep(0.5)  # its end: silence
        split = len(ear.audio())
        await ear.send_digit("1")
        if second is not None:

            async def heard_second() -> bool:
                return len(voiced(ear.audio()[split:])) >= len(voiced(second)) - 320

            await eventually(heard_second, timeout_s=30, interval_s=0.1, what="the second prompt heard")
            await asyncio.sleep(0.5)
        result = await caller
        assert result.ok, result.stdout + result.errors
        audio = ear.audio()
    finally:
        ear.close()
        if not caller.done():
            caller.cancel()
    return voiced(audio[:split]), voiced(audio[split:])


async def test_each_prompt_of_the_flow_is_heard_as_its_own_file_and_a_missing_one_as_the_menu(
    flow_node: SiteNode, etcd_server: EtcdServer, tmp_path: Path
) -> None:
    assert flow_node.sip is not None
    hear = flow_node.sip.hear
    first = read_wav(prompt_file(flow_node, "first", FIRST))
    second = read_wav(prompt_file(flow_node, "second", SECOND))
    menu = read_wav(prompt_path(hear.prompts_dir or Path(), site_prompts(flow_node.site)["menu"]))
    one, two = await call_and_press(flow_node, tmp_path / "one", first, second)
    # Before the key: the first prompt, whole (within two packets), and not the second's file.
    assert abs(len(one) - len(voiced(first))) <= 320, (len(one), len(voiced(first)))
    assert best_correlation(one, voiced(first)) > 0.9
    assert best_correlation(one, voiced(second)) < 0.5
    assert best_correlation(one, voiced(menu)) < 0.5
    # After it: the second prompt, and not the first again.
    assert abs(len(two) - len(voiced(second))) <= 320, (len(two), len(voiced(second)))
    assert best_correlation(two, voiced(second)) > 0.9
    assert best_correlation(two, voiced(first)) < 0.5
    assert hear.plays["two-prompts/first"] == 1 and hear.plays["two-prompts/second"] == 1
    assert hear.fallbacks == 0

    # Version 2 rewords the greeting, and its prompts were not rebuilt: the caller hears the menu
    # file there (never silence), the fallback is counted; the second prompt's file still plays.
    province = flow_node.province.province.id
    await publish(etcd_server, province, load_flow(flow_doc(2, CHANGED)))

    async def has_v2() -> bool:
        flow = flow_node.flows.current("two-prompts")
        return flow is not None and flow.version == 2

    await eventually(has_v2, what="the site holds version 2")
    assert not prompt_file(flow_node, "first", CHANGED).exists()
    # The key cuts the menu file short: 2.5 s of it are enough to know it.
    one, _ = await call_and_press(flow_node, tmp_path / "two", menu[:20000], None)
    assert best_correlation(one, voiced(menu)) > 0.9
    assert best_correlation(one, voiced(first)) < 0.5
    assert hear.fallbacks == 1 and hear.plays["menu"] == 1
    assert hear.plays["two-prompts/second"] == 2
    scraped = generate_latest(flow_node.metrics.registry).decode()
    assert 'vcc_site_prompt_fallbacks_total{site="gz"} 1.0' in scraped
