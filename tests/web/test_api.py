"""The dashboard's HTTP JSON API, CSV export, pages and live stream; and `vcc stats` reading it."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from central.web.live_delta import BadDelta, StreamReader
from tests.helpers import eventually, full_width
from tests.web.conftest import OPERATOR, OPERATOR_PASSWORD, Fixture
from tools.cli import app
from tools.province import stats as stats_cli
from vcc.https import client_context
from vcc.tls import CA_ENV


async def test_health_pages_and_static(dash: Fixture) -> None:
    async with dash.client() as http:
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
    async with dash.client() as http:

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
    async with dash.client() as http:
        rows = (await http.get("/api/intervals", params={"level": "entry_site"})).json()["rows"]
        assert sorted(r["key"] for r in rows) == ["gz", "sz"]
        assert all(r["length_s"] == 900 and r["offered"] == 1 for r in rows)
        daily = (await http.get("/api/intervals", params={"length": 86400, "level": "province"})).json()
        assert [r["offered"] for r in daily["rows"]] == [2]
        assert (await http.get("/api/intervals", params={"length": 60})).status_code == 400
        assert (await http.get("/api/intervals", params={"level": "city"})).status_code == 400
        assert (await http.get("/api/intervals", params={"date": "yesterday"})).status_code == 400
        # Full-width digits are not a number of days or seconds (int() reads them).
        for name, value in (("days", full_width("1")), ("length", full_width("900"))):
            refused = await http.get("/api/intervals", params={name: value})
            assert refused.status_code == 400 and refused.json()["detail"].startswith(f"{name}: "), name
        assert (await http.get("/api/intervals", params={"days": "1"})).status_code == 200
        reply = await http.get("/api/intervals.csv")
    assert reply.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(reply.text)))
    province = [r for r in table if r["level"] == "province"]
    assert [(r["offered"], r["answered"], r["service_level"]) for r in province] == [("2", "2", "1.0")]
    assert {r["level"] for r in table} == {"province", "entry_site", "served_site", "skill_group", "agent"}


async def test_history_and_stream(dash: Fixture) -> None:
    dash.dashboard.sample(1.0e9)
    async with dash.client() as http:
        history = (await http.get("/api/history", params={"site": "gz"})).json()
        assert history["samples"] and all(s["site_id"] == "gz" for s in history["samples"])
        async with http.stream("GET", "/api/stream") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            reader = StreamReader()
            async for line in stream.aiter_lines():
                data = reader.line(line)
                if data is not None:
                    assert {s["site_id"] for s in data["sites"]} == {"gz", "sz", "fs"}
                    if reader.wholes + reader.deltas == 2:
                        break
            # The whole snapshot first, then its changes.
            assert (reader.wholes, reader.deltas) == (1, 1)


async def read_stream(
    http: httpx.AsyncClient, query: str, until: Callable[[StreamReader], bool]
) -> StreamReader:
    reader = StreamReader()
    async with http.stream("GET", "/api/stream" + query) as stream:
        assert stream.status_code == 200
        async for line in stream.aiter_lines():
            if reader.line(line) is not None and until(reader):
                break
    return reader


async def test_the_stream_sends_changes_that_rebuild_the_snapshot(dash: Fixture) -> None:
    """While cities change (agents in and out, calls waiting and answered, a city killed), the
    changes applied to the first snapshot give, at each number, the snapshot a fresh reader gets."""
    async with dash.client() as http:
        reader = StreamReader()
        wholes: dict[int, dict[str, Any]] = {}

        async def whole() -> None:
            # The same snapshots, whole each time, read side by side.
            w = StreamReader()
            async with http.stream("GET", "/api/stream?deltas=0") as stream:
                async for line in stream.aiter_lines():
                    if w.line(line) is not None:
                        assert w.seq is not None and w.snapshot is not None
                        wholes[w.seq] = w.snapshot
                        assert w.deltas == 0

        async def changes() -> None:
            for step in range(6):
                dash.publish("gz", waiting=step, ready=3 + step % 2)
                dash.publish("sz", talking=step)
                if step == 2:
                    await dash.answered_call("c1", "gz")
                if step == 4:
                    dash.kill("fs")
                await asyncio.sleep(0.4)

        side = asyncio.create_task(whole())
        models: dict[int, dict[str, Any]] = {}
        try:
            async with http.stream("GET", "/api/stream") as stream:
                change_task = asyncio.create_task(changes())
                async for line in stream.aiter_lines():
                    if reader.line(line) is not None:
                        assert reader.seq is not None and reader.snapshot is not None
                        models[reader.seq] = reader.snapshot
                        if change_task.done() and reader.deltas >= 12:
                            break
                await change_task
        finally:
            side.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await side
    assert reader.wholes == 1 and reader.deltas >= 12
    both = sorted(set(models) & set(wholes))
    assert len(both) >= 5, (sorted(models), sorted(wholes))
    for seq in both:
        assert models[seq] == wholes[seq], seq
    last = models[max(models)]
    fs = next(s for s in last["sites"] if s["site_id"] == "fs")
    assert fs["status"] == "down" and fs["live"] is None
    assert last["province"]["records"]["today"]["offered"] == 1


async def test_the_stream_refuses_a_bad_deltas_flag(dash: Fixture) -> None:
    async with dash.client() as http:
        reply = await http.get("/api/stream?deltas=yes")
        assert reply.status_code == 400
        assert reply.json()["error"] == "bad-deltas"
        whole = await read_stream(http, "?deltas=0", lambda r: r.wholes == 3)
    assert (whole.wholes, whole.deltas) == (3, 0)


def test_a_reader_out_of_step_is_told() -> None:
    reader = StreamReader()
    for line in ["id: 4", "event: live", 'data: {"a": 1}', ""]:
        reader.line(line)
    assert reader.snapshot == {"a": 1} and reader.seq == 4
    for line in [
        "id: 5",
        "event: delta",
        'data: {"seq": 5, "base": 4, "change": {"~": {"a": {"=": 2}}}}',
        "",
    ]:
        reader.line(line)
    assert reader.snapshot == {"a": 2} and reader.seq == 5
    # The change from 6 to 7 arrives while the reader holds 5 (it missed 6).
    with pytest.raises(BadDelta, match="out of step"):
        for line in [
            "id: 7",
            "event: delta",
            'data: {"seq": 7, "base": 6, "change": {"~": {"a": {"=": 3}}}}',
            "",
        ]:
            reader.line(line)
    assert reader.snapshot == {"a": 2} and reader.seq == 5


async def test_vcc_stats_reads_the_dashboard(dash: Fixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # The dashboard's certificate is checked against the province CA (the tool's VCC_TLS_CA).
    monkeypatch.setenv(CA_ENV, str(dash.ca))
    await dash.answered_call("c1", "gz")
    dash.publish("gz", waiting=5)
    base = stats_cli.base_url(dash.base)
    cookie = await asyncio.to_thread(stats_cli.login, base, OPERATOR, OPERATOR_PASSWORD)
    snap = await asyncio.to_thread(stats_cli.live, base, cookie=cookie)
    assert {s["site_id"] for s in snap["sites"]} == {"gz", "sz", "fs"}
    with pytest.raises(stats_cli.StatsUnavailable, match="401 user name or password is wrong"):
        await asyncio.to_thread(stats_cli.login, base, OPERATOR, "not-the-password")

    runner = CliRunner(env={"VCC_OPERATOR": OPERATOR, "VCC_OPERATOR_PASSWORD": OPERATOR_PASSWORD})
    # host:port alone: https.
    address = dash.base.removeprefix("https://")
    table = await asyncio.to_thread(runner.invoke, app, ["stats", "--central", address])
    assert table.exit_code == 0, table.output
    assert "Guangzhou" in table.output and "province" in table.output

    out = await asyncio.to_thread(runner.invoke, app, ["stats", "--central", address, "--csv", "--daily"])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[0].startswith("level,key,start_local")

    gone = await asyncio.to_thread(runner.invoke, app, ["stats", "--central", "127.0.0.1:1"])
    assert gone.exit_code == 1
    assert "error:" in gone.output


async def test_the_dashboard_needs_an_operators_login(dash: Fixture) -> None:
    async with dash.http() as http:
        # Nothing without a session: a page goes to the login (keeping where it was going), an
        # API call answers 401 in words; the login page and health stay open.
        page = await http.get("/site/gz?lang=en")
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=%2Fsite%2Fgz%3Flang%3Den&lang=en"
        for path in ("/api/live", "/api/stream", "/api/history", "/api/intervals", "/api/intervals.csv"):
            reply = await http.get(path)
            assert reply.status_code == 401, path
            assert reply.json() == {"error": "login-required", "detail": "log in to see the dashboard"}
        assert (await http.get("/healthz")).status_code == 200
        form = await http.get("/login?lang=en")
        assert form.status_code == 200 and 'for="user">User name' in form.text
        assert '<label for="user">用户名' in (await http.get("/login")).text

        # One answer for an unknown name and a wrong password; bad input in words.
        wrong = await http.post("/api/login", json={"user": OPERATOR, "password": "wrong-password"})
        unknown = await http.post("/api/login", json={"user": "nobody", "password": "wrong-password"})
        assert wrong.status_code == unknown.status_code == 401
        assert (
            wrong.json()
            == unknown.json()
            == {"error": "bad-credentials", "detail": "user name or password is wrong"}
        )
        assert "vcc_ops" not in wrong.cookies
        bad = await http.post("/api/login", content=b"not json")
        assert bad.status_code == 400 and bad.json()["error"] == "bad-body"
        assert (await http.post("/api/login", json={"user": "", "password": "x"})).json()[
            "error"
        ] == "bad-user"
        assert (await http.post("/api/login", json={"user": 7, "password": "x"})).json()[
            "error"
        ] == "bad-body"
        form_wrong = await http.post(
            "/login?lang=en", data={"user": OPERATOR, "password": "wrong-password", "next": "/"}
        )
        assert form_wrong.status_code == 401 and "user name or password is wrong" in form_wrong.text
        assert "用户名或密码错误" in (await http.post("/login", data={"user": "x1", "password": "y"})).text

        # The form logs in and goes back where it was going, never to another site.
        ok = await http.post(
            "/login", data={"user": OPERATOR, "password": OPERATOR_PASSWORD, "next": "//evil.example/"}
        )
        assert ok.status_code == 303 and ok.headers["location"] == "/"
        cookie = ok.cookies["vcc_ops"]
        assert "HttpOnly" in ok.headers["set-cookie"] and "Max-Age=43200" in ok.headers["set-cookie"]
        assert (await http.get("/api/live", headers={"cookie": f"vcc_ops={cookie}"})).status_code == 200
        home = await http.get("/?lang=en", headers={"cookie": f"vcc_ops={cookie}"})
        assert home.status_code == 200 and ">Log out</button>" in home.text and OPERATOR in home.text

        # Logout revokes the session itself, not only the browser's cookie.
        out = await http.post("/logout", headers={"cookie": f"vcc_ops={cookie}"})
        assert out.status_code == 303 and out.headers["location"].startswith("/login")
        assert (await http.get("/api/live", headers={"cookie": f"vcc_ops={cookie}"})).status_code == 401

    actions = [(e.actor, e.action, e.outcome) for e in dash.audit]
    assert ("operator:ops", "dashboard-login-failed", "refused") in actions
    assert ("operator:nobody", "dashboard-login-failed", "refused") in actions
    assert ("operator:ops", "dashboard-logout", "ok") in actions
    assert actions.count(("operator:ops", "dashboard-login", "ok")) == 2  # the fixture's and the form's
    assert all(e.source.startswith("http:127.0.0.1") for e in dash.audit)


async def test_dashboard_sessions_expire_and_guessing_locks_out(dash: Fixture) -> None:
    ops = dash.dashboard.operators
    async with dash.client() as http:
        assert (await http.get("/api/live")).status_code == 200
        ops.idle_s = 0.0  # every session is now idle for too long
        reply = await http.get("/api/live")
        assert reply.status_code == 401 and reply.json()["error"] == "session-expired"
        ops.idle_s = 1800.0
        assert (await http.get("/api/live")).json()["error"] == "login-required"  # gone for good
    async with dash.http() as http:
        for _ in range(ops.guard.policy.code_failures):
            assert (
                await http.post("/api/login", json={"user": OPERATOR, "password": "guess-123"})
            ).status_code == 401
        # Locked: even the right password is refused now, in words.
        locked = await http.post("/api/login", json={"user": OPERATOR, "password": OPERATOR_PASSWORD})
        assert locked.status_code == 429
        assert locked.json() == {
            "error": "too-many-attempts",
            "detail": "too many failed logins: try again later",
        }
    kinds = [e.detail.get("kind") for e in dash.audit if e.action == "lockout"]
    assert kinds == ["code"]
    assert any(e.action == "login-refused" for e in dash.audit)


async def test_the_scale_bench_reads_both_streams_side_by_side(dash: Fixture) -> None:
    """`vcc bench scale`'s dashboard stream figures: the changes applied give, at every number both
    streams carried, the whole snapshot (a correctness check, not a figure)."""
    from tools.bench.scale import _stream_rates

    async def change() -> None:
        for step in range(20):
            dash.publish("gz", waiting=step)
            dash.publish("sz", ready=step % 4)
            await asyncio.sleep(0.15)

    changing = asyncio.create_task(change())
    rates = await _stream_rates(dash.base + "/", f"vcc_ops={dash.cookie}", client_context(dash.ca), 3.0)
    await changing
    assert rates["stream_snapshots_checked"] >= 2, rates
    assert rates["stream_snapshots_differing"] == 0 and rates["stream_out_of_step"] == 0, rates
    assert rates["stream_first_message_bytes"] > rates["stream_change_bytes_max"], rates


async def test_the_scale_bench_measures_central_with_dashboards_open(dash: Fixture) -> None:
    import psutil

    from tools.bench.scale import _stream_cpu

    cpu = await _stream_cpu(
        dash.base + "/", f"vcc_ops={dash.cookie}", client_context(dash.ca), psutil.Process(), 2, 0.6
    )
    assert cpu["stream_bytes_per_s_all_none"] == 0
    # Both kinds of stream were open and delivering during their windows.
    assert cpu["stream_bytes_per_s_all_changes"] > 0 and cpu["stream_bytes_per_s_all_whole"] > 0, cpu
    assert all(cpu[f"stream_central_cpu_share_{k}"] >= 0 for k in ("none", "changes", "whole")), cpu
