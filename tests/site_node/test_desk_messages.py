"""Fewer messages per call on the desktop's stream, on a real site: an agent's state rides in the
call event that changed it (no state_changed of its own), and an agent logged in with
auto-answer is connected by the site without an Answer request. A site configured with
`desk_states_in_call_events: false` gives the separate state_changed events back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from site_node.app import SiteNode
from tools.province.etcd_server import EtcdServer
from tools.province.generate import DEFAULT_PASSWORD, SiteSpec, generate_province, hash_password
from tools.province.netutil import free_port
from vcc import rpc
from vcc.config import parse_province
from vcc.v1 import common_pb2, cti_pb2, cti_pb2_grpc, trunk_pb2, trunk_pb2_grpc

HASH = hash_password(DEFAULT_PASSWORD)
S = common_pb2
WAIT_S = 10.0
pytestmark = pytest.mark.asyncio(loop_scope="module")


def key() -> str:
    return uuid.uuid4().hex


async def _node(tmp_path: Path, etcd_server: EtcdServer, *, states_in_call_events: bool) -> SiteNode:
    config = generate_province(
        [SiteSpec("gz", "Guangzhou", trunk_channels=3, agents={"general": 2})],
        etcd_endpoint=etcd_server.endpoint,
        central_listen=f"127.0.0.1:{free_port()}",  # no central: records wait in the outbox
        database_url="sqlite+aiosqlite:///unused.db",
        password_hash=HASH,
        outbox_dir=tmp_path,
        ring_timeout_s=30,
    )
    config["sites"][0]["desk_states_in_call_events"] = states_in_call_events
    site = SiteNode(parse_province(config), "gz")
    await site.start()
    return site


# One site per way of streaming, shared by the module's tests (each uses its own agent).
@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["folded", "separate"])
async def node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, etcd_server: EtcdServer
) -> AsyncIterator[SiteNode]:
    site = await _node(
        tmp_path_factory.mktemp("desk-messages"), etcd_server, states_in_call_events=request.param == "folded"
    )
    assert site.runtime.fold_states is (request.param == "folded")
    yield site
    await site.stop()


class Desk:
    """One agent's desktop: its session and every event of its stream, in order."""

    def __init__(self, stub: cti_pb2_grpc.AgentDesktopServiceAsyncStub, token: str, *, batched: bool) -> None:
        self.stub, self.token = stub, token
        self.events: asyncio.Queue[cti_pb2.StreamEventsResponse] = asyncio.Queue()
        self.seen: list[cti_pb2.StreamEventsResponse] = []
        self.batched = batched
        # The gRPC messages themselves (a batch is one).
        self.messages: list[cti_pb2.StreamEventsResponse] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        request = cti_pb2.StreamEventsRequest(session_token=self.token, batched=self.batched)
        async for message in self.stub.StreamEvents(request):
            self.messages.append(message)
            for event in (message, *message.then):
                assert not event.then or event is message  # a batch is never nested
                self.seen.append(event)
                self.events.put_nowait(event)

    async def next(self, kind: str) -> cti_pb2.StreamEventsResponse:
        async with asyncio.timeout(WAIT_S):
            while (event := await self.events.get()).WhichOneof("event") != kind:
                pass
        return event

    def kinds(self) -> list[str]:
        return [str(e.WhichOneof("event")) for e in self.seen]

    async def close(self) -> None:
        """Logged out (the module's next test finds only its own agent ready), stream closed."""
        await self.stub.Logout(
            cti_pb2.LogoutRequest(idempotency_key=key(), session_token=self.token), timeout=5
        )
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


async def _desk(channel: grpc.aio.Channel, code: str, *, auto_answer: bool, batched: bool = False) -> Desk:
    stub = cti_pb2_grpc.AgentDesktopServiceStub(channel)
    login = cti_pb2.LoginRequest(
        idempotency_key=key(), agent_code=code, password=DEFAULT_PASSWORD, auto_answer=auto_answer
    )
    token = (await stub.Login(login, timeout=5)).session_token
    desk = Desk(stub, token, batched=batched)
    await desk.next("state_changed")  # the stream is open: nothing after is missed
    ready = cti_pb2.SetStateRequest(idempotency_key=key(), session_token=token, state=S.AGENT_STATE_READY)
    await stub.SetState(ready, timeout=5)
    await desk.next("state_changed")
    return desk


async def _call_to_ringing(channel: grpc.aio.Channel, *, batched: bool = False) -> Any:
    stub = trunk_pb2_grpc.TrunkIngressServiceStub(channel)
    call = stub.PlaceCall(timeout=30)
    await call.write(
        trunk_pb2.PlaceCallRequest(
            offer=trunk_pb2.CallOffer(idempotency_key=key(), ani="13800000001", dnis="10000", batched=batched)
        )
    )
    return call


async def _progress_until(call: object, kind: str) -> list[trunk_pb2.PlaceCallResponse]:
    seen: list[trunk_pb2.PlaceCallResponse] = []
    async with asyncio.timeout(WAIT_S):
        while True:
            msg = await call.read()  # type: ignore[attr-defined]
            assert msg is not grpc.aio.EOF, [m.WhichOneof("progress") for m in seen]
            seen.append(msg)
            which = msg.WhichOneof("progress")
            if which == "prompt" and msg.prompt.choices:
                await call.write(  # type: ignore[attr-defined]
                    trunk_pb2.PlaceCallRequest(digits=trunk_pb2.CallerDigits(digits=msg.prompt.choices[0]))
                )
            if which == kind:
                return seen


