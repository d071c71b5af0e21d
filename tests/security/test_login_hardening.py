"""The desktop login as an attacker sees it: nothing to learn, nothing to replay, bounded guesses."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from site_node.app import SiteNode
from tests.helpers import eventually
from tests.security.conftest import Certs
from tools.province.etcd_server import EtcdServer
from tools.province.generate import DEFAULT_PASSWORD, SiteSpec, generate_province, hash_password
from tools.province.netutil import free_port
from vcc import rpc
from vcc.config import parse_province
from vcc.errors import ERROR_ID_KEY
from vcc.login_guard import LoginPolicy
from vcc.v1 import common_pb2, cti_pb2, cti_pb2_grpc

Code = grpc.StatusCode
HASH = hash_password(DEFAULT_PASSWORD)
WRONG = "000000"


@pytest.fixture
async def node(tmp_path: Path, etcd_server: EtcdServer, certs: Certs) -> AsyncIterator[SiteNode]:
    config = generate_province(
        [SiteSpec("gz", "Guangzhou", trunk_channels=2, agents={"general": 2})],
        etcd_endpoint=etcd_server.endpoint,
        central_listen=f"127.0.0.1:{free_port()}",
        database_url="sqlite+aiosqlite:///unused.db",
        password_hash=HASH,
        outbox_dir=tmp_path,
    )
    config["sites"][0]["session_ttl_s"] = 2.0
    site = SiteNode(parse_province(config), "gz", certs.files("site-gz"))
    await site.start()
    # Small limits, so the test reaches them with a few guesses.
    site.desktop.guard.policy = LoginPolicy(code_failures=3, source_failures=6)
    yield site
    await site.stop()


@pytest.fixture
async def stub(node: SiteNode, certs: Certs) -> AsyncIterator[cti_pb2_grpc.AgentDesktopServiceAsyncStub]:
    async with rpc.channel(node.address, tls=certs.files("desktop-robots")) as ch:
        yield cti_pb2_grpc.AgentDesktopServiceStub(ch)


def login(code: str, password: str, key: str | None = None) -> cti_pb2.LoginRequest:
    return cti_pb2.LoginRequest(idempotency_key=key or uuid.uuid4().hex, agent_code=code, password=password)


async def answer(call: object) -> tuple[grpc.StatusCode, str, str]:
    """(status, error id, details) of a refused call."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    error_id = dict(info.value.trailing_metadata() or ()).get(ERROR_ID_KEY, "")
    return info.value.code(), str(error_id), info.value.details() or ""


def audit_actions(node: SiteNode) -> list[str]:
    return [e.action for e in node.audit._pending]


async def test_an_unknown_code_and_a_wrong_password_get_the_same_answer(
    node: SiteNode, stub: cti_pb2_grpc.AgentDesktopServiceAsyncStub
) -> None:
    real = node.site.agents[0].code
    unknown = await answer(stub.Login(login("9999", DEFAULT_PASSWORD), timeout=10))
    wrong = await answer(stub.Login(login(real, WRONG), timeout=10))
    assert unknown == wrong == (Code.UNAUTHENTICATED, "bad-credentials", "agent code or password is wrong")


async def test_a_logged_in_agent_answers_the_same_for_any_password(
    node: SiteNode, stub: cti_pb2_grpc.AgentDesktopServiceAsyncStub
) -> None:
    code = node.site.agents[0].code
    await stub.Login(login(code, DEFAULT_PASSWORD), timeout=10)
    right = await answer(stub.Login(login(code, DEFAULT_PASSWORD), timeout=10))
    wrong = await answer(stub.Login(login(code, WRONG), timeout=10))
    assert right[:2] == wrong[:2] == (Code.ALREADY_EXISTS, "already-logged-in")


