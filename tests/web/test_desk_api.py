"""The desktop server's HTTP API on a real site node (real gRPC trunk, real etcd, no central):
logins as over gRPC, roles enforced at the API (403 with the state unchanged, and audited), bad
input on every endpoint answered in words, supervision and forced states changing the call."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from site_node.app import SiteNode
from tests.helpers import eventually
from tools.province.etcd_server import EtcdServer
from tools.province.generate import (
    DEFAULT_PASSWORD,
    SiteSpec,
    agent_codes,
    desk_people,
    generate_province,
    hash_password,
)
from tools.province.netutil import free_port
from vcc import rpc
from vcc.config import parse_province
from vcc.v1 import trunk_pb2, trunk_pb2_grpc

HASH = hash_password(DEFAULT_PASSWORD)


@dataclass
class Site:
    node: SiteNode
    base: str
    agents: list[str]
    leader: str
    person: str
    other_leader: str

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, timeout=10)


@pytest.fixture
async def site(tmp_path: Path, etcd_server: EtcdServer) -> AsyncIterator[Site]:
    raw = generate_province(
        [SiteSpec("gz", "Guangzhou", trunk_channels=3, agents={"general": 2, "billing": 1})],
        etcd_endpoint=etcd_server.endpoint,
        central_listen=f"127.0.0.1:{free_port()}",  # no central: records wait in the outbox
        database_url="sqlite+aiosqlite:///unused.db",
        password_hash=HASH,
        outbox_dir=tmp_path,
        ring_timeout_s=30,
        wrap_up_s=30,
        people=True,
        desktop=True,
    )
    # A second leader, of billing only: general's agents are not its team.
    site_raw = raw["sites"][0]
    billing_leader = "1901"
    site_raw["agents"].append(
        {"code": billing_leader, "name": "billing leader", "password_hash": HASH, "skills": {"billing": 3},
         "role": "group_leader", "leads": ["billing"]}
    )  # fmt: skip
    node = SiteNode(parse_province(raw), "gz")
    await node.start()
    people = desk_people(raw, "gz")
    assert node.desktop_url
    try:
        base = node.desktop_url.rstrip("/")
        yield Site(
            node, base, agent_codes(raw, "gz"), people["group_leader"], people["agent"], billing_leader
        )
    finally:
        await node.stop()


def key() -> str:
    return uuid.uuid4().hex


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return await client.post(path, json={"idempotency_key": key(), **(body or {})})


async def login(client: httpx.AsyncClient, code: str) -> dict[str, Any]:
    r = await post(client, "/api/login", {"agent_code": code, "password": DEFAULT_PASSWORD})
    assert r.status_code == 200, r.text
    return dict(r.json()["agent"])


def error(r: httpx.Response, status: int, error_id: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["id"] == error_id, body
    assert body["error"]["message"] and "Traceback" not in r.text


def agent_state(site: Site, code: str) -> tuple[str, str]:
    a = site.node.switchboard.agents[code]
    return str(a.state), a.reason


class Caller:
    """A caller on the site's real trunk API (gRPC stream), who keeps the line open."""

    def __init__(self, site: Site) -> None:
        self.channel = rpc.channel(site.node.address)
        self.stream = trunk_pb2_grpc.TrunkIngressServiceStub(self.channel).PlaceCall(timeout=60)
        self.call_id = ""

    async def dial(self, digit: str = "1") -> str:
        await self.stream.write(
            trunk_pb2.PlaceCallRequest(
                offer=trunk_pb2.CallOffer(idempotency_key=key(), ani="13800000007", dnis="10000")
            )
        )
        accepted = await self.stream.read()
        assert accepted is not grpc.aio.EOF
        self.call_id = accepted.call_id
        await self.stream.write(trunk_pb2.PlaceCallRequest(digits=trunk_pb2.CallerDigits(digits=digit)))
        return self.call_id

    async def close(self) -> None:
        self.stream.cancel()
        await self.channel.close()


