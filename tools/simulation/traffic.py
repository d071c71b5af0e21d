"""The caller generator: Poisson arrivals per site, each caller a call reference on the site's trunk
link (one Signalling stream per site for all its calls) or a PlaceCall stream of its own.

What every caller saw is kept in a CallerView, independently of central's records, so that the
report can measure the platform from the outside and reconcile it with central afterwards.

Callers answer each IVR prompt with a digit drawn by weight, hang up when their patience runs out
(counted from the moment they dialled) unless an agent answered, and otherwise wait for `ended`.
A call whose stream or link breaks before `ended` (or whose signal the site refused) is a "lost"
call, with the error kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

import grpc

from tools.simulation.trunk_paths import CallPath, PathBroken, Trunk
from vcc import rpc
from vcc.tls import TRUNK, central_server, site_server
from vcc.v1 import central_pb2, central_pb2_grpc, common_pb2, trunk_pb2, trunk_pb2_grpc

log = logging.getLogger(__name__)

OUTCOMES: Mapping[int, str] = {
    common_pb2.CALL_OUTCOME_ANSWERED: "answered",
    common_pb2.CALL_OUTCOME_ABANDONED: "abandoned",
    common_pb2.CALL_OUTCOME_BLOCKED: "blocked",
    common_pb2.CALL_OUTCOME_FAILED: "failed",
    common_pb2.CALL_OUTCOME_SELF_SERVED: "self_served",
}
# How long a caller that hung up at the drain deadline waits for `ended` before dropping the stream.
HANG_UP_GRACE_S = 5.0
_JOURNAL_FLUSH_S = 0.25


@dataclass(frozen=True)
class SiteLoad:
    site_id: str
    address: str
    rate_per_s: float
    # The site's trunk channels: with pre-routing, the network does not offer more calls than this.
    trunk_channels: int | None = None


@dataclass(frozen=True)
class TrafficPlan:
    loads: Sequence[SiteLoad]
    duration_s: float
    seed: int = 0
    dnis: str = "10000"
    digits: Sequence[tuple[str, float]] = (("1", 1.0),)  # IVR digit and weight
    patience_mean_s: float | None = None  # None: callers never hang up
    patience_distribution: Literal["exponential", "constant"] = "exponential"
    customers: int = 1000  # ANIs f"1380000{i:04d}" (screen pop hits)
    unknown_caller_share: float = 0.1  # share of ANIs outside the customer range
    # Set: the network pre-routes through central (PreRouteCall) when a caller's city is down or
    # its trunks are full; "busy" from central counts as blocked.
    central_address: str | None = None
    # Every central replica's address: when the one asked is gone (a killed leader), the next.
    central_addresses: tuple[str, ...] = ()
    # Callers take their progress in batches (CallOffer.batched): fewer messages per call.
    batched: bool = True
    # The calls to a site share its trunk link (one Signalling stream); False: a PlaceCall
    # stream per call.
    trunk_link: bool = True


@dataclass
class CallerView:
    """What one caller saw, independently of central.

    `progress` holds (kind, unix time of receipt, details) in the order received. Kinds are the
    PlaceCallResponse progress names (accepted, prompt, queued, ringing, connected, held,
    retrieved, transferred, ended) plus the caller's own actions "digits" and "hang_up".
    Details of site messages include "site_at", the site's own timestamp of the message.
    For a "lost" call `ended_at` is when the stream broke and `error` says how.
    """

    key: str
    entry_site_id: str
    call_id: str
    offered_at: float
    progress: list[tuple[str, float, dict[str, str]]]
    outcome: str  # "answered" | "abandoned" | "blocked" | "failed" | "lost" (stream broke, no `ended`)
    queued_at: float | None
    answered_at: float | None
    ended_at: float | None
    agent_code: str
    served_site_id: str
    skill_group: str
    reason: str = ""  # CallEnded.reason
    error: str = ""  # why the stream broke, for "lost"
    # gRPC messages of the caller's stream: read from the site (a batch counted once), written. On
    # a link, a message carrying k calls' signals or reports counts a k-th for each.
    messages_in: float = 0.0
    messages_out: float = 0.0
    ani: str = ""
    home_site_id: str = ""  # the caller's city; differs from entry_site_id when pre-routed

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> CallerView:
        def text(name: str) -> str:
            return str(data.get(name) or "")

        def moment(name: str) -> float | None:
            value = data.get(name)
            return None if value is None else float(str(value))

        raw_progress = data.get("progress") or []
        assert isinstance(raw_progress, list)
        progress = [(str(k), float(t), {str(a): str(b) for a, b in d.items()}) for k, t, d in raw_progress]
        return cls(
            key=text("key"),
            entry_site_id=text("entry_site_id"),
            call_id=text("call_id"),
            offered_at=float(str(data["offered_at"])),
            progress=progress,
            outcome=text("outcome"),
            queued_at=moment("queued_at"),
            answered_at=moment("answered_at"),
            ended_at=moment("ended_at"),
            agent_code=text("agent_code"),
            served_site_id=text("served_site_id"),
            skill_group=text("skill_group"),
            reason=text("reason"),
            error=text("error"),
            messages_in=float(str(data.get("messages_in") or 0)),
            messages_out=float(str(data.get("messages_out") or 0)),
            ani=text("ani"),
            home_site_id=text("home_site_id"),
        )


def load_journal(path: Path) -> list[CallerView]:
    """The caller views of a journal written by run_traffic."""
    with path.open(encoding="utf-8") as f:
        return [CallerView.from_json(json.loads(line)) for line in f if line.strip()]


class _Journal:
    """Appends one JSON line per finished call, written off the event loop in small batches."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lines: list[str] = []
        self._file: IO[str] | None = None
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self._file = await asyncio.to_thread(self._path.open, "w", encoding="utf-8")
        self._task = asyncio.create_task(self._flush_periodically())

    def add(self, view: CallerView) -> None:
        self._lines.append(json.dumps(view.to_json(), separators=(",", ":")) + "\n")

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(_JOURNAL_FLUSH_S)
            await self._flush()

    async def _flush(self) -> None:
        lines, self._lines = self._lines, []
        if lines and self._file is not None:
            await asyncio.to_thread(self._write, self._file, lines)

    @staticmethod
    def _write(file: IO[str], lines: list[str]) -> None:
        file.writelines(lines)
        file.flush()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._flush()
        if self._file is not None:
            await asyncio.to_thread(self._file.close)


