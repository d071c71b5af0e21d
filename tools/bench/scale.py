"""`vcc bench scale`: the province at size.

- a site with 5,000 agents logged in and 10,000 calls waiting: the site node's RSS and its state
  stream's bytes per second (read from its own /metrics: what it sent, and what the same messages
  would have taken with every agent's state in each, the stream before it was change-driven);
- central with 20 cities streaming their state, agents changing state all the time (1,000 agents
  each: 20,000 in all; beyond four-digit codes' 8,910 the generated province hands out six-digit
  agent codes): central's CPU and the bytes it receives,
  change-driven presence against whole presence in every message, side by side in one run. The
  cities are real switchboards (site_node/callcontrol) streaming through the site's own link code
  (site_node/links/central_link.py), 20 of them in this process, each with its own site
  certificate, to a real central process;
- the dashboard with those 20 cities: it lists them all, the page and its live figures' time, and
  the page drawn in headless Chromium (when installed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import ssl
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import psutil

from central.web.live_delta import BadDelta, StreamReader
from site_node.callcontrol import Switchboard
from site_node.grpc_api.summary import presence, site_summary
from site_node.links.central_link import CentralLink
from site_node.runtime import SiteRuntime
from tools.bench.cluster import SEED_CUSTOMERS, _http_get, _province, memory
from tools.province.certs import site_stem
from tools.province.chromium import CHROMIUM, chromium
from tools.province.cluster import Cluster
from tools.province.generate import DEMO_OPERATOR, DEMO_OPERATOR_PASSWORD, SiteSpec
from vcc import rpc
from vcc.https import client_context, province_ca, web_url
from vcc.tls import central_server
from vcc.v1 import central_pb2, central_pb2_grpc

Progress = Callable[[str], None]
# How long the bench watches the dashboard update in Chromium.
UPDATE_WINDOW_S = 5.0
# How long it reads the live stream, change-driven and whole side by side.
STREAM_WINDOW_S = 10.0
# Dashboards open at once for central's CPU with the stream change-driven and whole.
STREAM_DASHBOARDS = 10


class _NoJournal:
    """The bench's cities record nothing: only their live state matters here."""

    def append(self, events: Any, kept: Any = ()) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def _no_customer(_ani: str) -> None:
    return None


class _City:
    def __init__(
        self, site: Any, service_number: str, routing: Any, central: str, tls: Any, deltas: bool
    ) -> None:
        self.sb = Switchboard(site, service_number, routing=routing)
        self.rt = SiteRuntime(self.sb, _NoJournal(), _no_customer)
        started = time.time()
        self.link = CentralLink(
            self.rt,
            lambda: central,
            lambda: site_summary(
                self.sb,
                name=site.name,
                address=site.listen,
                started_at=started,
                now=time.time(),
                outbox_pending=0,
                agents=False,
            ),
            presence=lambda: presence(self.sb),
            channel=lambda address: rpc.channel(
                address, tls=tls, expect=central_server(), options=[("grpc.use_local_subchannel_pool", 1)]
            ),
            deltas=deltas,
        )
        self.codes = list(self.sb.agents)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        for code in self.codes:
            self.rt.do(lambda now, c=code: self.sb.login(now, c))  # type: ignore[misc]
        self.task = asyncio.create_task(self.link.run())

    def churn(self, rng: random.Random, n: int) -> None:
        """`n` agents change state (ready <-> not ready): the presence the stream must carry."""
        for code in rng.sample(self.codes, n):
            ready = str(self.sb.agents[code].state) != "READY"
            self.rt.do(lambda now, c=code, r=ready: self.sb.set_ready(now, c, r, "" if r else "break"))  # type: ignore[misc]
        self.link.state_changed()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.link.close()