async def ringing(site: Site, code: str, call_id: str) -> None:
    async def rings() -> bool:
        a = site.node.switchboard.agents[code]
        return str(a.state) == "RINGING" and a.call_id == call_id

    await eventually(rings, what=f"{call_id} ringing at {code}")


# Logging in --------------------------------------------------------------------------------------


async def test_login_as_over_grpc_and_a_second_login_refused(site: Site) -> None:
    async with site.client() as a, site.client() as b:
        error(await post(a, "/api/login", {"agent_code": "12", "password": "123456"}), 400, "bad-agent-code")
        error(
            await post(a, "/api/login", {"agent_code": "1001", "password": "12"}), 400, "bad-password-format"
        )
        # One answer for an unknown code and a wrong password: the page cannot enumerate agents.
        error(
            await post(a, "/api/login", {"agent_code": "9998", "password": "123456"}), 401, "bad-credentials"
        )
        error(
            await post(a, "/api/login", {"agent_code": site.person, "password": "654321"}),
            401,
            "bad-credentials",
        )
        error(await a.get("/api/me"), 401, "bad-session")
        me = await login(a, site.person)
        assert (me["state"], me["reason"], me["role"]) == ("NOT_READY", "login", "agent")
        error(
            await post(b, "/api/login", {"agent_code": site.person, "password": DEFAULT_PASSWORD}),
            409,
            "already-logged-in",
        )
        view = (await a.get("/api/me")).json()
        assert view["agent"]["code"] == site.person
        assert [r["code"] for r in view["reasons"]][:2] == ["break", "lunch"]
        assert view["queues"] and view["queues"][0]["skill_group"] in ("general", "billing")
        r = await post(a, "/api/logout")
        assert r.status_code == 200
        assert agent_state(site, site.person)[0] == "LOGGED_OUT"
        error(await a.get("/api/me"), 401, "bad-session")


async def test_an_idle_session_expires_and_logs_the_agent_out(site: Site) -> None:
    assert site.node.desk is not None
    sessions = site.node.desk.sessions
    async with site.client() as a:
        await login(a, site.person)
        sessions.idle_s = 0.0  # every session is now too old
        error(await a.get("/api/me"), 401, "session-expired")
        assert agent_state(site, site.person)[0] == "LOGGED_OUT"
        sessions.idle_s = 1800.0
        await login(a, site.person)  # and the agent can log in again


# Bad input on every endpoint -----------------------------------------------------------------------


async def test_the_language_toggle_is_remembered_by_a_cookie_the_server_sets(site: Site) -> None:
    """HttpOnly and SameSite=Strict like the session cookie (a script's document.cookie could be
    neither), Secure when the desk is served over https (tests/security/test_web_tls.py)."""
    async with site.client() as browser:
        chosen = await browser.post("/api/lang", json={"lang": "en"})
        assert chosen.status_code == 200 and chosen.json() == {"lang": "en"}
        cookie = chosen.headers["set-cookie"].lower()
        assert cookie.startswith("vcc_lang=en;") and "max-age=31536000" in cookie
        for flag in ("httponly", "samesite=strict", "path=/"):
            assert flag in cookie, cookie
        assert '<html lang="en"' in (await browser.get("/desk")).text
        for refused in (
            await browser.post("/api/lang", json={"lang": "fr"}),
            await browser.post("/api/lang", content=b"lang=zh"),
        ):
            assert refused.status_code == 400 and "set-cookie" not in refused.headers
        assert browser.cookies.get("vcc_lang") == "en"