async def test_a_retried_login_with_a_wrong_password_does_not_get_the_token(
    node: SiteNode, stub: cti_pb2_grpc.AgentDesktopServiceAsyncStub
) -> None:
    code, key = node.site.agents[0].code, uuid.uuid4().hex
    first = await stub.Login(login(code, DEFAULT_PASSWORD, key), timeout=10)
    status, _, _ = await answer(stub.Login(login(code, WRONG, key), timeout=10))
    assert status != Code.OK
    # The real retry (same key, same password) still gets its own reply; the session is untouched.
    again = await stub.Login(login(code, DEFAULT_PASSWORD, key), timeout=10)
    assert again.session_token == first.session_token
    state = await stub.GetAgent(cti_pb2.GetAgentRequest(session_token=first.session_token), timeout=5)
    assert state.agent.state == common_pb2.AGENT_STATE_NOT_READY


async def test_guesses_lock_the_code_even_for_the_right_password_and_are_audited(
    node: SiteNode, stub: cti_pb2_grpc.AgentDesktopServiceAsyncStub
) -> None:
    code = node.site.agents[0].code
    for _ in range(3):
        assert (await answer(stub.Login(login(code, WRONG), timeout=10)))[0] == Code.UNAUTHENTICATED
    locked = await answer(stub.Login(login(code, DEFAULT_PASSWORD), timeout=10))
    assert locked[:2] == (Code.RESOURCE_EXHAUSTED, "too-many-attempts")
    assert node.switchboard.agents[code].state.name == "LOGGED_OUT"
    assert audit_actions(node) == ["login-failed"] * 3 + ["lockout", "login-refused"]
    # The other agent is not locked by this one.
    other = node.site.agents[1].code
    assert (await stub.Login(login(other, DEFAULT_PASSWORD), timeout=10)).session_token


async def test_guesses_from_one_source_over_many_codes_lock_the_source(
    node: SiteNode, stub: cti_pb2_grpc.AgentDesktopServiceAsyncStub
) -> None:
    for n in range(6):
        status, _, _ = await answer(stub.Login(login(f"88{n:02d}", WRONG), timeout=10))
        assert status == Code.UNAUTHENTICATED
    real = node.site.agents[0].code
    assert (await answer(stub.Login(login(real, DEFAULT_PASSWORD), timeout=10)))[0] == Code.RESOURCE_EXHAUSTED
    assert "lockout" in audit_actions(node)


async def test_sessions_are_revoked_at_logout_and_expire(
    node: SiteNode, stub: cti_pb2_grpc.AgentDesktopServiceAsyncStub
) -> None:
    first, second = (a.code for a in node.site.agents)
    token = (await stub.Login(login(first, DEFAULT_PASSWORD), timeout=10)).session_token
    await stub.Logout(cti_pb2.LogoutRequest(idempotency_key=uuid.uuid4().hex, session_token=token), timeout=5)
    gone = await answer(stub.GetAgent(cti_pb2.GetAgentRequest(session_token=token), timeout=5))
    assert gone[:2] == (Code.UNAUTHENTICATED, "bad-session")
    # The session's person assertions revoked (central hears it with the logout).
    assert audit_actions(node) == ["login", "person-revoked", "logout"]

    token = (await stub.Login(login(second, DEFAULT_PASSWORD), timeout=10)).session_token

    async def expired() -> bool:
        try:
            await stub.GetAgent(cti_pb2.GetAgentRequest(session_token=token), timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code() == Code.UNAUTHENTICATED
        return False

    # session_ttl_s is 2 s in this province.
    await eventually(expired, what="the session expired", timeout_s=10)


def test_a_password_is_six_ascii_digits() -> None:
    # `\d` takes full-width and Arabic-Indic digits, `$` a trailing newline: none is a password.
    from site_node.grpc_api import auth
    from vcc.errors import InvalidArgument

    auth.check_format("1001", "123456")
    for password in (
        "\uff11\uff12\uff13\uff14\uff15\uff16",
        "12345\uff16",
        "123456\n",
        "\u0660\u0661\u0662\u0663\u0664\u0665",
        "12345",
        "1234567",
    ):
        with pytest.raises(InvalidArgument, match="six digits"):
            auth.check_format("1001", password)
        with pytest.raises(InvalidArgument, match="six digits"):
            auth.hash_password(password)
