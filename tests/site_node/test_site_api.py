"""The site's gRPC APIs on a real server: bad input gets the right status and changes nothing;
retried requests are applied once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from site_node.app import SiteNode
from tests.helpers import eventually
from tools.province.etcd_server import EtcdServer
from tools.province.generate import DEFAULT_PASSWORD, SiteSpec, generate_province, hash_password
from tools.province.netutil import free_port
from vcc import rpc
from vcc.config import parse_province
from vcc.errors import ERROR_ID_KEY
from vcc.v1 import (
    common_pb2,
    cti_pb2,
    cti_pb2_grpc,
    site_admin_pb2,
    site_admin_pb2_grpc,
    trunk_pb2,
    trunk_pb2_grpc,
)

HASH = hash_password(DEFAULT_PASSWORD)
Code = grpc.StatusCode


@pytest.fixture
async def node(tmp_path: Path, etcd_server: EtcdServer) -> AsyncIterator[SiteNode]:
    config = generate_province(
        [SiteSpec("gz", "Guangzhou", trunk_channels=3, agents={"general": 2})],
        etcd_endpoint=etcd_server.endpoint,
        central_listen=f"127.0.0.1:{free_port()}",  # no central: records wait in the outbox
        database_url="sqlite+aiosqlite:///unused.db",
        password_hash=HASH,
        outbox_dir=tmp_path,
        ring_timeout_s=30,
    )
    site = SiteNode(parse_province(config), "gz")
    await site.start()
    yield site
    await site.stop()


@pytest.fixture
async def channel(node: SiteNode) -> AsyncIterator[grpc.aio.Channel]:
    async with rpc.channel(node.address) as ch:
        yield ch


def key() -> str:
    return uuid.uuid4().hex


async def snapshot(channel: grpc.aio.Channel) -> dict[str, object]:
    """The site's whole visible state, minus the clock."""
    stub = site_admin_pb2_grpc.SiteAdminServiceStub(channel)
    summary = (await stub.GetSiteStatus(site_admin_pb2.GetSiteStatusRequest(), timeout=5)).summary
    data = json_format.MessageToDict(summary)
    data.pop("updatedAt")
    for group in data.get("skillGroups", []):
        group.pop("longestIdleS", None)
        group.pop("oldestWaitS", None)
    return data


async def refused(call: object, code: grpc.StatusCode, *, by_transport: bool = False) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    assert err.value.code() == code, err.value.details()
    if by_transport:
        return ""
    ids = [v for k, v in (err.value.trailing_metadata() or ()) if k == ERROR_ID_KEY]
    assert ids and ids[0], "every refusal carries a stable error id"
    return str(ids[0])


async def login(stub: cti_pb2_grpc.AgentDesktopServiceStub, code: str) -> str:
    reply = await stub.Login(
        cti_pb2.LoginRequest(idempotency_key=key(), agent_code=code, password=DEFAULT_PASSWORD), timeout=10
    )
    return reply.session_token