async def test_bad_input_is_refused_in_words_and_changes_nothing(site: Site) -> None:
    async with site.client() as agent, site.client() as leader:
        await login(agent, site.person)
        await login(leader, site.leader)
        before = agent_state(site, site.person)
        # No idempotency key, no JSON, not an object, too large.
        error(await agent.post("/api/state", json={"state": "ready"}), 400, "bad-idempotency-key")
        error(await agent.post("/api/state", content=b"state=ready"), 400, "bad-content-type")
        bad_json = {"content-type": "application/json"}
        error(await agent.post("/api/state", content=b"{nope", headers=bad_json), 400, "bad-json")
        error(await agent.post("/api/state", content=b"[1]", headers=bad_json), 400, "bad-json")
        error(
            await post(agent, "/api/messages", {"to": site.agents[0], "text": "x" * 20000}), 400, "too-large"
        )
        cases: list[tuple[httpx.AsyncClient, str, dict[str, Any], int, str]] = [
            (agent, "/api/state", {"state": "busy"}, 400, "bad-argument"),
            (agent, "/api/state", {"state": "not_ready"}, 400, "bad-reason-code"),
            (agent, "/api/state", {"state": "not_ready", "reason": "nap"}, 400, "bad-reason-code"),
            (agent, "/api/wrap-up", {"next": "ready"}, 409, "wrong-agent-state"),
            (agent, "/api/wrap-up", {"next": "later"}, 400, "bad-argument"),
            (agent, "/api/calls/nope/answer", {}, 404, "unknown-call"),
            (agent, "/api/calls/nope/dance", {}, 404, "unknown-action"),
            (agent, "/api/calls/" + "x" * 80 + "/answer", {}, 400, "bad-call-id"),
            (agent, "/api/calls/nope/transfer", {"kind": "sideways"}, 400, "bad-argument"),
            (
                agent,
                "/api/calls/nope/transfer",
                {"kind": "blind", "target": "2001"},
                400,
                "bad-transfer-target",
            ),
            (agent, "/api/calls/nope/digits", {"digits": "12a"}, 400, "bad-digits"),
            (agent, "/api/messages", {"to": "", "text": "hi"}, 400, "bad-argument"),
            (agent, "/api/messages", {"to": site.agents[0], "text": "   "}, 400, "bad-message"),
            (agent, "/api/messages", {"to": "9998", "text": "hi"}, 404, "unknown-agent"),
            (agent, "/api/messages", {"to": site.agents[0], "text": 5}, 400, "bad-argument"),
            (leader, f"/api/team/{site.person}/force", {"action": "nap"}, 400, "bad-argument"),
            (
                leader,
                f"/api/team/{site.person}/force",
                {"action": "not_ready", "reason": ""},
                400,
                "bad-reason-code",
            ),
            (leader, f"/api/team/{site.person}/supervise", {"mode": "listen"}, 400, "bad-argument"),
            (leader, f"/api/team/{site.person}/supervise", {"mode": "monitor"}, 409, "agent-not-on-call"),
            (leader, "/api/team/9998/force", {"action": "ready"}, 404, "unknown-agent"),
            (leader, "/api/team/leave", {}, 409, "not-supervising"),
            (leader, "/api/team/broadcast", {"text": ""}, 400, "bad-message"),
        ]
        for client, path, body, status, error_id in cases:
            error(await post(client, path, body), status, error_id)
        error(await agent.get("/api/stream?view=wall"), 400, "bad-view")
        assert agent_state(site, site.person) == before


# Roles at the API ---------------------------------------------------------------------------------