class _Caller:
    """One call from dial to `ended`, writing what it sees into its CallerView."""

    def __init__(
        self,
        trunk: Trunk,
        site_id: str,
        *,
        ani: str,
        dnis: str,
        digits: Sequence[tuple[str, float]],
        patience_s: float | None,
        rng: random.Random,
        batched: bool = True,
    ) -> None:
        self._trunk = trunk
        self._dnis = dnis
        self._batched = batched
        self._digits = digits
        self._patience_s = patience_s
        self._rng = rng
        self._hang_up_task: asyncio.Task[None] | None = None
        self._path: CallPath | None = None
        self.ended = False
        self.view = CallerView(
            key=uuid.uuid4().hex,
            entry_site_id=site_id,
            call_id="",
            offered_at=time.time(),
            progress=[],
            outcome="lost",
            queued_at=None,
            answered_at=None,
            ended_at=None,
            agent_code="",
            served_site_id="",
            skill_group="",
            ani=ani,
        )

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        patience = (
            loop.call_later(self._patience_s, self.hang_up, "patience")
            if self._patience_s is not None
            else None
        )
        try:
            await self._converse()
        except PathBroken as exc:
            if not self.ended:
                self.view.error = exc.error
        finally:
            if patience is not None:
                patience.cancel()
            if self._hang_up_task is not None and not self._hang_up_task.done():
                self._hang_up_task.cancel()
            if not self.ended:
                self.view.outcome = "lost"
                self.view.ended_at = time.time()
                self.view.error = self.view.error or "stream-closed-without-ended"

    async def _converse(self) -> None:
        view = self.view
        path = self._trunk.path(view)
        self._path = path
        view.offered_at = time.time()
        offer = trunk_pb2.CallOffer(
            idempotency_key=view.key, ani=view.ani, dnis=self._dnis, batched=self._batched
        )
        await self._write(trunk_pb2.PlaceCallRequest(offer=offer))
        while True:
            response = await path.read()
            if response is None:
                return
            await self._on_response(response)
            for step in response.then:  # the steps that came with it (a batched caller)
                await self._on_response(step)
            if self.ended:
                await path.done_writing()

    async def _write(self, request: trunk_pb2.PlaceCallRequest) -> None:
        assert self._path is not None
        await self._path.write(request)

    async def _on_response(self, response: trunk_pb2.PlaceCallResponse) -> None:
        view = self.view
        now = time.time()
        if response.call_id:
            view.call_id = response.call_id
        kind = response.WhichOneof("progress") or "unknown"
        details = {"site_at": f"{rpc.unix_s(response.at):.6f}"} if response.HasField("at") else {}
        if kind == "accepted":
            details.update(site_id=response.accepted.site_id, trunk_group=response.accepted.trunk_group)
        elif kind == "prompt":
            details.update(choices=",".join(response.prompt.choices), prompt=response.prompt.prompt)
        elif kind == "queued":
            queued = response.queued
            details.update(
                skill_group=queued.skill_group,
                position=str(queued.position),
                expected_wait_s=f"{queued.expected_wait_s:.3f}",
            )
            view.skill_group = queued.skill_group
            if view.queued_at is None:
                view.queued_at = now
        elif kind == "ringing":
            details.update(site_id=response.ringing.site_id, agent_code=response.ringing.agent_code)
        elif kind == "connected":
            details.update(site_id=response.connected.site_id, agent_code=response.connected.agent_code)
            if view.answered_at is None:
                # The call was answered by its first agent (as central records it); later
                # connections come from transfers and are in the progress.
                view.answered_at = now
                view.served_site_id = response.connected.site_id
                view.agent_code = response.connected.agent_code
        elif kind == "transferred":
            moved = response.transferred
            details.update(
                to_site_id=moved.to_site_id,
                to_agent_code=moved.to_agent_code,
                to_skill_group=moved.to_skill_group,
            )
        elif kind == "ended":
            outcome = OUTCOMES.get(response.ended.outcome, "failed")
            details.update(outcome=outcome, reason=response.ended.reason)
            self.ended = True
            view.outcome = outcome
            view.reason = response.ended.reason
            view.ended_at = now
        view.progress.append((kind, now, details))
        # A caller who has hung up presses no key. (On a busy machine the patience can run out
        # before the menu is even played; the digits would then be written after the site ended
        # the call, and grpc.aio fails such a write with INTERNAL, which also replaces the status
        # of the call: the `ended` already on its way would be lost, the call counted "lost".)
        # A flow's announcement (text, no `collect`) asks for no key.
        asks = kind == "prompt" and (response.prompt.collect or not response.prompt.text)
        if asks and not self.ended and self._hang_up_task is None:
            digit = self._choose_digit(list(response.prompt.choices))
            view.progress.append(("digits", time.time(), {"digits": digit}))
            # The call may have ended meanwhile (a hang-up crossed the prompt): the write then fails,
            # and the `ended` already on its way is still read.
            with contextlib.suppress(PathBroken, asyncio.InvalidStateError):
                await self._write(trunk_pb2.PlaceCallRequest(digits=trunk_pb2.CallerDigits(digits=digit)))

    def _choose_digit(self, choices: list[str]) -> str:
        offered = [(d, w) for d, w in self._digits if not choices or d in choices]
        if not offered:
            # None of the plan's digits is on this menu: take its first choice rather than loop.
            return choices[0]
        return self._rng.choices([d for d, _ in offered], weights=[w for _, w in offered])[0]

    def never_reached(self) -> bool:
        """The call got no answer at all from the site (connection refused: the site is down)."""
        return (
            self.view.outcome == "lost"
            and not self.view.progress
            and self.view.error.startswith("UNAVAILABLE")
        )

    def move_to(self, site_id: str, trunk: Trunk) -> None:
        """Pre-routed: the network delivers this call to another city, as a new attempt."""
        self._trunk = trunk
        self._path = None
        self._hang_up_task = None
        self.ended = False
        view = self.view
        view.entry_site_id = site_id
        view.key = uuid.uuid4().hex
        view.call_id = ""
        view.progress = []
        view.outcome = "lost"
        view.error = ""

    def busy(self, reason: str) -> None:
        """Central answered busy: the network refuses the call (blocked, no site saw it)."""
        self.ended = True
        view = self.view
        view.outcome = "blocked"
        view.reason = reason
        view.ended_at = time.time()

    def hang_up(self, why: str, *, even_if_connected: bool = False) -> None:
        """Send a hang-up (patience ran out, or the drain deadline passed)."""
        if self.ended or self._path is None or self._hang_up_task is not None:
            return
        if self.view.answered_at is not None and not even_if_connected:
            return
        self.view.progress.append(("hang_up", time.time(), {"why": why}))
        self._hang_up_task = asyncio.ensure_future(self._send_hang_up())

    async def _send_hang_up(self) -> None:
        # The stream may finish while we write: then the hang-up is moot.
        with contextlib.suppress(PathBroken, asyncio.InvalidStateError):
            await self._write(trunk_pb2.PlaceCallRequest(hang_up=trunk_pb2.CallerHangUp()))