async def test_a_call_on_an_auto_answer_desk_costs_no_answer_and_no_separate_states(node: SiteNode) -> None:
    folded = node.runtime.fold_states
    async with rpc.channel(node.address) as channel:
        code = node.site.agents[0].code
        desk = await _desk(channel, code, auto_answer=True)
        before = len(desk.seen)
        call = await _call_to_ringing(channel)
        # No Answer sent: the site connects the caller to the auto-answer agent itself.
        progress = await _progress_until(call, "connected")
        assert [m.WhichOneof("progress") for m in progress][-2:] == ["ringing", "connected"]
        offered = await desk.next("call_offered")
        connected = await desk.next("call_connected")
        stub = cti_pb2_grpc.AgentDesktopServiceStub(channel)
        hang_up = cti_pb2.HangUpRequest(
            idempotency_key=key(), session_token=desk.token, call_id=offered.call_offered.call_id
        )
        await stub.HangUp(hang_up, timeout=5)
        ended = await desk.next("call_ended")
        assert (await _progress_until(call, "ended"))[-1].ended.outcome == S.CALL_OUTCOME_ANSWERED
        now = (await stub.GetAgent(cti_pb2.GetAgentRequest(session_token=desk.token), timeout=5)).agent
        await asyncio.sleep(0.2)  # a state_changed that should not come has its chance to
        kinds = desk.kinds()[before:]
        if folded:
            # Each call event carries the state it left the agent in; none of its own follows.
            assert kinds == ["call_offered", "call_connected", "call_ended"], kinds
            assert offered.agent.state == S.AGENT_STATE_RINGING
            assert connected.agent.state == S.AGENT_STATE_TALKING
            assert ended.agent.state == now.state and ended.agent.call_id == now.call_id
        else:
            assert "state_changed" in kinds and kinds.count("call_offered") == 1, kinds
            assert not any(e.HasField("agent") for e in desk.seen)
            last_state = [e for e in desk.seen if e.WhichOneof("event") == "state_changed"][-1]
            assert last_state.state_changed.agent.state == now.state
        await desk.close()


async def test_without_auto_answer_the_call_rings_until_the_desk_answers(node: SiteNode) -> None:
    async with rpc.channel(node.address) as channel:
        code = node.site.agents[1].code
        desk = await _desk(channel, code, auto_answer=False)
        call = await _call_to_ringing(channel)
        await _progress_until(call, "ringing")
        offered = await desk.next("call_offered")
        await asyncio.sleep(0.3)
        stub = cti_pb2_grpc.AgentDesktopServiceStub(channel)
        agent = (await stub.GetAgent(cti_pb2.GetAgentRequest(session_token=desk.token), timeout=5)).agent
        assert agent.state == S.AGENT_STATE_RINGING  # nobody answered for it
        call_id = offered.call_offered.call_id
        await stub.Answer(
            cti_pb2.AnswerRequest(idempotency_key=key(), session_token=desk.token, call_id=call_id), timeout=5
        )
        await _progress_until(call, "connected")
        await call.write(trunk_pb2.PlaceCallRequest(hang_up=trunk_pb2.CallerHangUp()))
        await _progress_until(call, "ended")
        await desk.close()


async def test_batched_streams_carry_a_step_and_what_followed_at_once_in_one_message(node: SiteNode) -> None:
    async with rpc.channel(node.address) as channel:
        code = node.site.agents[0].code
        desk = await _desk(channel, code, auto_answer=True, batched=True)
        before = (len(desk.messages), len(desk.seen))
        call = await _call_to_ringing(channel, batched=True)
        messages: list[trunk_pb2.PlaceCallResponse] = []
        steps: list[str] = []
        async with asyncio.timeout(WAIT_S):
            while "ended" not in steps:
                msg = await call.read()
                assert msg is not grpc.aio.EOF, steps
                messages.append(msg)
                for step in (msg, *msg.then):
                    assert not step.then or step is msg  # a batch is never nested
                    kind = str(step.WhichOneof("progress"))
                    steps.append(kind)
                    if kind == "prompt" and step.prompt.choices:
                        digit = trunk_pb2.CallerDigits(digits=step.prompt.choices[0])
                        await call.write(trunk_pb2.PlaceCallRequest(digits=digit))
                    if kind == "connected":
                        stub = cti_pb2_grpc.AgentDesktopServiceStub(channel)
                        hang_up = cti_pb2.HangUpRequest(
                            idempotency_key=key(), session_token=desk.token, call_id=step.call_id
                        )
                        await stub.HangUp(hang_up, timeout=5)
        # Every step, in order, as an unbatched caller hears them ...
        assert steps == ["accepted", "prompt", "queued", "ringing", "connected", "ended"], steps
        # ... in fewer messages: the acceptance with its prompt, the queueing with the ring and
        # the auto-answer; the end in one of its own (sent once its records are durable).
        assert [m.WhichOneof("progress") for m in messages] == ["accepted", "queued", "ended"]
        assert [len(m.then) for m in messages] == [1, 2, 0]
        assert len({m.call_id for m in messages} | {t.call_id for m in messages for t in m.then}) == 1
        await desk.next("call_ended")
        await asyncio.sleep(0.2)
        events = [str(e.WhichOneof("event")) for e in desk.seen[before[1] :]]
        calls = [e for e in events if e != "state_changed"]
        assert calls == ["call_offered", "call_connected", "call_ended"], events
        # The offer and its auto-answer reached the desk in one message.
        batch = next(m for m in desk.messages[before[0] :] if "call_offered" in _events(m))
        assert "call_connected" in _events(batch), _events(batch)
        await desk.close()


def _events(message: cti_pb2.StreamEventsResponse) -> list[str]:
    return [str(e.WhichOneof("event")) for e in (message, *message.then)]
