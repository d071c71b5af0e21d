"""A fake site node at the transport boundary: a real grpc.aio server on 127.0.0.1:0 serving
TrunkIngressService and AgentDesktopService per the site contract, with a tiny FIFO ACD.

Only for unit tests of the robots, the caller generator and the report; the real site node
is tested elsewhere. It keeps, per call, the events central would hold, so tests can reconcile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from vcc import errors, rpc
from vcc.v1 import central_pb2, common_pb2, cti_pb2, cti_pb2_grpc, trunk_pb2, trunk_pb2_grpc

_EOF = object()


@dataclass
class FakeCall:
    call_id: str
    ani: str
    out: asyncio.Queue[trunk_pb2.PlaceCallResponse | None] = field(default_factory=asyncio.Queue)
    state: str = "queued"  # queued | ringing | talking | ended
    agent: FakeAgent | None = None
    outcome: common_pb2.CallOutcome.ValueType = common_pb2.CALL_OUTCOME_UNSPECIFIED
    rung: list[str] = field(default_factory=list)
    digits: list[str] = field(default_factory=list)
    events: list[common_pb2.CallEvent] = field(default_factory=list)
    ring_timer: asyncio.TimerHandle | None = None


@dataclass
class FakeAgent:
    code: str
    password: str
    token: str = ""
    state: common_pb2.AgentState.ValueType = common_pb2.AGENT_STATE_LOGGED_OUT
    reason: str = ""
    call: FakeCall | None = None
    streaming: bool = False
    events: asyncio.Queue[cti_pb2.StreamEventsResponse | None] = field(default_factory=asyncio.Queue)
    logins: int = 0
    end_wrap_ups: int = 0
    ready_after_no_answer: int = 0


class FakeSite(trunk_pb2_grpc.TrunkIngressServiceServicer, cti_pb2_grpc.AgentDesktopServiceServicer):
    def __init__(
        self,
        site_id: str = "gz",
        agents: dict[str, str] | None = None,
        *,
        trunk_channels: int = 100,
        ring_timeout_s: float = 0.2,
        wrap_up_s: float = 0.0,
        prompt_choices: tuple[str, ...] = ("1", "2"),
    ) -> None:
        self.site_id = site_id
        self.agents = {code: FakeAgent(code, pw) for code, pw in (agents or {}).items()}
        self.trunk_channels = trunk_channels
        self.ring_timeout_s = ring_timeout_s
        self.wrap_up_s = wrap_up_s
        self.prompt_choices = prompt_choices
        self.calls: dict[str, FakeCall] = {}
        # Races made deterministic: the caller hangs up just before the agent's request lands.
        self.caller_hangs_up_on_answer = False
        self.caller_hangs_up_on_agent_hang_up = False
        # A transfer's reply held back this long after the agent was told its part ended.
        self.reply_after_transfer_ended_s = 0.0
        self.completed_transfers: list[str] = []
        # A slow site: the caller's first messages (accepted, the menu) wait this long.
        self.accept_delay_s = 0.0
        self.waiting: deque[FakeCall] = deque()
        # Trunk links (Signalling streams) opened.
        self.links = 0
        self.server: grpc.aio.Server | None = None
        self.address = ""

    # -- server ------------------------------------------------------------------------------

    async def start(self, port: int = 0) -> str:
        self.server = grpc.aio.server()
        trunk_pb2_grpc.add_TrunkIngressServiceServicer_to_server(self, self.server)
        cti_pb2_grpc.add_AgentDesktopServiceServicer_to_server(self, self.server)
        bound = self.server.add_insecure_port(f"127.0.0.1:{port}")
        await self.server.start()
        self.address = f"127.0.0.1:{bound}"
        return self.address

    async def kill(self) -> None:
        """Stop at once, like SIGKILL: every stream breaks without a goodbye."""
        assert self.server is not None
        await self.server.stop(0)

    # -- call helpers --------------------------------------------------------------------------

    def _event(self, call: FakeCall, kind: common_pb2.CallEventKind.ValueType, **kwargs: Any) -> None:
        call.events.append(
            common_pb2.CallEvent(
                call_id=call.call_id,
                site_id=self.site_id,
                seq=len(call.events) + 1,
                kind=kind,
                at=rpc.timestamp(time.time()),
                **kwargs,
            )
        )

    def _tell_caller(self, call: FakeCall, **progress: Any) -> None:
        call.out.put_nowait(
            trunk_pb2.PlaceCallResponse(call_id=call.call_id, at=rpc.timestamp(time.time()), **progress)
        )

    def _tell_agent(self, agent: FakeAgent, **event: Any) -> None:
        agent.events.put_nowait(cti_pb2.StreamEventsResponse(at=rpc.timestamp(time.time()), **event))

    def _set_agent_state(
        self, agent: FakeAgent, state: common_pb2.AgentState.ValueType, reason: str = ""
    ) -> None:
        agent.state, agent.reason = state, reason
        self._tell_agent(agent, state_changed=cti_pb2.AgentStateChanged(agent=self._snapshot(agent)))

    def _snapshot(self, agent: FakeAgent) -> cti_pb2.AgentSnapshot:
        return cti_pb2.AgentSnapshot(
            agent_code=agent.code,
            site_id=self.site_id,
            state=agent.state,
            reason_code=agent.reason,
            call_id=agent.call.call_id if agent.call else "",
        )

    def new_call(self, ani: str = "13800000001") -> FakeCall:
        call = FakeCall(call_id=uuid.uuid4().hex, ani=ani)
        self.calls[call.call_id] = call
        self._event(call, common_pb2.CALL_EVENT_KIND_ARRIVED, ani=ani, dnis="10000")
        return call

    def enqueue(self, call: FakeCall, *, front: bool = False) -> None:
        call.state = "queued"
        if front:
            self.waiting.appendleft(call)
        else:
            self.waiting.append(call)
        self._dispatch()

    def _dispatch(self) -> None:
        while self.waiting:
            agent = next(
                (a for a in self.agents.values() if a.state == common_pb2.AGENT_STATE_READY and a.streaming),
                None,
            )
            if agent is None:
                return
            call = self.waiting.popleft()
            call.state, call.agent = "ringing", agent
            call.rung.append(agent.code)
            agent.call = call
            self._set_agent_state(agent, common_pb2.AGENT_STATE_RINGING)
            self._tell_agent(agent, call_offered=cti_pb2.CallOffered(call_id=call.call_id, ani=call.ani))
            self._event(call, common_pb2.CALL_EVENT_KIND_RINGING, agent_code=agent.code)
            self._tell_caller(
                call, ringing=trunk_pb2.CallRinging(site_id=self.site_id, agent_code=agent.code)
            )
            call.ring_timer = asyncio.get_running_loop().call_later(
                self.ring_timeout_s, self._ring_timeout, call
            )

    def _ring_timeout(self, call: FakeCall) -> None:
        agent = call.agent
        if call.state != "ringing" or agent is None:
            return
        agent.call, call.agent = None, None
        self._tell_agent(agent, call_offer_withdrawn=cti_pb2.CallOfferWithdrawn(call_id=call.call_id))
        self._set_agent_state(agent, common_pb2.AGENT_STATE_NOT_READY, "no-answer")
        self._event(call, common_pb2.CALL_EVENT_KIND_RING_NO_ANSWER, agent_code=agent.code)
        self.enqueue(call, front=True)

    def _end(self, call: FakeCall, outcome: common_pb2.CallOutcome.ValueType, reason: str) -> None:
        call.state, call.outcome = "ended", outcome
        self._event(call, common_pb2.CALL_EVENT_KIND_ENDED, outcome=outcome)
        self._tell_caller(call, ended=trunk_pb2.CallEnded(outcome=outcome, reason=reason))
        call.out.put_nowait(None)

    def caller_hangs_up(self, call: FakeCall) -> None:
        if call.state == "ended":
            return
        agent = call.agent
        if call.ring_timer is not None:
            call.ring_timer.cancel()
        if call.state == "queued":
            with contextlib.suppress(ValueError):
                self.waiting.remove(call)
            self._end(call, common_pb2.CALL_OUTCOME_ABANDONED, "caller-hung-up")
        elif call.state == "ringing" and agent is not None:
            agent.call = None
            self._tell_agent(agent, call_offer_withdrawn=cti_pb2.CallOfferWithdrawn(call_id=call.call_id))
            self._set_agent_state(agent, common_pb2.AGENT_STATE_READY)
            self._end(call, common_pb2.CALL_OUTCOME_ABANDONED, "caller-hung-up")
        elif call.state == "talking" and agent is not None:
            self._end(call, common_pb2.CALL_OUTCOME_ANSWERED, "caller-hung-up")
            self._agent_call_ended(agent, call, "caller-hung-up")
        self._dispatch()

    def _agent_call_ended(self, agent: FakeAgent, call: FakeCall, reason: str) -> None:
        self._tell_agent(
            agent,
            call_ended=cti_pb2.AgentCallEnded(call_id=call.call_id, reason=reason, wrap_up_s=self.wrap_up_s),
        )
        self._set_agent_state(agent, common_pb2.AGENT_STATE_WRAP_UP)
        if self.wrap_up_s >= 0:
            asyncio.get_running_loop().call_later(self.wrap_up_s, self._wrap_up_over, agent, call)

    def _wrap_up_over(self, agent: FakeAgent, call: FakeCall) -> None:
        if agent.state == common_pb2.AGENT_STATE_WRAP_UP and agent.call is call:
            agent.call = None
            self._set_agent_state(agent, common_pb2.AGENT_STATE_READY)
            self._dispatch()

    def records(self) -> list[central_pb2.CallRecord]:
        """What central would hold for these calls."""
        out = []
        for call in self.calls.values():
            answered = [e for e in call.events if e.kind == common_pb2.CALL_EVENT_KIND_ANSWERED]
            out.append(
                central_pb2.CallRecord(
                    call_id=call.call_id,
                    entry_site_id=self.site_id,
                    state=common_pb2.CALL_STATE_ENDED
                    if call.state == "ended"
                    else common_pb2.CALL_STATE_QUEUED,
                    outcome=call.outcome,
                    served_site_id=self.site_id if answered else "",
                    agent_code=answered[-1].agent_code if answered else "",
                    events=call.events,
                )
            )
        return out

    # -- TrunkIngressService -----------------------------------------------------------------

    async def PlaceCall(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[trunk_pb2.PlaceCallResponse]:
        requests = request_iterator.__aiter__()
        first = await requests.__anext__()
        active = sum(1 for c in self.calls.values() if c.state != "ended")
        call = self.new_call(first.offer.ani)
        if active >= self.trunk_channels:
            call.state, call.outcome = "ended", common_pb2.CALL_OUTCOME_BLOCKED
            self._event(call, common_pb2.CALL_EVENT_KIND_BLOCKED)
            self._event(call, common_pb2.CALL_EVENT_KIND_ENDED, outcome=common_pb2.CALL_OUTCOME_BLOCKED)
            yield trunk_pb2.PlaceCallResponse(
                call_id=call.call_id,
                ended=trunk_pb2.CallEnded(outcome=common_pb2.CALL_OUTCOME_BLOCKED, reason="no-trunk-channel"),
            )
            return
        if self.accept_delay_s:
            # The slow site's pace (not a wait in a test): what the caller sends meanwhile is read
            # only after the menu has been sent, as by a site whose loop is behind.
            await asyncio.sleep(self.accept_delay_s)
        self._tell_caller(call, accepted=trunk_pb2.CallAccepted(site_id=self.site_id, trunk_group="pstn"))
        if self.prompt_choices:
            self._tell_caller(call, prompt=trunk_pb2.IvrPrompt(choices=self.prompt_choices, timeout_s=5.0))
        reader = asyncio.create_task(self._read_caller(call, requests))
        try:
            while True:
                response = await call.out.get()
                if response is None:
                    return
                yield response
        finally:
            reader.cancel()
            # The stream went away (cancelled by the caller): that is a hang-up.
            self.caller_hangs_up(call)

    async def Signalling(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[trunk_pb2.SignallingResponse]:
        self.links += 1
        link = link_over_place_call(self.PlaceCall, request_iterator, context)
        async with contextlib.aclosing(link) as messages:
            async for message in messages:
                yield message

    async def _read_caller(self, call: FakeCall, requests: Any) -> None:
        try:
            async for request in requests:
                action = request.WhichOneof("action")
                if action == "digits" and call.state == "queued" and not call.digits:
                    call.digits.append(request.digits.digits)
                    self._event(
                        call, common_pb2.CALL_EVENT_KIND_DIGITS, data={"digits": request.digits.digits}
                    )
                    self._tell_caller(call, queued=trunk_pb2.CallQueued(skill_group="general", position=1))
                    self._event(call, common_pb2.CALL_EVENT_KIND_QUEUED, skill_group="general")
                    self.enqueue(call)
                elif action == "hang_up":
                    self.caller_hangs_up(call)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass

    # -- AgentDesktopService -------------------------------------------------------------------

    def _by_token(self, token: str) -> FakeAgent:
        for agent in self.agents.values():
            if agent.token and agent.token == token:
                return agent
        raise errors.Unauthenticated("unknown-session", "unknown session")

    @rpc.maps_errors
    async def Login(self, request: cti_pb2.LoginRequest, context: Any) -> cti_pb2.LoginResponse:
        agent = self.agents.get(request.agent_code)
        if agent is None:
            raise errors.NotFound("agent-not-found", "no such agent")
        if agent.password != request.password:
            raise errors.Unauthenticated("wrong-password", "wrong password")
        if agent.token:
            raise errors.AlreadyExists("already-logged-in", "already logged in")
        agent.token, agent.logins = uuid.uuid4().hex, agent.logins + 1
        agent.state, agent.reason = common_pb2.AGENT_STATE_NOT_READY, "login"
        agent.events = asyncio.Queue()
        return cti_pb2.LoginResponse(session_token=agent.token, agent=self._snapshot(agent))

    @rpc.maps_errors
    async def Logout(self, request: cti_pb2.LogoutRequest, context: Any) -> cti_pb2.LogoutResponse:
        agent = self._by_token(request.session_token)
        if agent.call is not None:
            raise errors.FailedPrecondition("agent-busy", "on a call")
        agent.token, agent.streaming = "", False
        agent.state, agent.reason = common_pb2.AGENT_STATE_LOGGED_OUT, ""
        agent.events.put_nowait(None)
        return cti_pb2.LogoutResponse()

    @rpc.maps_errors
    async def SetState(self, request: cti_pb2.SetStateRequest, context: Any) -> cti_pb2.SetStateResponse:
        agent = self._by_token(request.session_token)
        if agent.state not in (common_pb2.AGENT_STATE_READY, common_pb2.AGENT_STATE_NOT_READY):
            raise errors.FailedPrecondition("agent-busy", "on a call")
        if agent.state == common_pb2.AGENT_STATE_NOT_READY and agent.reason == "no-answer":
            agent.ready_after_no_answer += request.state == common_pb2.AGENT_STATE_READY
        self._set_agent_state(agent, request.state, request.reason_code)
        self._dispatch()
        return cti_pb2.SetStateResponse(agent=self._snapshot(agent))

    @rpc.maps_errors
    async def Answer(self, request: cti_pb2.AnswerRequest, context: Any) -> cti_pb2.AnswerResponse:
        agent = self._by_token(request.session_token)
        call = agent.call
        if call is not None and self.caller_hangs_up_on_answer:
            self.caller_hangs_up(call)
        if call is None or call.call_id != request.call_id or call.state != "ringing":
            raise errors.FailedPrecondition("not-ringing", "no such ringing call")
        if call.ring_timer is not None:
            call.ring_timer.cancel()
        call.state = "talking"
        self._event(call, common_pb2.CALL_EVENT_KIND_ANSWERED, agent_code=agent.code)
        self._tell_caller(
            call, connected=trunk_pb2.CallConnected(site_id=self.site_id, agent_code=agent.code)
        )
        self._tell_agent(agent, call_connected=cti_pb2.AgentCallConnected(call_id=call.call_id))
        self._set_agent_state(agent, common_pb2.AGENT_STATE_TALKING)
        return cti_pb2.AnswerResponse()

    @rpc.maps_errors
    async def HangUp(self, request: cti_pb2.HangUpRequest, context: Any) -> cti_pb2.HangUpResponse:
        agent = self._by_token(request.session_token)
        call = self.calls.get(request.call_id)
        if call is None:
            raise errors.NotFound("call-not-found", "no such call")
        if self.caller_hangs_up_on_agent_hang_up:
            self.caller_hangs_up(call)
        if agent.call is not call or call.state != "talking":
            raise errors.FailedPrecondition("not-talking", "not talking on this call")
        self._event(call, common_pb2.CALL_EVENT_KIND_AGENT_HUNG_UP, agent_code=agent.code)
        self._end(call, common_pb2.CALL_OUTCOME_ANSWERED, "agent-hung-up")
        self._agent_call_ended(agent, call, "agent-hung-up")
        return cti_pb2.HangUpResponse()

    @rpc.maps_errors
    async def Transfer(self, request: cti_pb2.TransferRequest, context: Any) -> cti_pb2.TransferResponse:
        """A consultation whose colleague answers at once (transfers are the real site's tests';
        this one only gives the robots the stages they wait for)."""
        agent = self._by_token(request.session_token)
        if agent.call is None or agent.call.call_id != request.call_id:
            raise errors.FailedPrecondition("not-talking", "not talking on this call")
        self._tell_agent(
            agent, transfer=cti_pb2.TransferProgress(call_id=request.call_id, stage="consult-connected")
        )
        return cti_pb2.TransferResponse()

    @rpc.maps_errors
    async def CompleteTransfer(
        self, request: cti_pb2.CompleteTransferRequest, context: Any
    ) -> cti_pb2.CompleteTransferResponse:
        agent = self._by_token(request.session_token)
        call = agent.call
        if call is None or call.call_id != request.call_id:
            raise errors.FailedPrecondition("not-talking", "not talking on this call")
        self._agent_call_ended(agent, call, "transferred")
        if self.reply_after_transfer_ended_s:
            # As a busy site can: the agent's stream tells the call ended before this reply arrives.
            await asyncio.sleep(self.reply_after_transfer_ended_s)
        self.completed_transfers.append(call.call_id)
        return cti_pb2.CompleteTransferResponse()

    @rpc.maps_errors
    async def EndWrapUp(self, request: cti_pb2.EndWrapUpRequest, context: Any) -> cti_pb2.EndWrapUpResponse:
        agent = self._by_token(request.session_token)
        if agent.state != common_pb2.AGENT_STATE_WRAP_UP:
            raise errors.FailedPrecondition("not-in-wrap-up", "not in wrap-up")
        agent.end_wrap_ups += 1
        agent.call = None
        self._set_agent_state(agent, request.next_state, request.reason_code)
        self._dispatch()
        return cti_pb2.EndWrapUpResponse(agent=self._snapshot(agent))

    @rpc.maps_errors
    async def GetAgent(self, request: cti_pb2.GetAgentRequest, context: Any) -> cti_pb2.GetAgentResponse:
        return cti_pb2.GetAgentResponse(agent=self._snapshot(self._by_token(request.session_token)))

    @rpc.maps_errors
    async def Hold(self, request: cti_pb2.HoldRequest, context: Any) -> cti_pb2.HoldResponse:
        raise errors.FailedPrecondition("not-supported", "the fake site has no hold")

    @rpc.maps_errors
    async def Retrieve(self, request: cti_pb2.RetrieveRequest, context: Any) -> cti_pb2.RetrieveResponse:
        raise errors.FailedPrecondition("not-supported", "the fake site has no hold")

    @rpc.maps_stream_errors
    async def StreamEvents(
        self, request: cti_pb2.StreamEventsRequest, context: Any
    ) -> AsyncIterator[cti_pb2.StreamEventsResponse]:
        agent = self._by_token(request.session_token)
        events = agent.events
        agent.streaming = True
        try:
            yield cti_pb2.StreamEventsResponse(
                at=rpc.timestamp(time.time()),
                state_changed=cti_pb2.AgentStateChanged(agent=self._snapshot(agent)),
            )
            while True:
                event = await events.get()
                if event is None:
                    return
                yield event
        finally:
            agent.streaming = False


async def link_over_place_call(
    place_call: Any, request_iterator: Any, context: Any
) -> AsyncGenerator[trunk_pb2.SignallingResponse]:
    """A trunk link (Signalling) served by a PlaceCall handler: each call reference's signals are a
    PlaceCall stream of its own inside, its progress tagged back, every report ready at one moment
    in one message. The link's end is every caller on it hanging up (their streams cancelled)."""
    out: asyncio.Queue[trunk_pb2.CallReport | None] = asyncio.Queue()
    calls: dict[str, asyncio.Queue[trunk_pb2.PlaceCallRequest | None]] = {}
    tasks: set[asyncio.Task[None]] = set()
    reading = True

    async def one_call(ref: str, inbox: asyncio.Queue[trunk_pb2.PlaceCallRequest | None]) -> None:
        async def requests() -> AsyncIterator[trunk_pb2.PlaceCallRequest]:
            while (request := await inbox.get()) is not None:
                yield request

        try:
            async for response in place_call(requests(), context):
                out.put_nowait(trunk_pb2.CallReport(call_ref=ref, progress=response))
        finally:
            calls.pop(ref, None)
            out.put_nowait(None)

    async def pump() -> None:
        try:
            async for message in request_iterator:
                for signal in message.signals:
                    kind = signal.WhichOneof("action")
                    inbox = calls.get(signal.call_ref)
                    if kind == "offer" and inbox is None:
                        inbox = calls[signal.call_ref] = asyncio.Queue()
                        task = asyncio.create_task(one_call(signal.call_ref, inbox))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    if inbox is not None and kind is not None:
                        inbox.put_nowait(trunk_pb2.PlaceCallRequest(**{kind: getattr(signal, kind)}))
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass
        finally:
            nonlocal reading
            reading = False
            out.put_nowait(None)

    pumping = asyncio.create_task(pump())
    try:
        while True:
            first = await out.get()
            batch = [first] if first is not None else []
            while not out.empty():
                item = out.get_nowait()
                if item is not None:
                    batch.append(item)
            if batch:
                yield trunk_pb2.SignallingResponse(reports=batch)
            if not reading and not calls:
                return
    finally:
        pumping.cancel()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(pumping, *tasks, return_exceptions=True)
