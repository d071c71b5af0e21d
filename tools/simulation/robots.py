"""Robot agents: scripted desktops that log in and take calls through the real CTI API.

Each robot logs in, opens its event stream, goes READY, answers what rings (after the policy's
answer delay, or not at all for the share it ignores), talks for a drawn handle time, hangs up and
ends wrap-up per policy. After a ring-no-answer the site makes it NOT_READY ("no-answer"): the robot
goes READY again. When its stream breaks (site killed or restarted) it logs in again with bounded
back-off until told to stop; on stop it goes NOT_READY, hangs up what it holds and logs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import grpc
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    stop_any,
    wait_exponential,
)
from tenacity.stop import stop_base

from vcc import rpc
from vcc.tls import DESKTOP, site_server
from vcc.v1 import common_pb2, cti_pb2, cti_pb2_grpc

log = logging.getLogger(__name__)

# Answer/HangUp/EndWrapUp/SetState refused because the call or the agent moved on meanwhile
# (caller hung up while we answered, wrap-up already over): a normal race, not an error.
_RACE_CODES = frozenset({grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND})
# Worth retrying a unary request with the same idempotency key.
_TRANSIENT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# The session token is no longer known to the site (it restarted): log in again.
_SESSION_GONE_CODES = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND})
# Login refusals that retrying cannot fix.
_LOGIN_FATAL_CODES = frozenset(
    {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT}
)
_AUTO_READY_REASONS = frozenset({"no-answer"})

R = TypeVar("R")


@dataclass(frozen=True)
class RobotPolicy:
    answer_delay_s: float = 0.0  # time to answer a ringing call (SPEC ring_delay_s)
    handle_time_mean_s: float = 2.0
    handle_distribution: Literal["exponential", "constant"] = "exponential"
    wrap_up: Literal["site_timer", "immediate"] = "immediate"  # immediate = EndWrapUp(READY) at once
    no_answer_probability: float = 0.0  # share of offers a robot ignores (to exercise ring-no-answer)
    seed: int = 0
    rpc_deadline_s: float = rpc.DEFAULT_DEADLINE_S
    # The event stream is long-lived but still has a deadline; the robot reopens it when it expires.
    events_deadline_s: float = 3600.0
    # Sessions (login + event stream) a robot opens before giving up on a site that keeps failing.
    max_sessions: int = 1000
    # Share of answered calls the robot hands to a colleague halfway through the handle time, how
    # (blind; consult then complete; consult then conference and leave), and to which (skill
    # group, site) targets, one drawn at random per transfer.
    transfer_probability: float = 0.0
    transfer_kind: Literal["blind", "consult", "conference"] = "blind"
    transfer_targets: tuple[tuple[str, str], ...] = ()
    # The agent's SIP phone answers (vcc agents --sip): the robot leaves offers to it and only
    # talks and hangs up on the desktop.
    answer_on_phone: bool = False
    # Log in with auto-answer: the site answers each offer at once (no Answer request; the
    # answer delay and the share ignored do not apply).
    auto_answer: bool = False
    # Take the desktop's events in batches (StreamEventsRequest.batched): fewer messages.
    batched_events: bool = True


@dataclass
class RobotStats:
    """Counters over all robots of one run_robots call."""

    logged_in: int = 0
    offered: int = 0
    answered: int = 0
    hung_up: int = 0
    ignored: int = 0
    errors: int = 0
    # Requests refused because the call or state moved on meanwhile (FAILED_PRECONDITION/NOT_FOUND).
    refused: int = 0
    logged_out: int = 0
    transfers_attempted: int = 0
    transfers_completed: int = 0
    transfers_cross_site: int = 0
    transfers_failed: int = 0
    # What the robots cost in messages: events read off their streams (gRPC messages, a batch
    # counted once) and unary requests sent (each attempt).
    messages_in: int = 0
    requests: int = 0


class _TransferFailed(Exception):
    """The transfer was refused or the consulted colleague never came."""


class _SessionLost(Exception):
    """The login or the event stream failed in a way another session may fix."""


class _StopWhenSet(stop_base):
    """Tenacity stop condition: the robots were told to stop."""

    def __init__(self, event: asyncio.Event) -> None:
        self._event = event

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._event.is_set()


def _code(exc: BaseException) -> grpc.StatusCode | None:
    return exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None


def _is_transient(exc: BaseException) -> bool:
    return _code(exc) in _TRANSIENT_CODES


# How long a robot waits for the consulted colleague to answer before giving up on the transfer.
CONSULT_WAIT_S = 15.0


def _key() -> str:
    return uuid.uuid4().hex


class _Robot:
    def __init__(
        self,
        stub: cti_pb2_grpc.AgentDesktopServiceAsyncStub,
        *,
        agent_code: str,
        password: str,
        policy: RobotPolicy,
        stats: RobotStats,
        stop: asyncio.Event,
    ) -> None:
        self._stub = stub
        self.agent_code = agent_code
        self._password = password
        self._policy = policy
        self._stats = stats
        self._stop = stop
        # A string seed is hashed deterministically (unlike hash()), so runs repeat.
        self._rng = random.Random(f"{policy.seed}:{agent_code}")
        self._token: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._answering: dict[str, asyncio.Task[None]] = {}
        self._talking: dict[str, asyncio.Task[None]] = {}
        self._connected: set[str] = set()
        # Why each ringing call came (a colleague's transfer is not transferred again).
        self._purpose: dict[str, str] = {}
        self._transfer_stage: dict[str, asyncio.Queue[str]] = {}

    # -- life cycle ------------------------------------------------------------------------

    async def run(self) -> None:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_SessionLost),
            wait=wait_exponential(multiplier=0.2, max=2.0),
            stop=stop_any(stop_after_attempt(self._policy.max_sessions), _StopWhenSet(self._stop)),
            sleep=self._sleep_unless_stopped,
            retry_error_callback=self._give_up,
        )
        try:
            await retrying(self._session)
        except Exception:
            self._stats.errors += 1
            log.exception("robot %s failed", self.agent_code)
        finally:
            await self._cancel_tasks()

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    def _give_up(self, state: RetryCallState) -> None:
        if not self._stop.is_set():
            log.error("robot %s gives up after %d sessions", self.agent_code, state.attempt_number)

    async def _session(self) -> None:
        if self._stop.is_set():
            return
        fresh = False
        if self._token is None:
            token = await self._login()
            if token is None:
                return
            self._token, fresh = token, True
        events = self._stub.StreamEvents(
            cti_pb2.StreamEventsRequest(session_token=self._token, batched=self._policy.batched_events),
            timeout=self._policy.events_deadline_s,
        )
        reader = asyncio.create_task(self._read_events(events, fresh))
        stopper = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not reader.done():
                reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        if self._stop.is_set():
            await self._log_out()
            return
        await self._cancel_tasks()
        exc = reader.exception() if not reader.cancelled() else None
        if _code(exc or Exception()) in _SESSION_GONE_CODES or exc is None:
            # The site forgot us (restart) or closed the stream: a new login is needed.
            self._token = None
        if exc is not None and _code(exc) != grpc.StatusCode.DEADLINE_EXCEEDED:
            self._stats.errors += 1
            log.warning("robot %s lost its event stream: %s", self.agent_code, exc)
        raise _SessionLost(str(exc))

    async def _login(self) -> str | None:
        request = cti_pb2.LoginRequest(
            idempotency_key=_key(),
            agent_code=self.agent_code,
            password=self._password,
            auto_answer=self._policy.auto_answer,
        )
        try:
            reply = await self._unary(self._stub.Login, request)
        except grpc.aio.AioRpcError as exc:
            self._stats.errors += 1
            if exc.code() in _LOGIN_FATAL_CODES:
                log.error("robot %s cannot log in: %s %s", self.agent_code, exc.code().name, exc.details())
                return None
            raise _SessionLost(f"login: {exc.code().name}") from exc
        self._stats.logged_in += 1
        return reply.session_token

    async def _read_events(
        self,
        events: grpc.aio.UnaryStreamCall[cti_pb2.StreamEventsRequest, cti_pb2.StreamEventsResponse],
        fresh: bool,
    ) -> None:
        first = True
        async for event in events:
            self._stats.messages_in += 1
            self._on_event(event)
            for then in event.then:  # the events that came with it (batched)
                self._on_event(then)
            if first:
                first = False
                # Reading the first event proves the stream is open, so going READY now cannot
                # miss an offer.
                if fresh or self._needs_ready(event):
                    self._spawn(self._set_ready())

    def _needs_ready(self, event: cti_pb2.StreamEventsResponse) -> bool:
        if event.WhichOneof("event") != "state_changed":
            return False
        agent = event.state_changed.agent
        # "no-answer" is handled by _on_event like any later state change.
        return agent.state == common_pb2.AGENT_STATE_NOT_READY and agent.reason_code == "login"

    async def _log_out(self) -> None:
        token = self._token
        await self._cancel_tasks()
        if token is None:
            return
        await self._quiet(
            self._stub.SetState,
            cti_pb2.SetStateRequest(
                idempotency_key=_key(),
                session_token=token,
                state=common_pb2.AGENT_STATE_NOT_READY,
                reason_code="logout",
            ),
        )
        for call_id in sorted(self._connected):
            await self._quiet(
                self._stub.HangUp,
                cti_pb2.HangUpRequest(idempotency_key=_key(), session_token=token, call_id=call_id),
            )
        logout = cti_pb2.LogoutRequest(idempotency_key=_key(), session_token=token)
        if not await self._quiet(self._stub.Logout, logout):
            # Most likely refused during wrap-up: end it, then try once more.
            await self._quiet(
                self._stub.EndWrapUp,
                cti_pb2.EndWrapUpRequest(
                    idempotency_key=_key(),
                    session_token=token,
                    next_state=common_pb2.AGENT_STATE_NOT_READY,
                    reason_code="logout",
                ),
            )
            if not await self._quiet(
                self._stub.Logout, cti_pb2.LogoutRequest(idempotency_key=_key(), session_token=token)
            ):
                self._stats.errors += 1
                log.warning("robot %s could not log out", self.agent_code)
                return
        self._token = None
        self._stats.logged_out += 1

    # -- events ----------------------------------------------------------------------------

    def _on_event(self, event: cti_pb2.StreamEventsResponse) -> None:
        kind = event.WhichOneof("event")
        if kind == "call_offered":
            call_id = event.call_offered.call_id
            self._purpose[call_id] = event.call_offered.purpose
            self._stats.offered += 1
            if self._policy.answer_on_phone or self._policy.auto_answer:
                return  # the phone answers, or the site does (auto-answer)
            if self._rng.random() < self._policy.no_answer_probability:
                self._stats.ignored += 1
                return
            self._answering[call_id] = self._spawn(self._answer(call_id))
        elif kind == "call_offer_withdrawn":
            task = self._answering.pop(event.call_offer_withdrawn.call_id, None)
            if task is not None:
                task.cancel()
        elif kind == "call_connected":
            call_id = event.call_connected.call_id
            self._answering.pop(call_id, None)
            self._connected.add(call_id)
            self._stats.answered += 1
            handle_s = self._handle_time()
            policy = self._policy
            if (
                not self._purpose.pop(call_id, "")
                and policy.transfer_targets
                and self._rng.random() < policy.transfer_probability
            ):
                self._talking[call_id] = self._spawn(self._transfer(call_id, handle_s))
            else:
                self._talking[call_id] = self._spawn(self._talk(call_id, handle_s))
        elif kind == "call_ended":
            call_id = event.call_ended.call_id
            self._connected.discard(call_id)
            task = self._talking.pop(call_id, None)
            # The caller hung up first: the robot stops talking. Not when the robot ended its own part
            # (its hang-up, or the caller handed over by its transfer or conference): the task is
            # finishing by itself, and on a busy loop this event can come before the request's reply,
            # where a cancel lost the transfer from the robot's counts.
            if task is not None and event.call_ended.reason not in ("agent-hung-up", "transferred"):
                task.cancel()
        elif kind == "transfer":
            queue = self._transfer_stage.get(event.transfer.call_id)
            if queue is not None:
                queue.put_nowait(event.transfer.stage)
        elif kind == "state_changed":
            self._on_state(event.state_changed.agent)
        if event.HasField("agent"):
            # The state this call event left the agent in (no state_changed of its own follows).
            self._on_state(event.agent)

    def _on_state(self, agent: cti_pb2.AgentSnapshot) -> None:
        if agent.state == common_pb2.AGENT_STATE_NOT_READY and agent.reason_code in _AUTO_READY_REASONS:
            self._spawn(self._set_ready())
        elif agent.state == common_pb2.AGENT_STATE_WRAP_UP and self._policy.wrap_up == "immediate":
            self._spawn(self._end_wrap_up())

    def _handle_time(self) -> float:
        mean = self._policy.handle_time_mean_s
        if self._policy.handle_distribution == "constant" or mean <= 0:
            return max(0.0, mean)
        return self._rng.expovariate(1.0 / mean)

    async def _answer(self, call_id: str) -> None:
        if self._policy.answer_delay_s > 0:
            await asyncio.sleep(self._policy.answer_delay_s)
        assert self._token is not None
        request = cti_pb2.AnswerRequest(idempotency_key=_key(), session_token=self._token, call_id=call_id)
        await self._quiet(self._stub.Answer, request)

    async def _talk(self, call_id: str, handle_s: float) -> None:
        await asyncio.sleep(handle_s)
        assert self._token is not None
        request = cti_pb2.HangUpRequest(idempotency_key=_key(), session_token=self._token, call_id=call_id)
        if await self._quiet(self._stub.HangUp, request):
            self._stats.hung_up += 1
            self._connected.discard(call_id)

    async def _transfer(self, call_id: str, handle_s: float) -> None:
        """Talk half the handle time, then hand the caller over as the policy says."""
        await asyncio.sleep(handle_s / 2)
        assert self._token is not None
        policy = self._policy
        skill, site = self._rng.choice(policy.transfer_targets)
        blind = policy.transfer_kind == "blind"
        stages: asyncio.Queue[str] = asyncio.Queue()
        self._transfer_stage[call_id] = stages
        self._stats.transfers_attempted += 1
        try:
            request = cti_pb2.TransferRequest(
                idempotency_key=_key(),
                session_token=self._token,
                call_id=call_id,
                kind=cti_pb2.TRANSFER_KIND_BLIND if blind else cti_pb2.TRANSFER_KIND_CONSULT,
                target=cti_pb2.TransferTarget(skill_group=skill, site_id=site),
                attached_data={"transferred_by": self.agent_code},
            )
            if not await self._quiet(self._stub.Transfer, request):
                raise _TransferFailed
            if not blind:
                await self._consulted(call_id, stages)
            self._stats.transfers_completed += 1
            self._stats.transfers_cross_site += int(bool(site))
            self._connected.discard(call_id)
        except (_TransferFailed, TimeoutError):
            # The colleague could not take it: the caller stays with this robot.
            self._stats.transfers_failed += 1
            await self._talk(call_id, handle_s / 2)
        finally:
            self._transfer_stage.pop(call_id, None)

    async def _consulted(self, call_id: str, stages: asyncio.Queue[str]) -> None:
        """Wait for the consulted colleague, then complete, or conference and leave."""
        assert self._token is not None
        while (stage := await asyncio.wait_for(stages.get(), CONSULT_WAIT_S)) != "consult-connected":
            if stage == "consult-failed":
                raise _TransferFailed
        if self._policy.transfer_kind == "conference":
            joined = cti_pb2.ConferenceRequest(
                idempotency_key=_key(), session_token=self._token, call_id=call_id
            )
            if not await self._quiet(self._stub.Conference, joined):
                raise _TransferFailed
            leave = cti_pb2.HangUpRequest(idempotency_key=_key(), session_token=self._token, call_id=call_id)
            await self._quiet(self._stub.HangUp, leave)
        else:
            done = cti_pb2.CompleteTransferRequest(
                idempotency_key=_key(), session_token=self._token, call_id=call_id
            )
            if not await self._quiet(self._stub.CompleteTransfer, done):
                raise _TransferFailed

    async def _set_ready(self) -> None:
        assert self._token is not None
        request = cti_pb2.SetStateRequest(
            idempotency_key=_key(), session_token=self._token, state=common_pb2.AGENT_STATE_READY
        )
        await self._quiet(self._stub.SetState, request)

    async def _end_wrap_up(self) -> None:
        assert self._token is not None
        request = cti_pb2.EndWrapUpRequest(
            idempotency_key=_key(), session_token=self._token, next_state=common_pb2.AGENT_STATE_READY
        )
        await self._quiet(self._stub.EndWrapUp, request)

    # -- plumbing --------------------------------------------------------------------------

    def _spawn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._answering.clear()
        self._talking.clear()

    async def _unary(self, method: Callable[..., Awaitable[R]], request: Any) -> R:
        """One unary RPC with a deadline; retried with the same idempotency key when transient."""
        # The first attempt without tenacity: building its retry state for every request was a
        # visible share of the bench client's CPU, and nearly every request succeeds at once.
        self._stats.requests += 1
        try:
            return await method(request, timeout=self._policy.rpc_deadline_s)
        except Exception as exc:
            if not _is_transient(exc):
                raise
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_is_transient),
            wait=wait_exponential(multiplier=0.05, max=0.5),
            stop=stop_after_attempt(2),
            reraise=True,
        ):
            with attempt:
                self._stats.requests += 1
                return await method(request, timeout=self._policy.rpc_deadline_s)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _quiet(self, method: Callable[..., Awaitable[Any]], request: Any) -> bool:
        """A request whose refusal is counted, not raised. True when the site accepted it."""
        try:
            await self._unary(method, request)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _RACE_CODES:
                self._stats.refused += 1
            else:
                self._stats.errors += 1
                log.warning(
                    "robot %s: %s refused: %s %s",
                    self.agent_code,
                    type(request).__name__,
                    exc.code().name,
                    exc.details(),
                )
            return False
        return True


async def run_robots(
    address: str,
    agents: Sequence[tuple[str, str]],
    policy: RobotPolicy,
    stop: asyncio.Event,
    *,
    site_id: str | None = None,
    stats: RobotStats | None = None,
) -> RobotStats:
    """Run one robot per (agent code, password) against the site at `address` until `stop` is set.

    `site_id`: the site that must answer there (its certificate checked), else the host's name.
    `stats`: counted into (a caller reading them while the robots run), else a new one."""
    stats = stats if stats is not None else RobotStats()
    # Robots are agents' desktops: they dial with the desktop persona's certificate.
    expect = site_server(site_id) if site_id else None
    async with rpc.channel(address, persona=DESKTOP, expect=expect) as channel:
        stub = cti_pb2_grpc.AgentDesktopServiceStub(channel)
        robots = [
            _Robot(stub, agent_code=code, password=password, policy=policy, stats=stats, stop=stop)
            for code, password in agents
        ]
        await asyncio.gather(*(robot.run() for robot in robots))
    return stats


async def run_robots_until(
    address: str,
    agents: Sequence[tuple[str, str]],
    policy: RobotPolicy,
    duration_s: float | None,
    *,
    logout_grace_s: float = 10.0,
) -> RobotStats:
    """Run robots for `duration_s` (None: until cancelled); either way they log out cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    timer = loop.call_later(duration_s, stop.set) if duration_s is not None else None
    task = asyncio.ensure_future(run_robots(address, agents, policy, stop))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        # Interrupted (Ctrl-C in the CLI): give the robots a bounded moment to log out.
        stop.set()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, logout_grace_s)
        raise
    finally:
        if timer is not None:
            timer.cancel()
