"""The dashboard's HTTP JSON API, CSV export, pages and live stream; and `vcc stats` reading it."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from typing import Any

import httpx
from typer.testing import CliRunner

from tests.helpers import eventually
from tests.web.conftest import Fixture
from tools.cli import app
from tools.province import stats as stats_cli


async def test_health_pages_and_static(dash: Fixture) -> None:
    async with httpx.AsyncClient(base_url=dash.base, timeout=5) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        page = await http.get("/site/gz?lang=en")
        assert page.status_code == 200
        assert 'data-view="site"' in page.text and 'data-site="gz"' in page.text
        assert 'lang="en"' in page.text
        assert 'lang="zh-CN"' in (await http.get("/", headers={"accept-language": "zh-CN"})).text
        assert 'data-view="report"' in (await http.get("/report")).text
        script = await http.get("/static/dashboard.js")
        assert script.status_code == 200 and "EventSource" in script.text
        # Nothing is fetched from elsewhere.
        assert "http://" not in page.text and "https://" not in page.text


async def test_live_figures_and_health_of_cities(dash: Fixture) -> None:
    await dash.answered_call("c1", "gz", wait_s=2.0)
    await dash.answered_call("c2", "gz", wait_s=60.0)
    dash.kill("fs")
    dash.publish("gz", waiting=4)
    dash.publish("sz")
    async with httpx.AsyncClient(base_url=dash.base, timeout=5) as http:

        async def fresh() -> dict[str, Any] | None:
            snap = (await http.get("/api/live")).json()
            gz = next(s for s in snap["sites"] if s["site_id"] == "gz")
            return snap if (gz.get("live") or {}).get("calls_waiting") == 4 else None

        snap = await eventually(fresh, timeout_s=5, what="the published state in the snapshot")
    sites = {s["site_id"]: s for s in snap["sites"]}
    assert sites["gz"]["status"] == "up"
    assert sites["gz"]["live"]["calls_waiting"] == 4
    assert sites["gz"]["age_s"] is not None
    assert sites["gz"]["source"].endswith("(stream)")
    assert sites["fs"]["status"] == "down"
    assert sites["fs"]["live"] is None
    today = sites["gz"]["records"]["today"]
    assert (today["offered"], today["answered"], today["answered_in_sl"]) == (2, 2, 1)
    assert today["service_level"] == 0.5
    assert snap["province"]["records"]["today"]["offered"] == 2
    assert snap["province"]["name"] == "Guangdong"
    assert {"kind": "site_down", "site_id": "fs"}.items() <= next(
        a for a in snap["alerts"] if a["site_id"] == "fs"
    ).items()
    assert any(a["kind"] == "sl_below_target" and a["site_id"] == "gz" for a in snap["alerts"])


async def test_intervals_json_and_csv(dash: Fixture) -> None:
    await dash.answered_call("c1", "gz")
    await dash.answered_call("c2", "sz")
    async with httpx.AsyncClient(base_url=dash.base, timeout=5) as http:
        rows = (await http.get("/api/intervals", params={"level": "entry_site"})).json()["rows"]
        assert sorted(r["key"] for r in rows) == ["gz", "sz"]
        assert all(r["length_s"] == 900 and r["offered"] == 1 for r in rows)
        daily = (await http.get("/api/intervals", params={"length": 86400, "level": "province"})).json()
        assert [r["offered"] for r in daily["rows"]] == [2]
        assert (await http.get("/api/intervals", params={"length": 60})).status_code == 400
        assert (await http.get("/api/intervals", params={"level": "city"})).status_code == 400
        assert (await http.get("/api/intervals", params={"date": "yesterday"})).status_code == 400
        reply = await http.get("/api/intervals.csv")
    assert reply.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(reply.text)))
    province = [r for r in table if r["level"] == "province"]
    assert [(r["offered"], r["answered"], r["service_level"]) for r in province] == [("2", "2", "1.0")]
    assert {r["level"] for r in table} == {"province", "entry_site", "served_site", "skill_group", "agent"}


async def test_history_and_stream(dash: Fixture) -> None:
    dash.dashboard.sample(1.0e9)
    async with httpx.AsyncClient(base_url=dash.base, timeout=5) as http:
        history = (await http.get("/api/history", params={"site": "gz"})).json()
        assert history["samples"] and all(s["site_id"] == "gz" for s in history["samples"])
        async with http.stream("GET", "/api/stream") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = 0
            async for line in stream.aiter_lines():
                if line.startswith("data: "):
                    data = json.loads(line[len("data: ") :])
                    assert {s["site_id"] for s in data["sites"]} == {"gz", "sz", "fs"}
                    events += 1
                    if events == 2:
                        break


async def test_vcc_stats_reads_the_dashboard(dash: Fixture) -> None:
    await dash.answered_call("c1", "gz")
    dash.publish("gz", waiting=5)
    snap = await asyncio.to_thread(stats_cli.live, stats_cli.base_url(dash.base))
    assert {s["site_id"] for s in snap["sites"]} == {"gz", "sz", "fs"}

    runner = CliRunner()
    address = dash.base.removeprefix("http://")
    table = await asyncio.to_thread(runner.invoke, app, ["stats", "--central", address])
    assert table.exit_code == 0, table.output
    assert "Guangzhou" in table.output and "province" in table.output

    out = await asyncio.to_thread(runner.invoke, app, ["stats", "--central", address, "--csv", "--daily"])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[0].startswith("level,key,start_local")

    gone = await asyncio.to_thread(runner.invoke, app, ["stats", "--central", "127.0.0.1:1"])
    assert gone.exit_code == 1
    assert "error:" in gone.output