async def test_roles_are_enforced_at_the_api_with_the_state_unchanged_and_audited(site: Site) -> None:
    assert site.node.desk is not None
    async with site.client() as agent, site.client() as other, site.client() as billing:
        await login(agent, site.person)
        await login(other, site.agents[0])
        await login(billing, site.other_leader)
        before = {code: agent_state(site, code) for code in (site.person, site.agents[0])}
        # An agent cannot reach the console's actions.
        error(await agent.get("/api/team"), 403, "not-a-supervisor")
        error(
            await post(agent, f"/api/team/{site.agents[0]}/force", {"action": "ready"}),
            403,
            "not-a-supervisor",
        )
        error(
            await post(agent, f"/api/team/{site.agents[0]}/supervise", {"mode": "monitor"}),
            403,
            "not-a-supervisor",
        )
        error(await post(agent, "/api/team/broadcast", {"text": "hello team"}), 403, "not-a-supervisor")
        error(await agent.get("/api/stream?view=console"), 403, "not-a-supervisor")
        # A leader of billing cannot act on an agent of general only.
        general_only = site.agents[0]
        error(
            await post(billing, f"/api/team/{general_only}/force", {"action": "ready"}), 403, "not-your-team"
        )
        error(
            await post(billing, f"/api/team/{general_only}/supervise", {"mode": "barge"}),
            403,
            "not-your-team",
        )
        assert {code: agent_state(site, code) for code in before} == before
        denied = [e for e in site.node.audit_journal.entries if e.outcome == "denied"]
        assert {(e.actor, e.detail) for e in denied} >= {
            (site.person, "not-a-supervisor"),
            (site.other_leader, "not-your-team"),
        }
        assert all(e.origin == "127.0.0.1" for e in denied)

        # Agent A's session cannot act on agent B's call.
        caller = Caller(site)
        try:
            assert (await post(other, "/api/state", {"state": "ready"})).status_code == 200
            call_id = await caller.dial("1")
            await ringing(site, general_only, call_id)
            error(await post(agent, f"/api/calls/{call_id}/answer"), 403, "not-your-call")
            assert (await post(other, f"/api/calls/{call_id}/answer")).status_code == 200
            for action in ("hangup", "hold", "transfer"):
                body = {"kind": "blind", "target": {"skill_group": "general"}} if action == "transfer" else {}
                error(await post(agent, f"/api/calls/{call_id}/{action}", body), 403, "not-your-call")
            assert agent_state(site, general_only)[0] == "TALKING"
            assert site.node.switchboard.calls[call_id].agent_code == general_only
        finally:
            await caller.close()


# Supervision and forced states ----------------------------------------------------------------------


async def test_a_leader_forces_states_and_supervises_a_call_through_the_api(site: Site) -> None:
    sb = site.node.switchboard
    async with site.client() as agent, site.client() as leader:
        await login(agent, site.person)
        await login(leader, site.leader)
        team = (await leader.get("/api/team")).json()["team"]
        assert {m["code"] for m in team} == {*site.agents, site.person} - {site.other_leader}

        r = await post(leader, f"/api/team/{site.person}/force", {"action": "ready"})
        assert r.status_code == 200 and agent_state(site, site.person) == ("READY", "")
        r = await post(leader, f"/api/team/{site.person}/force", {"action": "not_ready", "reason": "meeting"})
        assert agent_state(site, site.person) == ("NOT_READY", "meeting")
        me = (await agent.get("/api/me")).json()
        assert me["forced"]["stage"] == "not-ready" and me["forced"]["by"] == site.leader

        # A call for the person: monitor, whisper, barge in, intercept.
        await post(leader, f"/api/team/{site.person}/force", {"action": "ready"})
        caller = Caller(site)
        try:
            call_id = await caller.dial("1")
            await ringing(site, site.person, call_id)
            assert (await post(agent, f"/api/calls/{call_id}/answer")).status_code == 200
            for mode in ("monitor", "whisper", "barge"):
                r = await post(leader, f"/api/team/{site.person}/supervise", {"mode": mode})
                assert r.status_code == 200, r.text
                assert r.json()["supervising"]["mode"] == mode
                member = next(
                    m for m in (await leader.get("/api/team")).json()["team"] if m["code"] == site.person
                )
                assert member["supervised_by"] == {"supervisor": site.leader, "mode": mode}
            me = (await agent.get("/api/me")).json()
            assert me["supervision"]["mode"] == "barge"
            r = await post(leader, f"/api/team/{site.person}/supervise", {"mode": "intercept"})
            assert r.status_code == 200, r.text
            assert sb.calls[call_id].agent_code == site.leader
            assert agent_state(site, site.person)[0] == "WRAP_UP"
            assert agent_state(site, site.leader)[0] == "TALKING"
            audit = [(e.action, e.target) for e in site.node.audit_journal.entries if e.actor == site.leader]
            assert [a for a, _ in audit][-4:] == ["monitor", "whisper", "barge", "intercept"]
            # The leader now ends the call from the desktop like any agent.
            assert (await post(leader, f"/api/calls/{call_id}/hangup")).status_code == 200
            assert call_id not in sb.calls

            # Force logout of a busy agent: out once the wrap-up is over.
            r = await post(leader, f"/api/team/{site.person}/force", {"action": "logout"})
            assert r.status_code == 200 and r.json()["agent"]["logout_pending"]
            assert (
                await post(agent, "/api/wrap-up", {"next": "ready", "code": "resolved", "note": "ok"})
            ).status_code == 200

            async def out() -> bool:
                return agent_state(site, site.person)[0] == "LOGGED_OUT"

            await eventually(out)
            error(await agent.get("/api/me"), 401, "logged-out")
        finally:
            await caller.close()