async def central_scale(
    *,
    cities: int = 20,
    agents_per_city: int = 1000,
    changes_per_s: int = 50,
    window_s: float = 15.0,
    progress: Progress = lambda _: None,
) -> dict[str, Any]:
    """Central's CPU with `cities` cities streaming state, change-driven then whole, one cluster;
    then the dashboard with them."""
    with tempfile.TemporaryDirectory(prefix="vcc-bench-scale-") as tmp:
        run = Path(tmp)
        specs = [
            SiteSpec(f"c{i:02d}", f"City {i:02d}", trunk_channels=100, agents={"general": agents_per_city})
            for i in range(cities)
        ]
        progress(f"scale: a province of {cities} cities x {agents_per_city} agents")
        config_path = await asyncio.to_thread(_province, specs, run, mode="overflow", dashboard=True)
        async with await Cluster.start(
            config_path, run / "cluster", sites=[], seed_customers=SEED_CUSTOMERS
        ) as cluster:
            assert cluster.tls is not None
            central_proc = psutil.Process(next(iter(cluster.centrals.values())).pid)
            rows = {}
            for deltas in (True, False):
                name = "change_driven" if deltas else "whole_presence"
                progress(f"scale: {cities} cities streaming ({name}), {changes_per_s} agent changes/s each")
                city_list = [
                    _City(
                        site,
                        cluster.config.province.service_number,
                        cluster.config.routing,
                        cluster.addresses.central,
                        cluster.tls.files(site_stem(site.id)),
                        deltas,
                    )
                    for site in cluster.config.sites
                ]
                for c in city_list:
                    c.start()
                try:
                    await _until_all_present(cluster.addresses.central, cities * agents_per_city)
                    rng = random.Random(7)
                    sent0 = sum(c.link.sent_bytes for c in city_list)
                    msgs0 = sum(c.link.sent_messages for c in city_list)
                    cpu0 = _cpu(central_proc)
                    t0 = time.perf_counter()
                    while time.perf_counter() - t0 < window_s:
                        for c in city_list:
                            c.churn(rng, max(1, changes_per_s // 10))
                        await asyncio.sleep(0.1)
                    elapsed = time.perf_counter() - t0
                    cpu = _cpu(central_proc) - cpu0
                    sent = sum(c.link.sent_bytes for c in city_list) - sent0
                    msgs = sum(c.link.sent_messages for c in city_list) - msgs0
                    rows[name] = {
                        "window_s": round(elapsed, 1),
                        "central_cpu_share_of_a_core": round(cpu / elapsed, 3),
                        "state_bytes_per_s_into_central": round(sent / elapsed),
                        "state_messages_per_s": round(msgs / elapsed, 1),
                        "resyncs": sum(c.link.resyncs for c in city_list),
                        "central_rss_mib": round(central_proc.memory_info().rss / 2**20, 1),
                        "load_average": os.getloadavg(),
                    }
                    if deltas:
                        rows["dashboard"] = await _dashboard(cluster, cities, progress, central_proc)
                finally:
                    await asyncio.gather(*(c.stop() for c in city_list))
    return {
        "cities": cities,
        "agents_per_city": agents_per_city,
        "agent_changes_per_s_per_city": changes_per_s,
        "rows": rows,
    }


async def _stream_cpu(
    base: str,
    cookie: str,
    tls: ssl.SSLContext | None,
    central_proc: psutil.Process,
    dashboards: int,
    window_s: float,
) -> dict[str, Any]:
    """Central's CPU over three windows one after the other while the cities change: no dashboard
    open, then `dashboards` change-driven streams, then as many whole ones (`?deltas=0`)."""
    name, _, value = cookie.partition("=")
    out: dict[str, Any] = {"stream_cpu_dashboards": dashboards}

    async def drain(http: httpx.AsyncClient, deltas: bool, counted: list[int]) -> None:
        async with http.stream("GET", f"/api/stream?deltas={int(deltas)}") as reply:
            reply.raise_for_status()
            async for chunk in reply.aiter_raw():
                counted[0] += len(chunk)

    async with httpx.AsyncClient(
        base_url=base,
        cookies={name: value},
        timeout=httpx.Timeout(10.0, read=None),
        verify=tls if tls is not None else True,
    ) as http:
        for label, streams, deltas in (
            ("none", 0, True),
            ("changes", dashboards, True),
            ("whole", dashboards, False),
        ):
            counted = [0]
            tasks = [asyncio.create_task(drain(http, deltas, counted)) for _ in range(streams)]
            await asyncio.sleep(1.0)  # every stream past its first, whole, snapshot
            cpu0, bytes0, t0 = _cpu(central_proc), counted[0], time.perf_counter()
            await asyncio.sleep(window_s)
            elapsed = time.perf_counter() - t0
            out[f"stream_central_cpu_share_{label}"] = round((_cpu(central_proc) - cpu0) / elapsed, 3)
            out[f"stream_bytes_per_s_all_{label}"] = round((counted[0] - bytes0) / elapsed)
            out[f"stream_load_average_{label}"] = os.getloadavg()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    return out


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


async def _until_all_present(central: str, agents: int, timeout_s: float = 120.0) -> None:
    """Until central's directory shows every agent of every city logged in (presence arrived)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with rpc.channel(central, expect=central_server()) as ch:
        stub = central_pb2_grpc.CentralServiceStub(ch)
        while loop.time() < deadline:
            reply = await stub.ListAgents(central_pb2.ListAgentsRequest(), timeout=30.0)
            present = sum(1 for a in reply.agents if a.state not in ("LOGGED_OUT", "UNKNOWN"))
            if present >= agents:
                return
            await asyncio.sleep(0.5)
    raise TimeoutError(f"central's directory did not show {agents} agents present within {timeout_s:.0f}s")


async def _http(
    url: str, *, cookie: str = "", form: Mapping[str, str] | None = None, tls: ssl.SSLContext | None = None
) -> tuple[bytes, bytes]:
    """GET (or POST `form` to) http(s)://host:port/path over HTTP/1.0: (head, body); `tls`: the
    province CA's context for an https URL."""
    from urllib.parse import urlencode

    scheme, _, location = url.partition("://")
    host_port, _, path = location.partition("/")
    host, port = host_port.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), ssl=tls if scheme == "https" else None)
    try:
        head = f"Host: {host_port}\r\n" + (f"Cookie: {cookie}\r\n" if cookie else "")
        if form is None:
            writer.write(f"GET /{path} HTTP/1.0\r\n{head}\r\n".encode())
        else:
            body = urlencode(dict(form)).encode()
            writer.write(
                f"POST /{path} HTTP/1.0\r\n{head}Content-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
    top, _, rest = answer.partition(b"\r\n\r\n")
    return top, rest


async def _log_in(base: str, tls: ssl.SSLContext | None) -> str:
    """The demo operator's session cookie ("name=value"): the dashboard is for operators only."""
    head, _ = await _http(
        base + "login", form={"user": DEMO_OPERATOR, "password": DEMO_OPERATOR_PASSWORD, "next": "/"}, tls=tls
    )
    for line in head.decode(errors="replace").split("\r\n"):
        if line.lower().startswith("set-cookie:"):
            return line.split(":", 1)[1].strip().split(";", 1)[0]
    raise RuntimeError(f"the dashboard refused the demo operator: {head[:200]!r}")


async def _dashboard(
    cluster: Cluster, cities: int, progress: Progress, central_proc: psutil.Process
) -> dict[str, Any]:
    import json

    listen = cluster.config.central.dashboard_listen
    if not listen:
        return {"error": "no dashboard configured"}
    base = web_url(cluster.config, listen)
    ca = province_ca(cluster.config)
    tls = client_context(ca) if ca else None
    progress("scale: the dashboard with every city")
    cookie = await _log_in(base, tls)
    page, live, live_bytes = [], [], []
    page_bytes = 0
    listed = 0
    for _ in range(20):
        t0 = time.perf_counter()
        _, html = await _http(base + "?lang=en", cookie=cookie, tls=tls)
        page.append(time.perf_counter() - t0)
        page_bytes = len(html)
        t0 = time.perf_counter()
        _, body = await _http(base + "api/live", cookie=cookie, tls=tls)
        live.append(time.perf_counter() - t0)
        live_bytes.append(len(body))
        with contextlib.suppress(ValueError):
            data = json.loads(body)
            listed = len(data.get("sites", [])) if isinstance(data, dict) else 0
    result: dict[str, Any] = {
        "cities_listed": listed,
        "page_html_bytes": page_bytes,
        "page_ms_p50": round(statistics.median(page) * 1000, 1),
        "api_live_bytes_p50": int(statistics.median(live_bytes)),
        "api_live_ms_p50": round(statistics.median(live) * 1000, 1),
        "api_live_ms_max": round(max(live) * 1000, 1),
    }
    result.update(await _stream_rates(base, cookie, tls, STREAM_WINDOW_S))
    result.update(await _stream_cpu(base, cookie, tls, central_proc, STREAM_DASHBOARDS, STREAM_WINDOW_S))
    result.update(await _chromium(base, cities, cookie, ca))
    return result


async def _stream_rates(
    base: str, cookie: str, tls: ssl.SSLContext | None, window_s: float
) -> dict[str, Any]:
    """What one open dashboard receives per second, the change-driven stream and the whole
    snapshot every time (`?deltas=0`) side by side: both open at once over the same window, while
    the cities change. The changes applied are checked against the whole snapshots of the same
    number (every one both streams carried)."""
    name, _, value = cookie.partition("=")
    seen: dict[bool, dict[int, dict[str, Any]]] = {True: {}, False: {}}
    counted: dict[bool, list[int]] = {True: [], False: []}
    out_of_step: list[str] = []

    async def read(http: httpx.AsyncClient, deltas: bool) -> None:
        reader, size = StreamReader(), 0
        async with http.stream("GET", f"/api/stream?deltas={int(deltas)}") as reply:
            reply.raise_for_status()
            async for line in reply.aiter_lines():
                size += len(line.encode()) + 1
                try:
                    data = reader.line(line)
                except BadDelta as exc:
                    out_of_step.append(str(exc))
                    return
                if data is not None and reader.seq is not None:
                    seen[deltas][reader.seq] = data
                    counted[deltas].append(size)
                    size = 0

    async with httpx.AsyncClient(
        base_url=base,
        cookies={name: value},
        timeout=httpx.Timeout(10.0, read=None),
        verify=tls if tls is not None else True,
    ) as http:
        tasks = [asyncio.create_task(read(http, d), name=f"bench-stream-{d}") for d in (True, False)]
        t0 = time.perf_counter()
        await asyncio.wait(tasks, timeout=window_s)
        elapsed = time.perf_counter() - t0
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    both = set(seen[True]) & set(seen[False])
    changes = counted[True][1:]
    return {
        "stream_window_s": round(elapsed, 1),
        "stream_bytes_per_s_changes": round(sum(counted[True]) / elapsed),
        "stream_bytes_per_s_whole": round(sum(counted[False]) / elapsed),
        "stream_messages_per_s_changes": round(len(counted[True]) / elapsed, 1),
        "stream_messages_per_s_whole": round(len(counted[False]) / elapsed, 1),
        "stream_first_message_bytes": counted[True][0] if counted[True] else None,
        "stream_change_bytes_p50": int(statistics.median(changes)) if changes else None,
        "stream_change_bytes_max": max(changes) if changes else None,
        "stream_snapshots_checked": len(both),
        "stream_snapshots_differing": sum(1 for n in both if seen[True][n] != seen[False][n]),
        "stream_out_of_step": len(out_of_step),
        "stream_load_average": os.getloadavg(),
    }


async def _chromium(base: str, cities: int, cookie: str, ca: str | None) -> dict[str, Any]:
    """The page drawn in headless Chromium: time until every city's row shows."""
    if not os.access(CHROMIUM, os.X_OK):
        return {"chromium": f"not run: {CHROMIUM} missing"}
    try:
        from playwright.async_api import async_playwright
    except ImportError as exc:
        return {"chromium": f"not run: {exc}"}
    args = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    name, _, value = cookie.partition("=")
    async with async_playwright() as pw, chromium(pw, ca, args=args) as browser:
        try:
            context = await browser.new_context()
            await context.add_cookies([{"name": name, "value": value, "url": base}])
            page = await context.new_page()
            t0 = time.perf_counter()
            await page.goto(base + "?lang=en")
            await page.wait_for_function(
                f"document.querySelectorAll('[data-site-row]').length >= {cities}", timeout=30_000
            )
            drawn = time.perf_counter() - t0
            rows = await page.locator("[data-site-row]").count()
            # What the page cost the browser to load (HTML, script, style: bytes on the wire).
            loaded = await page.evaluate(
                """() => performance.getEntriesByType("navigation").concat(
                    performance.getEntriesByType("resource")).reduce((n, e) => n + e.transferSize, 0)"""
            )
            before = await page.locator("[data-site-row]").all_inner_texts()
            # The page goes on updating: the table is redrawn from the live stream while the
            # cities stream (every city's row drawn again, the figures of the newest snapshot).
            redraws = await page.evaluate(
                """(ms) => new Promise((done) => {
                    const table = document.querySelector("[data-site-row]").closest("table") || document.body;
                    let n = 0;
                    const seen = new MutationObserver(() => { n += 1; });
                    seen.observe(document.getElementById("view") || table, {childList: true, subtree: true});
                    setTimeout(() => { seen.disconnect(); done(n); }, ms);
                })""",
                UPDATE_WINDOW_S * 1000,
            )
            # Each update's size: the live stream as the page receives it (same session).
            stream = await page.evaluate(
                """(ms) => new Promise((done) => {
                    const sizes = [];
                    const source = new EventSource("/api/stream");
                    const size = (e) => { sizes.push(new TextEncoder().encode(e.data).length); };
                    source.addEventListener("live", size);
                    source.addEventListener("delta", size);
                    setTimeout(() => { source.close(); done(sizes); }, ms);
                })""",
                UPDATE_WINDOW_S * 1000,
            )
            after = await page.locator("[data-site-row]").all_inner_texts()
            rows_after = len(after)
        except Exception as exc:  # a figure, not a verdict: say what happened
            return {"chromium": f"failed: {type(exc).__name__}: {exc}"[:300]}
    sizes = [int(n) for n in stream]
    return {
        "chromium_rows": rows,
        "chromium_rows_after_updates": rows_after,
        # Rows whose figures the updates changed (agents change state all the time).
        "chromium_rows_changed": sum(1 for x, y in zip(before, after, strict=False) if x != y),
        "chromium_drawn_ms": round(drawn * 1000),
        "page_bytes_transferred": int(loaded),
        "chromium_redraws_per_s": round(int(redraws) / UPDATE_WINDOW_S, 1),
        "live_updates_per_s": round(len(sizes) / UPDATE_WINDOW_S, 1),
        "live_update_bytes_p50": int(statistics.median(sizes)) if sizes else None,
        "live_update_bytes_max": max(sizes) if sizes else None,
    }


async def site_scale(
    *, agents: int = 5000, calls: int = 10_000, progress: Progress = lambda _: None
) -> dict[str, Any]:
    """RSS of a site node with `agents` logged in and `calls` waiting (the memory bench at size),
    and its state stream's bytes per second over the run."""
    figures: dict[str, Any] = {}

    async def stream_figures(metrics_url: str) -> None:
        figures.update(await _stream_metrics(metrics_url))

    result = await memory(agents=agents, calls=calls, progress=progress, after=stream_figures)
    result.update(figures)
    return result


async def _stream_metrics(url: str) -> dict[str, Any]:
    """Bytes sent and the whole-presence equivalent, from the site's /metrics, sampled 10 s apart."""

    async def read() -> Mapping[str, float]:
        text = (await _http_get(url)).decode(errors="replace")
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("vcc_site_state_stream_bytes_total{"):
                how = "sent" if 'how="sent"' in line else "whole"
                out[how] = float(line.rsplit(" ", 1)[1])
            elif line.startswith("vcc_site_state_stream_messages_total{"):
                out["messages"] = float(line.rsplit(" ", 1)[1])
        return out

    first = await read()
    t0 = time.perf_counter()
    await asyncio.sleep(10.0)
    second = await read()
    elapsed = time.perf_counter() - t0
    rate = {k: (second.get(k, 0.0) - first.get(k, 0.0)) / elapsed for k in ("sent", "whole", "messages")}
    return {
        "state_stream_bytes_per_s": round(rate["sent"]),
        "state_stream_bytes_per_s_whole_presence": round(rate["whole"]),
        "state_stream_messages_per_s": round(rate["messages"], 1),
        "state_stream_total_bytes": second.get("sent", 0.0),
        "state_stream_total_bytes_whole_presence": second.get("whole", 0.0),
    }


async def scale(
    *,
    progress: Progress = lambda _: None,
    site: bool = True,
    central: bool = True,
    cities: int = 20,
    agents_per_city: int = 1000,
) -> dict[str, Any]:
    out: dict[str, Any] = {"load_average_before": os.getloadavg()}
    if central:
        out["central"] = await central_scale(
            progress=progress, cities=cities, agents_per_city=agents_per_city
        )
    if site:
        out["site"] = await site_scale(progress=progress)
    out["load_average"] = os.getloadavg()
    return out
