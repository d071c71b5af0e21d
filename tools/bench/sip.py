"""`vcc bench sip`: SIP calls with media on one site node, from SIPp.

SIPp callers dial at `rate` calls per second until `concurrent` calls are up, each sending G.711
audio (50 packets a second). `agents` robot agents answer on real registered SIP phones (one
baresip with an account each, the robots' SIP mode, `vcc agents --sip`): each takes a caller and
talks with it (the phone sends its tone back through rtpengine) until the caller hangs up; the
other callers wait in the queue hearing the announcement and music on hold that rtpengine plays
to them. All of them stay up together for `steady_s` seconds, then hang up. Measured over that
steady window: the site node's and rtpengine's CPU (share of one core, and per call), and
whether every call was answered (failures by SIP response, from SIPp's own log).

RTP loss is measured where the audio is heard: `PROBES` sampled callers are also paired, in
rtpengine, with a listener of the bench's own (as an agent's phone is when it answers,
MediaControl.answer_from), which counts the caller's packets rtpengine relays to it against the
sequence numbers they carry (a packet SIPp sends late is not lost; one dropped is). rtpengine's
own counters of what it received from 20 callers are kept beside (`rtp_in_ratio`: against 50
packets a second, so a late sender counts as loss there).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import psutil

from site_node.media.ng import MediaError, NgClient
from site_node.sip.registrar import ha1
from tools.province.cluster import Cluster
from tools.province.generate import DEFAULT_PASSWORD, SiteSpec, generate_province, write_province
from tools.province.netutil import free_port
from tools.province.sip import add_sip
from tools.province.sipp import call_scenario, run_sipp
from tools.simulation.robots import RobotPolicy, RobotStats
from tools.simulation.sip_callers import run_sip_robots
from vcc import rpc
from vcc.v1 import site_admin_pb2, site_admin_pb2_grpc

# RTP ports per call in rtpengine: two parties, RTP and RTCP each.
PORTS_PER_CALL = 4
# G.711 at 20 ms a packet.
PACKETS_PER_S = 50
# Calls whose streams are counted (each is one ng query per sweep).
SAMPLE = 20
# Callers whose relayed audio the bench hears and counts (RTP loss by sequence numbers).
PROBES = 10
# The robot agents' phone password (the config holds its HA1 only).
PHONE_PASSWORD = "4321"


def _prepare(run_dir: Path, concurrent: int, agents: int) -> tuple[Path, Path]:
    """The one-site province and the callers' audio, in `run_dir`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for old in ("run", "outbox", "sipp", "phones"):  # a step starts clean: its own logs and journal only
        shutil.rmtree(run_dir / old, ignore_errors=True)
    (run_dir / "central.db").unlink(missing_ok=True)
    raw = generate_province(
        # The agents answer on their phones (none: one agent who never logs in); every other
        # caller waits in the queue, hearing its music.
        [SiteSpec("gz", "Guangzhou", trunk_channels=concurrent + 10, agents={"general": max(1, agents)})],
        etcd_endpoint="127.0.0.1:2379",
        central_listen=f"127.0.0.1:{free_port()}",
        database_url=f"sqlite+aiosqlite:///{run_dir / 'central.db'}",
        outbox_dir=run_dir / "outbox",
        digit_timeout_s=1.0,
    )
    add_sip(raw, prompts_dir="prompts", rtp_base=20000, rtp_ports=concurrent * PORTS_PER_CALL * 5 // 4 + 300)
    for agent in raw["sites"][0]["agents"]:
        agent["sip_ha1"] = ha1(agent["code"], "vcc", PHONE_PASSWORD)
    config_path = write_province(raw, run_dir / "province.yaml")
    audio = run_dir / "caller.al"
    # What the callers say: a raw A-law tone SIPp streams in a loop (made here, offline).
    tone = ["sox", "-n", "-r", "8000", "-c", "1", "-t", "al", str(audio), "synth", "4", "sine", "440"]
    subprocess.run(tone, check=True)
    return config_path, audio


def site_engine(log_path: Path) -> tuple[int, str]:
    """The site's (latest) rtpengine: its pid and ng address, from the site's log."""
    log = log_path.read_text()
    return int(re.findall(r"rtpengine pid (\d+)", log)[-1]), re.findall(r"ng (127\.0\.0\.1:\d+)", log)[-1]


def _count(stdout: str, label: str) -> int:
    """A count from SIPp's final statistics screen (-1 when it is not there)."""
    m = re.search(label + r"\s+\|\s+\d+\s+\|\s+(\d+)", stdout)
    return int(m.group(1)) if m else -1


async def bench_sip(
    run_dir: Path, concurrent: int = 200, rate: float = 20.0, steady_s: float = 10.0, agents: int = 20
) -> dict[str, Any]:
    # The database's path must not depend on the processes' cwd.
    run_dir = await asyncio.to_thread(run_dir.resolve)
    config_path, audio = await asyncio.to_thread(_prepare, run_dir, concurrent, agents)
    ramp_s = concurrent / rate
    hold_ms = int((ramp_s + steady_s + 2.0) * 1000)
    async with await Cluster.start(config_path, run_dir / "run") as cluster:
        site = psutil.Process(cluster.sites["gz"].pid)
        engine_pid, ng_address = await asyncio.to_thread(site_engine, cluster.logs_dir / "site-gz.log")
        engine = psutil.Process(engine_pid)
        sip = cluster.config.site("gz").sip
        assert sip is not None
        phones = _Phones(cluster, run_dir, agents, hold_ms)
        await phones.ready()
        load = call_scenario(stream=audio, settle_ms=0)
        callers = asyncio.create_task(
            run_sipp(load, sip.listen, run_dir / "sipp", name="load", calls=concurrent,
                     rate=rate, hold_ms=hold_ms, limit=concurrent, timeout_s=hold_ms / 1000 + ramp_s + 60)
        )  # fmt: skip
        await asyncio.sleep(ramp_s + 1.0)  # a benchmark's clock: the ramp, then the steady window
        live = await engine_calls(ng_address)
        up_at_start = len(live)
        packets_before, at_before = await _caller_packets(ng_address, live[:SAMPLE])
        # Others than the sampled calls first (a small run has no others: the sampled ones then).
        probes, probes_skipped = await _probe(ng_address, live[SAMPLE:] + live[:SAMPLE], PROBES)
        # The callers' own CPU too: a SIPp that cannot keep up sends late, which looks like loss.
        sipp = next(p for p in psutil.Process().children() if p.name() == "sipp")
        before = _cpu(site, engine, sipp)
        t0 = time.perf_counter()
        await asyncio.sleep(steady_s - 2.0)
        window = time.perf_counter() - t0
        after = _cpu(site, engine, sipp)
        packets_after, at_after = await _caller_packets(ng_address, live[:SAMPLE])
        heard = [p.figures() for p in probes]
        for p in probes:
            p.close()
        ratio = rtp_in_ratio(packets_before, packets_after, at_after - at_before)
        sweep_gap_s = at_after - at_before
        up_at_end = len(await engine_calls(ng_address))
        talking = await phones.talking()
        result = await callers
        robots = await phones.close()
    received = sum(h[0] for h in heard)
    expected = sum(h[1] for h in heard)
    site_cpu = (after[0] - before[0]) / window
    engine_cpu = (after[1] - before[1]) / window
    sipp_cpu = (after[2] - before[2]) / window
    return {
        "concurrent_target": concurrent,
        "rate_cps": rate,
        "steady_window_s": round(window, 2),
        "calls_up_in_window": up_at_start,
        "calls_up_at_window_end": up_at_end,
        "calls_answered": _count(result.stdout, "Successful call"),
        "calls_failed": _count(result.stdout, "Failed call"),
        "failures_by_sip_response": _failures(run_dir / "sipp" / "load.err"),
        "agents_on_phones": agents,
        # Calls talking with an agent's phone at the window's end; answers over the run.
        "calls_talking_to_phones": talking,
        "phone_answers": robots.answered if robots is not None else None,
        **_engine_log(run_dir / "outbox" / "rtpengine-gz.log"),
        "site_cpu_core_share": round(site_cpu, 4),
        "rtpengine_cpu_core_share": round(engine_cpu, 4),
        "site_cpu_per_100_calls": round(site_cpu / max(1, up_at_start) * 100, 4),
        "rtpengine_cpu_per_100_calls": round(engine_cpu / max(1, up_at_start) * 100, 4),
        "sipp_cpu_core_share": round(sipp_cpu, 4),
        "rtp_calls_sampled": len(set(packets_before) & set(packets_after)),
        "rtp_sweep_gap_s": round(sweep_gap_s, 2),
        # Below 1: packets lost on the way in, or SIPp sending late under load (not told apart).
        "rtp_in_ratio": round(ratio, 5) if ratio is not None else None,
        "rtp_probed_calls": sum(1 for h in heard if h[1]),
        # Calls passed over by the probes: an agent's phone was talking on them.
        "rtp_probes_left_to_phones": probes_skipped,
        "rtp_probe_received": received,
        "rtp_probe_expected": expected,
        # Lost on the way caller -> rtpengine -> listener, by the packets' sequence numbers.
        "rtp_loss_pct": round(100 * (1 - received / expected), 3) if expected else None,
    }


def _failures(err_file: Path) -> dict[str, int]:
    """Calls SIPp gave up, by what it got instead of what it waited for (one count per call)."""
    text = err_file.read_text(errors="replace") if err_file.exists() else ""
    calls: dict[str, str] = {}
    for m in re.finditer(
        r"Aborting call on (.*?) for Call-Id '([^']+)'(?:.*?received 'SIP/2\.0 ([^\r\n']+))?", text
    ):
        calls.setdefault(m.group(2), m.group(3) or m.group(1))
    found: dict[str, int] = {}
    for why in calls.values():
        found[why] = found.get(why, 0) + 1
    return found


def _engine_log(path: Path) -> dict[str, Any]:
    """What rtpengine's own log says: the time its control thread spent per ng command (where a
    set-up's seconds go), retries it recognised, and its own drop messages."""
    text = path.read_text(errors="replace") if path.exists() else ""
    spent: dict[str, list[float]] = {}
    for m in re.finditer(r"Replying to '([a-z ]+)' .*?elapsed time ([0-9.]+) sec", text):
        spent.setdefault(m.group(1), []).append(float(m.group(2)))
    return {
        "ng_commands": {k: len(v) for k, v in sorted(spent.items())},
        "ng_seconds_by_command": {k: round(sum(v), 2) for k, v in sorted(spent.items())},
        "ng_retries_seen": text.count("as a duplicate"),
        "engine_queue_overruns": text.count("Too many packets in UDP receive queue"),
        "engine_discard_messages": text.count("discarding packet"),
    }


class _Listener(asyncio.DatagramProtocol):
    """Counts one caller's RTP as relayed to it: packets, and the span of sequence numbers."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.count = 0
        self.first: int | None = None
        self.last = 0  # extended (unwrapped) sequence number of the latest packet

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if len(data) < 12 or data[0] >> 6 != 2 or data[1] & 0x7F != 8:
            return  # not an A-law RTP packet (RTCP, or a stray)
        seq = int.from_bytes(data[2:4], "big")
        if self.first is None:
            self.first = self.last = seq
        else:
            step = (seq - self.last) % 65536
            # Forward within half the space: newer; otherwise a late (reordered) one.
            if step < 32768:
                self.last += step
        self.count += 1

    def figures(self) -> tuple[int, int]:
        """(received, expected by the sequence numbers)."""
        if self.first is None:
            return 0, 0
        return self.count, self.last - self.first + 1

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def _probe(ng_address: str, call_ids: list[str], wanted: int) -> tuple[list[_Listener], int]:
    """Pair `wanted` waiting callers with a listener of ours each (rtpengine leaves the sink for
    it); a caller an agent's phone answered is left to its phone (and counted)."""
    client = NgClient(ng_address, timeout_s=5.0)
    await client.open()
    loop = asyncio.get_running_loop()
    listeners: list[_Listener] = []
    on_phones = 0
    common: dict[str, Any] = {"replace": ["origin", "session-connection"], "ICE": "remove"}
    try:
        for i, call_id in enumerate(call_ids):
            if len(listeners) >= wanted:
                break
            try:
                reply = await client.request("query", **{"call-id": call_id})
                tags = reply.get("tags")
                if isinstance(tags, dict) and len(tags) > 2:
                    on_phones += 1
                    continue  # the caller, our sink and an agent's phone: talking, not ours
                caller_tag, caller_port = _caller(reply)
                transport, listener = await loop.create_datagram_endpoint(
                    _Listener, local_addr=("127.0.0.1", 0)
                )
                listeners.append(listener)  # closed by the bench; counted only if it heard anything
                port = transport.get_extra_info("sockname")[1]
                ids = {"call-id": call_id, "from-tag": caller_tag, "to-tag": f"bench-ear-{i}"}
                await client.request("offer", **ids, sdp=_alaw_sdp(caller_port), **common)
                await client.request("answer", **ids, sdp=_alaw_sdp(port), **common)
            except (MediaError, LookupError):
                continue  # the call ended meanwhile, has no caller stream, or the engine is late
    finally:
        client.close()
    return listeners, on_phones


def _caller(reply: dict[str, Any]) -> tuple[str, int]:
    """The caller's tag and the RTP port it sends from, from an ng query."""
    tags = reply.get("tags")
    for name, tag in tags.items() if isinstance(tags, dict) else ():
        if "SIPpTag" not in name or not isinstance(tag, dict):
            continue
        for media in tag.get("medias", []):
            for stream in media.get("streams", []) if isinstance(media, dict) else []:
                if isinstance(stream, dict) and b"RTP" in stream.get("flags", []):
                    return name, int(stream["endpoint"]["port"])
    raise LookupError("no caller stream")


def _alaw_sdp(port: int) -> str:
    return "\r\n".join([
        "v=0", "o=bench 1 1 IN IP4 127.0.0.1", "s=bench", "c=IN IP4 127.0.0.1", "t=0 0",
        f"m=audio {port} RTP/AVP 8", "a=rtpmap:8 PCMA/8000", "a=sendrecv",
    ]) + "\r\n"  # fmt: skip


def _cpu(*procs: psutil.Process) -> tuple[float, ...]:
    return tuple(sum(p.cpu_times()[:2]) for p in procs)


async def engine_calls(ng_address: str) -> list[str]:
    """The calls the engine holds now (their ids)."""
    client = NgClient(ng_address, timeout_s=5.0)
    await client.open()
    try:
        reply = await client.request("list", limit=100_000)
    finally:
        client.close()
    calls = reply.get("calls", [])
    return [c.decode() for c in calls if isinstance(c, bytes)] if isinstance(calls, list) else []


async def _caller_packets(ng_address: str, call_ids: list[str]) -> tuple[dict[str, int], float]:
    """RTP packets rtpengine has received from each caller so far, and when (mid-sweep)."""
    client = NgClient(ng_address, timeout_s=5.0)
    await client.open()
    counts: dict[str, int] = {}
    t0 = time.perf_counter()
    try:
        for call_id in call_ids:
            try:
                reply = await client.request("query", **{"call-id": call_id})
            except MediaError:
                continue  # the call ended meanwhile (or the engine was late): left out of the sweeps
            counts[call_id] = _from_caller(reply)
    finally:
        client.close()
    return counts, (t0 + time.perf_counter()) / 2


def _from_caller(reply: dict[str, Any]) -> int:
    tags = reply.get("tags")
    total = 0
    for name, tag in tags.items() if isinstance(tags, dict) else ():
        if "SIPpTag" not in name or not isinstance(tag, dict):
            continue  # the other party is our sink: it sends nothing
        for media in tag.get("medias", []):
            for stream in media.get("streams", []) if isinstance(media, dict) else []:
                flags = stream.get("flags", []) if isinstance(stream, dict) else []
                if b"RTP" in flags:
                    packets = stream.get("stats", {}).get("packets", 0)
                    total += packets if isinstance(packets, int) else 0
    return total


def rtp_in_ratio(before: dict[str, int], after: dict[str, int], elapsed_s: float) -> float | None:
    """Packets received from the callers in the window / what 50-packet-a-second streams send."""
    calls = [c for c in before if c in after]
    if not calls or elapsed_s <= 0:
        return None
    got = sum(after[c] - before[c] for c in calls)
    return got / (len(calls) * PACKETS_PER_S * elapsed_s)


class _Phones:
    """The site's robot agents on their registered SIP phones (none when `agents` is 0)."""

    def __init__(self, cluster: Cluster, run_dir: Path, agents: int, hold_ms: int) -> None:
        self.cluster = cluster
        self.stop = asyncio.Event()
        self.task: asyncio.Task[RobotStats] | None = None
        site = cluster.config.site("gz")
        if agents:
            # Each talks until its caller hangs up (longer than the run), then takes the next.
            policy = RobotPolicy(handle_time_mean_s=hold_ms / 1000 + 600, handle_distribution="constant")
            roster = [(a.code, DEFAULT_PASSWORD) for a in site.agents]
            robots = run_sip_robots(
                site, roster, policy, self.stop, work=run_dir, phone_password=PHONE_PASSWORD,
                talk_s=hold_ms / 1000 + 30,
            )  # fmt: skip
            self.task = asyncio.create_task(robots)
        self.agents = agents

    async def _by_state(self) -> dict[str, int]:
        async with rpc.channel(self.cluster.config.site("gz").listen) as ch:
            stub = site_admin_pb2_grpc.SiteAdminServiceStub(ch)
            reply = await stub.GetSiteStatus(site_admin_pb2.GetSiteStatusRequest(), timeout=15)
        return dict(reply.summary.agents_by_state)

    async def ready(self) -> None:
        """Every agent registered, logged in and ready before the first caller dials."""
        while self.task is not None and (await self._by_state()).get("READY", 0) < self.agents:
            if self.task.done():
                self.task.result()  # the phones did not register: raise why
                raise RuntimeError("the robot agents stopped before they were ready")
            await asyncio.sleep(0.5)

    async def talking(self) -> int | None:
        """Agents talking now (None: the site did not say in time, a starved site at load)."""
        if self.task is None:
            return 0
        try:
            return (await self._by_state()).get("TALKING", 0)
        except grpc.aio.AioRpcError:
            return None

    async def close(self) -> RobotStats | None:
        self.stop.set()
        return await self.task if self.task is not None else None