async def test_cti_bad_input_is_refused_and_changes_nothing(
    node: SiteNode, channel: grpc.aio.Channel
) -> None:
    stub = cti_pb2_grpc.AgentDesktopServiceStub(channel)
    code = node.site.agents[0].code
    token = await login(stub, code)
    before = await snapshot(channel)

    def login_req(agent: str, password: str, k: str | None = None) -> cti_pb2.LoginRequest:
        return cti_pb2.LoginRequest(
            idempotency_key=k if k is not None else key(), agent_code=agent, password=password
        )

    assert (
        await refused(stub.Login(login_req("12", DEFAULT_PASSWORD), timeout=5), Code.INVALID_ARGUMENT)
        == "bad-agent-code"
    )
    # Six ASCII digits only: full-width digits and a trailing newline are not (as `\d` and `$` took them).
    for password in ("12ab56", "\uff11\uff12\uff13\uff14\uff15\uff16", "123456\n"):
        assert (
            await refused(stub.Login(login_req(code, password), timeout=5), Code.INVALID_ARGUMENT)
            == "bad-password-format"
        ), password
    # An unknown code and a wrong password get the same answer (no enumeration of codes).
    assert (
        await refused(stub.Login(login_req("9999", DEFAULT_PASSWORD), timeout=10), Code.UNAUTHENTICATED)
        == "bad-credentials"
    )
    other = node.site.agents[1].code
    assert (
        await refused(stub.Login(login_req(other, "000000"), timeout=10), Code.UNAUTHENTICATED)
        == "bad-credentials"
    )
    assert (
        await refused(stub.Login(login_req(code, DEFAULT_PASSWORD), timeout=10), Code.ALREADY_EXISTS)
        == "already-logged-in"
    )
    await refused(stub.Login(login_req(other, DEFAULT_PASSWORD, k=""), timeout=5), Code.INVALID_ARGUMENT)

    def state(
        s: common_pb2.AgentState.ValueType, reason: str = "", k: str | None = None, tok: str | None = None
    ) -> cti_pb2.SetStateRequest:
        return cti_pb2.SetStateRequest(
            idempotency_key=k if k is not None else key(),
            session_token=tok or token,
            state=s,
            reason_code=reason,
        )

    await refused(stub.SetState(state(common_pb2.AGENT_STATE_TALKING), timeout=5), Code.INVALID_ARGUMENT)
    await refused(stub.SetState(state(common_pb2.AGENT_STATE_NOT_READY), timeout=5), Code.INVALID_ARGUMENT)
    await refused(
        stub.SetState(state(common_pb2.AGENT_STATE_READY, k="x" * 200), timeout=5), Code.INVALID_ARGUMENT
    )
    await refused(
        stub.SetState(state(common_pb2.AGENT_STATE_READY, tok="forged"), timeout=5), Code.UNAUTHENTICATED
    )
    await refused(
        stub.Answer(
            cti_pb2.AnswerRequest(idempotency_key=key(), session_token=token, call_id="nope"), timeout=5
        ),
        Code.NOT_FOUND,
    )
    await refused(
        stub.Answer(cti_pb2.AnswerRequest(idempotency_key=key(), session_token=token, call_id=""), timeout=5),
        Code.INVALID_ARGUMENT,
    )
    await refused(
        stub.EndWrapUp(
            cti_pb2.EndWrapUpRequest(
                idempotency_key=key(), session_token=token, next_state=common_pb2.AGENT_STATE_READY
            ),
            timeout=5,
        ),
        Code.FAILED_PRECONDITION,
    )
    await refused(
        stub.SetState(state(common_pb2.AGENT_STATE_NOT_READY, reason="x" * 65), timeout=5),
        Code.INVALID_ARGUMENT,
    )
    # An oversized message is refused by the site's transport before it reaches the switchboard.
    async with grpc.aio.insecure_channel(
        node.address, options=[("grpc.max_send_message_length", 16 << 20)]
    ) as big:
        await refused(
            cti_pb2_grpc.AgentDesktopServiceStub(big).SetState(
                state(common_pb2.AGENT_STATE_NOT_READY, reason="x" * (5 << 20)), timeout=5
            ),
            Code.RESOURCE_EXHAUSTED,
            by_transport=True,
        )
    assert await snapshot(channel) == before
    agent = (await stub.GetAgent(cti_pb2.GetAgentRequest(session_token=token), timeout=5)).agent
    assert (agent.state, agent.reason_code) == (common_pb2.AGENT_STATE_NOT_READY, "login")


async def test_a_retried_request_is_applied_once(node: SiteNode, channel: grpc.aio.Channel) -> None:
    stub = cti_pb2_grpc.AgentDesktopServiceStub(channel)
    code = node.site.agents[0].code
    login_key = key()
    first = await stub.Login(
        cti_pb2.LoginRequest(idempotency_key=login_key, agent_code=code, password=DEFAULT_PASSWORD),
        timeout=10,
    )
    # The same login re-sent (its reply was lost): same session, not "already logged in".
    again = await stub.Login(
        cti_pb2.LoginRequest(idempotency_key=login_key, agent_code=code, password=DEFAULT_PASSWORD),
        timeout=10,
    )
    assert again.session_token == first.session_token
    token = first.session_token
    lunch = cti_pb2.SetStateRequest(
        idempotency_key=key(),
        session_token=token,
        state=common_pb2.AGENT_STATE_NOT_READY,
        reason_code="lunch",
    )
    await stub.SetState(lunch, timeout=5)
    ready = cti_pb2.SetStateRequest(
        idempotency_key=key(), session_token=token, state=common_pb2.AGENT_STATE_READY
    )
    await stub.SetState(ready, timeout=5)
    # A late retry of the "lunch" request must not undo the later "ready".
    replay = await stub.SetState(lunch, timeout=5)
    assert replay.agent.reason_code == "lunch"  # the first reply, replayed
    now = (await stub.GetAgent(cti_pb2.GetAgentRequest(session_token=token), timeout=5)).agent
    assert now.state == common_pb2.AGENT_STATE_READY