@dataclass
class _Run:
    plan: TrafficPlan
    drain_timeout_s: float
    journal: _Journal | None
    on_call: Callable[[CallerView], None] | None
    callers: list[_Caller] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    network: _Network | None = None

    def patience(self, rng: random.Random) -> float | None:
        mean = self.plan.patience_mean_s
        if mean is None:
            return None
        if self.plan.patience_distribution == "constant" or mean <= 0:
            return max(0.0, mean)
        return rng.expovariate(1.0 / mean)

    def ani(self, rng: random.Random) -> str:
        if self.plan.customers <= 0 or rng.random() < self.plan.unknown_caller_share:
            return f"1390000{rng.randrange(10_000):04d}"  # not a seeded customer phone
        return f"1380000{rng.randrange(min(self.plan.customers, 10_000)):04d}"

    def finished(self, caller: _Caller) -> None:
        if self.journal is not None:
            self.journal.add(caller.view)
        if self.on_call is not None:
            try:
                self.on_call(caller.view)
            except Exception:
                log.exception("on_call callback failed")

    async def offer(self, load: SiteLoad, trunk: Trunk, start: float) -> None:
        """Poisson arrivals at one site from `start` for the plan's duration (loop clock)."""
        if load.rate_per_s <= 0:
            return
        loop = asyncio.get_running_loop()
        rng = random.Random(f"{self.plan.seed}:{load.site_id}")
        due = start
        end = start + self.plan.duration_s
        while True:
            due += rng.expovariate(load.rate_per_s)
            if due >= end:
                return
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            caller = _Caller(
                trunk,
                load.site_id,
                ani=self.ani(rng),
                dnis=self.plan.dnis,
                digits=self.plan.digits,
                patience_s=self.patience(rng),
                rng=random.Random(rng.getrandbits(64)),
                batched=self.plan.batched,
            )
            self.callers.append(caller)
            task = asyncio.create_task(self._run_caller(caller))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _run_caller(self, caller: _Caller) -> None:
        try:
            if self.network is None:
                await caller.run()
            else:
                await self.network.deliver(caller)
        except Exception:
            log.exception("caller %s failed", caller.view.key)
            caller.view.error = caller.view.error or "caller-crashed"
        finally:
            self.finished(caller)

    async def drain(self) -> None:
        """Wait for calls in flight; past the drain timeout hang them up, then drop them."""
        pending = set(self.tasks)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=self.drain_timeout_s)
        if pending:
            log.warning(
                "%d calls still open after %.1fs of drain: hanging up", len(pending), self.drain_timeout_s
            )
            for caller in self.callers:
                caller.hang_up("drain-timeout", even_if_connected=True)
            _, pending = await asyncio.wait(pending, timeout=HANG_UP_GRACE_S)
        for caller in self.callers:
            if not caller.ended:
                caller.view.error = caller.view.error or "drain-timeout"
        await self.cancel()

    async def cancel(self) -> None:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _Network:
    """The exchange's side of pre-routing: it knows which cities are down or have full trunks and
    then asks central where to deliver a new call (SPEC F4/F14)."""

    def __init__(self, plan: TrafficPlan, trunks: dict[str, Trunk], call_end: float = 0.0) -> None:
        assert plan.central_address is not None
        self._replicas = list(dict.fromkeys([plan.central_address, *plan.central_addresses]))
        self._asking = plan.central_address
        self._central = rpc.channel(plan.central_address, persona=TRUNK, expect=central_server())
        self._router = central_pb2_grpc.CentralServiceStub(self._central)
        self._plan = plan
        self._call_end = call_end  # the loop's clock: a new site's link or streams' deadline
        self._stubs = trunks
        # The trunks to sites central named (closed with the network).
        self._new_trunks: dict[str, Trunk] = {}
        self._channels: list[grpc.aio.Channel] = []
        self._trunks = {load.site_id: load.trunk_channels for load in plan.loads}
        self._in_flight: dict[str, int] = {}
        self.down: set[str] = set()

    def _full_or_down(self, site_id: str) -> bool:
        trunks = self._trunks.get(site_id)
        return site_id in self.down or (trunks is not None and self._in_flight.get(site_id, 0) >= trunks)

    async def deliver(self, caller: _Caller) -> None:
        home = caller.view.entry_site_id
        caller.view.home_site_id = home
        site = home
        for _attempt in range(2):
            if self._full_or_down(site):
                target = await self._pre_route(home, caller.view.ani)
                if target is None:
                    caller.busy("province-busy")
                    return
                site, trunk = target
                caller.move_to(site, trunk)
            self._in_flight[site] = self._in_flight.get(site, 0) + 1
            try:
                await caller.run()
            finally:
                self._in_flight[site] -= 1
            if not caller.never_reached():
                self.down.discard(site)
                return
            # The city did not answer at all: it is down for the network until a call gets through.
            self.down.add(site)

    async def _pre_route(self, home: str, ani: str) -> tuple[str, Trunk] | None:
        request = central_pb2.PreRouteCallRequest(home_site_id=home, ani=ani)
        reply: central_pb2.PreRouteCallResponse | None = None
        tried: set[str] = set()
        # A follower names the leader (ask it); a replica that is gone (a killed leader) says
        # nothing: ask the next one. Each replica at most once per call.
        while reply is None:
            tried.add(self._asking)
            try:
                reply = await self._router.PreRouteCall(request, timeout=2.0)
            except grpc.aio.AioRpcError as exc:
                leader = _leader_of(exc)
                untried = [a for a in self._replicas if a not in tried]
                if leader is not None and leader not in tried:
                    self._follow(leader)
                elif leader is None and exc.code() == grpc.StatusCode.UNAVAILABLE and untried:
                    self._follow(untried[0])
                else:
                    log.warning("pre-routing unavailable (%s): the call stays with its city", exc.code().name)
                    return home, self._stubs[home]
        site = reply.site_id
        if not site:
            return None
        if site not in self._stubs:
            # The site central named must answer there (its certificate checked).
            channel = rpc.channel(reply.address, persona=TRUNK, expect=site_server(site))
            self._channels.append(channel)
            stub = trunk_pb2_grpc.TrunkIngressServiceStub(channel)
            self._stubs[site] = self._new_trunks.setdefault(
                site, Trunk(stub, linked=self._plan.trunk_link, deadline_at=self._call_end)
            )
        return site, self._stubs[site]

    def _follow(self, address: str) -> None:
        self._channels.append(self._central)  # closed with the others at the end
        self._asking = address
        self._central = rpc.channel(address, persona=TRUNK, expect=central_server())
        self._router = central_pb2_grpc.CentralServiceStub(self._central)

    async def close(self) -> None:
        await asyncio.gather(*(trunk.close() for trunk in self._new_trunks.values()))
        for channel in (self._central, *self._channels):
            await channel.close()


