"""Prompts with numbers filled in, over SIP: "You are number {n} in line." is built as its fixed
parts and a clip per number (`vcc prompts build`, no run-time synthesis), and a caller whose
number is 7 hears the first part, "7", then the rest, told apart from the audio by the same
listener `vcc call --sip` uses, over that tool's own SIP call (two keys pressed, the site hanging
up). A number with no clip, or a variable that is not a number, has no pieces (the menu file
plays there, as before)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from site_node.app import SiteNode
from site_node.media.prompts import (
    MOST_SAID_NUMBER,
    flow_prompt_name,
    flow_prompt_pieces,
    prompt_path,
    site_prompts,
)
from tests.helpers import eventually
from tests.sip.conftest import sip_config_dict
from tests.sip.test_flow_prompts import publish_as
from tools.admin.call_sip import candidates, heard_prompts, sip_call
from tools.province.etcd_server import EtcdServer
from tools.province.prompts import build_prompts
from vcc.config import parse_province
from vcc.ivr.validate import load_flow

pytestmark = [pytest.mark.timeout(180)]

PREFIX = "/vcc-number-prompts"
FLOW = """
id: in-line
version: 1
languages: [en]
start: count
on_fail: done
key_prompt: key
prompts:
  key: {en: ", press {key}."}
  place: {en: "You are number {n} in line. Thank you for waiting."}
  ask: {en: "Press a key to leave."}
  again: {en: "And one more key, please."}
nodes:
  count: {kind: set, var: n, value: "7", next: place}
  place: {kind: play, prompt: place, next: ask}
  ask: {kind: collect, prompt: ask, into: k, max_length: 1, terminator: null, timeout_s: 30, next: again}
  again: {kind: collect, prompt: again, into: j, max_length: 1, terminator: null, timeout_s: 30, next: done}
  done: {kind: hangup}
"""
CATALOG = """
services:
  - id: in-line
    name: {en: In line}
    numbers: ["10000"]
    flow: in-line
    cities: [gz]
    skill_groups: [general]
"""


@pytest.fixture
async def node(tmp_path_factory: pytest.TempPathFactory, etcd_server: EtcdServer) -> AsyncIterator[SiteNode]:
    tmp = tmp_path_factory.mktemp("number-prompts")
    prompts = tmp / "prompts"
    raw = sip_config_dict(tmp, prompts, etcd_server.endpoint)
    raw["etcd"]["prefix"] = PREFIX
    config = parse_province(raw)
    flow = load_flow(FLOW)
    await asyncio.to_thread(build_prompts, config, prompts, flows=[flow])
    await publish_as(etcd_server, PREFIX, config.province.id, flow, CATALOG)
    started = SiteNode(config, "gz")
    await started.start()

    async def has_flow() -> bool:
        return started.flows.current("in-line") is not None and started.flows.catalog is not None

    await eventually(has_flow, what="the site holds the flow and the catalog")
    yield started
    await started.stop()


async def test_a_number_filled_in_is_heard_from_its_clip_between_the_fixed_parts(
    node: SiteNode, tmp_path: Path
) -> None:
    assert node.sip is not None and node.sip.hear.prompts_dir is not None
    folder = node.sip.hear.prompts_dir
    text = "You are number 7 in line. Thank you for waiting."
    pieces = flow_prompt_pieces(folder, "in-line", "place", text)
    assert pieces is not None and [p.name for p in pieces] == [
        f"{flow_prompt_name('in-line', 'place', 'You are number ', 'en')}.wav",
        "number-en-7.wav",
        f"{flow_prompt_name('in-line', 'place', ' in line. Thank you for waiting.', 'en')}.wav",
    ]
    # No clip past the most said number, and nothing for a variable that is not a number.
    assert (
        flow_prompt_pieces(folder, "in-line", "place", text.replace("7", str(MOST_SAID_NUMBER + 1))) is None
    )
    assert flow_prompt_pieces(folder, "in-line", "place", text.replace("7", "seven")) is None

    files = {k: (prompt_path(folder, s), s.text) for k, s in site_prompts(node.site).items()}
    options = candidates([load_flow(FLOW)], folder, files)
    # `vcc call --sip`'s own call: a key group at each quiet after the prompts, two in a row.
    report = await sip_call(node.sip.address, "10000", ["1", "2"], options, tmp_path, hang_up_after_s=40)
    heard = [(h["prompt"], h["text"]) for h in report["heard"]]
    assert heard == [
        ("place", "You are number "),
        ("number", "7"),
        ("place", " in line. Thank you for waiting."),
        ("ask", "Press a key to leave."),
        ("again", "And one more key, please."),
    ], report
    assert [s["keys"] for s in report["steps"]] == ["1", "2"]
    assert report["call_id"] in {e.call_id for _, e in await node.outbox.pending(10_000)}
    assert node.sip.hear.pieced == 1 and node.sip.hear.fallbacks == 0
    assert report["ended"] == {"hung_up_by": "site"}
    # The listener itself: fed another number's clip where the 7 was, it hears that one.
    import numpy as np

    by_text = {(c.prompt, c.text): c.samples for c in options}
    gap = np.zeros(2000)
    audio = np.concatenate([by_text[("place", "You are number ")], gap, by_text[("number", "12")], gap])
    assert [(h["prompt"], h["text"]) for h in heard_prompts(audio, options)] == [
        ("place", "You are number "),
        ("number", "12"),
    ]
    # Noise, and a prompt whose file is not among those listened for, are `unknown`.
    noise = np.random.default_rng(7).normal(0, 3000, 8000)
    pause = np.zeros(4000)  # longer than the listener's pause between stretches
    audio = np.concatenate([pause, noise, pause, by_text[("ask", "Press a key to leave.")], pause])
    without_ask = [c for c in options if c.prompt != "ask"]
    assert [h["prompt"] for h in heard_prompts(audio, without_ask)] == ["unknown", "unknown"]