async def test_trunk_bad_offers_are_refused_and_change_nothing(
    node: SiteNode, channel: grpc.aio.Channel
) -> None:
    stub = trunk_pb2_grpc.TrunkIngressServiceStub(channel)
    before = await snapshot(channel)

    async def offer(**fields: object) -> grpc.aio.AioRpcError:
        values: dict[str, object] = {"idempotency_key": key(), "ani": "13800000001", "dnis": "10000"}
        values.update(fields)
        call = stub.PlaceCall(
            iter([trunk_pb2.PlaceCallRequest(offer=trunk_pb2.CallOffer(**values))]), timeout=5
        )  # type: ignore[arg-type]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in call:
                pass
        return err.value

    assert (await offer(ani="")).code() == Code.INVALID_ARGUMENT
    assert (await offer(ani="138-0000")).code() == Code.INVALID_ARGUMENT
    assert (await offer(dnis="95555")).code() == Code.INVALID_ARGUMENT
    assert (await offer(idempotency_key="")).code() == Code.INVALID_ARGUMENT
    assert (await offer(trunk_group="nope")).code() == Code.NOT_FOUND
    assert (await offer(attached_data={f"k{i}": "v" for i in range(100)})).code() == Code.INVALID_ARGUMENT
    digits_first = stub.PlaceCall(
        iter([trunk_pb2.PlaceCallRequest(digits=trunk_pb2.CallerDigits(digits="1"))]), timeout=5
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in digits_first:
            pass
    assert err.value.code() == Code.INVALID_ARGUMENT
    assert await snapshot(channel) == before


async def test_a_re_sent_offer_of_a_live_call_is_refused(node: SiteNode, channel: grpc.aio.Channel) -> None:
    stub = trunk_pb2_grpc.TrunkIngressServiceStub(channel)
    offer = trunk_pb2.PlaceCallRequest(
        offer=trunk_pb2.CallOffer(idempotency_key=key(), ani="13800000001", dnis="10000")
    )
    first = stub.PlaceCall(timeout=30)
    await first.write(offer)
    accepted = await first.read()
    assert accepted.WhichOneof("progress") == "accepted"
    # The same key on a new stream while the call is live: refused, the call is not offered twice
    # and its caller (the first stream) keeps it (issue 11: a re-sent key took the caller over).
    second = stub.PlaceCall(timeout=30)
    await second.write(offer)
    with pytest.raises(grpc.aio.AioRpcError) as refused_:
        await second.read()
    assert refused_.value.code() == Code.ALREADY_EXISTS
    assert (await snapshot(channel))["callsOffered"] == "1"
    assert accepted.call_id in node.switchboard.calls
    # The live caller still drives its call: hanging up on the first stream ends it once.
    await first.write(trunk_pb2.PlaceCallRequest(hang_up=trunk_pb2.CallerHangUp()))

    async def ended() -> bool:
        msg = await first.read()
        return msg is not grpc.aio.EOF and msg.WhichOneof("progress") == "ended"

    assert await eventually(ended)
    # And once it ended, the same key tells how it ended instead of making a call.
    third = stub.PlaceCall(iter([offer]), timeout=5)
    replies = [m async for m in third]
    assert [m.WhichOneof("progress") for m in replies] == ["ended"]
    assert replies[0].call_id == accepted.call_id
    summary = await snapshot(channel)
    assert summary["callsOffered"] == "1" and summary["callsAbandoned"] == "1"