def _leader_of(exc: grpc.aio.AioRpcError) -> str | None:
    """The leader's address a follower replica gives with its `not-leader` refusal."""
    for key, value in exc.trailing_metadata() or ():
        if key == "vcc-leader" and value:
            return str(value)
    return None


async def run_traffic(
    plan: TrafficPlan,
    journal: Path | None = None,
    on_call: Callable[[CallerView], None] | None = None,
    *,
    drain_timeout_s: float = 30.0,
) -> list[CallerView]:
    """Offer the plan's calls, wait for them to end, and return what every caller saw (by offer time)."""
    book = _Journal(journal) if journal is not None else None
    run = _Run(plan=plan, drain_timeout_s=drain_timeout_s, journal=book, on_call=on_call)
    channels = {
        load.address: rpc.channel(load.address, persona=TRUNK, expect=site_server(load.site_id))
        for load in plan.loads
    }
    loop = asyncio.get_running_loop()
    start = loop.time()
    # Every stream's deadline (a link's too): past the drain and the hang-up grace, so the
    # generator ends first.
    call_end = start + plan.duration_s + drain_timeout_s + HANG_UP_GRACE_S + 5.0
    linked = plan.trunk_link
    trunks = {
        address: Trunk(trunk_pb2_grpc.TrunkIngressServiceStub(ch), linked=linked, deadline_at=call_end)
        for address, ch in channels.items()
    }
    if plan.central_address is not None:
        run.network = _Network(plan, {load.site_id: trunks[load.address] for load in plan.loads}, call_end)
    try:
        if book is not None:
            await book.open()
        await asyncio.gather(*(run.offer(load, trunks[load.address], start) for load in plan.loads))
        await run.drain()
    finally:
        await run.cancel()
        await asyncio.gather(*(trunk.close() for trunk in trunks.values()))
        if run.network is not None:
            await run.network.close()
        if book is not None:
            await book.close()
        for ch in channels.values():
            await ch.close()
    return sorted((caller.view for caller in run.callers), key=lambda v: v.offered_at)