async def test_messages_between_agents_and_a_broadcast_to_the_team(site: Site) -> None:
    async with site.client() as agent, site.client() as other, site.client() as leader:
        await login(agent, site.person)
        await login(other, site.agents[0])
        await login(leader, site.leader)
        assert (
            await post(agent, "/api/messages", {"to": site.agents[0], "text": "你好 hello"})
        ).status_code == 200
        inbox = (await other.get("/api/me")).json()["messages"]
        assert [(m["from"], m["text"]) for m in inbox] == [(site.person, "你好 hello")]
        r = await post(leader, "/api/team/broadcast", {"text": "meeting at 3"})
        assert r.status_code == 200 and set(r.json()["to"]) >= {site.person, site.agents[0]}
        for client in (agent, other):
            texts = [m["text"] for m in (await client.get("/api/me")).json()["messages"]]
            assert texts[-1] == "meeting at 3"


async def test_the_web_door_shares_the_sites_lockout_and_never_hands_a_retry_the_token(site: Site) -> None:
    """The web login goes through the site's one credential check: wrong guesses lock the code out
    (the gRPC door counts them too), and a retried key with another password gets no session."""
    async with site.client() as a:
        key = "retry-key-1"
        first = await a.post(
            "/api/login",
            json={"agent_code": site.person, "password": "123456", "idempotency_key": key},
        )
        assert first.status_code == 200, first.text
        await a.post("/api/logout", json={"idempotency_key": "out-1"})
    async with site.client() as b:
        retry = await b.post(
            "/api/login",
            json={"agent_code": site.person, "password": "000000", "idempotency_key": key},
        )
        error(retry, 401, "bad-credentials")
        assert "vcc_session" not in retry.cookies
        for i in range(10):
            answer = await b.post(
                "/api/login",
                json={"agent_code": site.person, "password": "000000", "idempotency_key": f"guess-{i}"},
            )
            if answer.status_code == 429:
                break
        error(answer, 429, "too-many-attempts")
        # Locked: even the right password is refused now, and nothing logged the agent in.
        right = await b.post(
            "/api/login",
            json={"agent_code": site.person, "password": "123456", "idempotency_key": "after-lock"},
        )
        error(right, 429, "too-many-attempts")


# The desk's use of central's service desk ------------------------------------------------------------


async def test_the_customer_and_knowledge_endpoints_refuse_bad_input_in_words(site: Site) -> None:
    """No central in this fixture: what the site decides alone (the session, whose record, bad
    input) is answered before central is asked; then central's absence is said in words."""
    async with site.client() as agent:
        error(await agent.get("/api/customers/c-1"), 401, "bad-session")
        await login(agent, site.person)
        # Not the record of a caller of this agent's.
        error(await agent.get("/api/customers/c-1"), 403, "not-your-customer")
        error(await post(agent, "/api/customers/c-1", {"version": 1, "notes": "x"}), 403, "not-your-customer")
        error(await agent.get("/api/customers/bad%20id"), 400, "bad-customer-id")
        error(await agent.get("/api/knowledge"), 400, "bad-service")
        error(await agent.get("/api/knowledge?service=no%20such"), 400, "bad-service")
        error(await agent.get("/api/knowledge?service=general"), 503, "central-unavailable")
        denied = [
            e for e in site.node.audit_journal.entries if e.outcome == "denied" and e.actor == site.person
        ]
        assert any(e.action == "customers/c-1" for e in denied)
