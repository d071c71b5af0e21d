"""People across a real province (separate processes, mTLS, etcd, two central replicas), issue 11
and 12: central knows which person acts at its service desk (a desktop server or a site acts for
a person only with that person's site's signed assertion, the person must be of that site, and
their role from the province config must allow the method; anything else is PERMISSION_DENIED,
audited, nothing changed); an agent an administrator adds at runtime is reachable from another
city; a person's assertion dies with the session; the service desk's own refusals of a person are
audited; an operator's dashboard session and a guesser's failed logins survive a central leader
change, and the session ends at logout.

One province for the module; the leader change is the last test."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from central.web.server import COOKIE
from tests.helpers import eventually
from tests.integration.support import Caller, Desktop, password_hash
from tools.province.cluster import Cluster
from tools.province.generate import (
    DEFAULT_PASSWORD,
    DEMO_OPERATOR,
    DEMO_OPERATOR_PASSWORD,
    SiteSpec,
    desk_people,
    generate_province,
)
from tools.province.netutil import free_port
from vcc import rpc
from vcc.https import client_verify, web_url
from vcc.login_guard import LoginPolicy
from vcc.person_assertion import METADATA_KEY, PersonSigner
from vcc.tls import DESKTOP, TRUNK
from vcc.v1 import audit_pb2, audit_pb2_grpc, central_pb2, central_pb2_grpc, common_pb2, cti_pb2, cti_pb2_grpc
from vcc.v1 import servicedesk_pb2 as pb
from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

pytestmark = pytest.mark.cluster
Code = grpc.StatusCode
RPC_S = 20.0  # a new channel's handshake on a loaded machine can take seconds


async def start(folder: Path) -> Cluster:
    config = generate_province(
        [
            SiteSpec("gz", "Guangzhou", trunk_channels=2, agents={"general": 1}),
            SiteSpec("sz", "Shenzhen", trunk_channels=2, agents={"general": 1}),
        ],
        etcd_endpoint="127.0.0.1:2379",
        central_listen=f"127.0.0.1:{free_port()}",
        database_url=f"sqlite+aiosqlite:///{folder / 'central.db'}",
        password_hash=password_hash(),
        outbox_dir=folder / "outbox",
        people=True,
        desktop=True,
        dashboard_listen=f"127.0.0.1:{free_port()}",
        digit_timeout_s=0.5,
    )
    path = folder / "province.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return await Cluster.start(path, folder / "run", fresh_ports=True, central_replicas=2)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    started = asyncio.run(start(tmp_path_factory.mktemp("person")))
    yield started
    asyncio.run(started.stop())


def people(cluster: Cluster, site: str) -> dict[str, str]:
    raw = yaml.safe_load(cluster.config_path.read_text())
    return desk_people(raw, site)


def signer(cluster: Cluster, stem: str, site: str) -> PersonSigner:
    assert cluster.tls is not None
    return PersonSigner(cluster.tls.files(stem), site)


async def login(cluster: Cluster, site: str, code: str) -> tuple[str, str]:
    """(session token, person assertion) of `code` logged in at `site`'s desktop API."""
    async with rpc.channel(cluster.config.site(site).listen, persona=DESKTOP) as ch:
        reply = await cti_pb2_grpc.AgentDesktopServiceStub(ch).Login(
            cti_pb2.LoginRequest(
                agent_code=code, password=DEFAULT_PASSWORD, idempotency_key=uuid.uuid4().hex
            ),
            timeout=RPC_S,
        )
        again = await cti_pb2_grpc.AgentDesktopServiceStub(ch).GetAgent(
            cti_pb2.GetAgentRequest(session_token=reply.session_token), timeout=RPC_S
        )
    assert reply.person_assertion and again.person_assertion  # renewed by GetAgent
    return reply.session_token, reply.person_assertion


async def status(call: object) -> Code:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return Code.OK


def meta(token: str) -> tuple[tuple[str, str], ...]:
    return ((METADATA_KEY, token),)


def tampered(token: str, **changes: str) -> str:
    """The same signature over another payload (another agent or site)."""
    version, payload, signature, cert = token.split(".")
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    fields.update(changes)
    forged = base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode()
    return ".".join((version, forged, signature, cert))


async def test_central_checks_the_person_a_desktop_or_a_site_acts_for(cluster: Cluster) -> None:
    central = cluster.central_address()
    gz, sz = people(cluster, "gz"), people(cluster, "sz")
    # The back office (a tool certificate) makes a customer and a ticket: it acts as itself.
    async with rpc.channel(central) as ch:
        made = await pb_grpc.CustomerServiceStub(ch).CreateCustomer(
            pb.CreateCustomerRequest(customer=common_pb2.Customer(name="李四", phones=["13900000007"])),
            timeout=RPC_S,
        )
        customer_id = made.customer.customer_id
        ticket = await pb_grpc.TicketServiceStub(ch).CreateTicket(
            pb.CreateTicketRequest(
                category=pb.TICKET_CATEGORY_WORK_ORDER, title="线路故障", customer_id=customer_id,
                origin_site_id="gz", created_by="back-office", unit="city:gz", idempotency_key="t-1",
            ),
            timeout=RPC_S,
        )  # fmt: skip
    ticket_id = ticket.ticket.ticket_id
    _, agent = await login(cluster, "gz", gz["agent"])
    _, leader = await login(cluster, "gz", gz["group_leader"])
    gz_key = signer(cluster, "site-gz", "gz")
    sz_key = signer(cluster, "site-sz", "sz")

    def edit(version: int) -> pb.UpdateCustomerRequest:
        edited = made.customer.__deepcopy__()
        edited.notes = "forged"
        return pb.UpdateCustomerRequest(customer=edited, expected_version=version)

    get = pb.GetCustomerRequest(customer_id=customer_id)
    async with (
        rpc.channel(central, persona=DESKTOP) as desk_ch,
        rpc.channel(central, tls=cluster.tls.files("site-gz") if cluster.tls else None) as gz_ch,
    ):
        desk, site = pb_grpc.CustomerServiceStub(desk_ch), pb_grpc.CustomerServiceStub(gz_ch)
        # Legitimate: the agent's own assertion, through the desktop server and through its site.
        assert await status(desk.GetCustomer(get, timeout=RPC_S, metadata=meta(agent))) == Code.OK
        own = gz_key.sign(gz["agent"], "a-session")
        assert await status(site.GetCustomer(get, timeout=RPC_S, metadata=meta(own))) == Code.OK
        refused = {
            # no person at all
            "none": await status(desk.GetCustomer(get, timeout=RPC_S)),
            # another city's agent in the agent's assertion (the signature no longer matches)
            "tampered": await status(
                desk.UpdateCustomer(edit(1), timeout=RPC_S, metadata=meta(tampered(agent, agent=sz["agent"])))
            ),
            "tampered-site": await status(
                desk.UpdateCustomer(edit(1), timeout=RPC_S, metadata=meta(tampered(agent, site="sz")))
            ),
            # gz's own key signing for a person of sz, or as sz: gz speaks for its own people only
            "gz-for-sz-agent": await status(
                desk.UpdateCustomer(edit(1), timeout=RPC_S, metadata=meta(gz_key.sign(sz["agent"], "s")))
            ),
            "gz-as-sz": await status(
                desk.UpdateCustomer(
                    edit(1),
                    timeout=RPC_S,
                    metadata=meta(signer(cluster, "site-gz", "sz").sign(sz["agent"], "s")),
                )
            ),
            # gz's certificate carrying sz's (valid) assertion
            "site-gz-with-sz-person": await status(
                site.UpdateCustomer(edit(1), timeout=RPC_S, metadata=meta(sz_key.sign(sz["agent"], "s")))
            ),
            # an expired assertion
            "expired": await status(
                desk.UpdateCustomer(
                    edit(1), timeout=RPC_S, metadata=meta(gz_key.sign(gz["agent"], "s", ttl_s=-60))
                )
            ),
            "garbage": await status(desk.UpdateCustomer(edit(1), timeout=RPC_S, metadata=meta("v1.x.y.z"))),
        }
        assert refused == dict.fromkeys(refused, Code.PERMISSION_DENIED)
        # Nothing changed.
        now = await site.GetCustomer(get, timeout=RPC_S, metadata=meta(gz_key.sign(gz["agent"], "s")))
        assert (now.customer.version, now.customer.notes) == (1, "")

        # Roles: an agent may not dispatch a ticket (a leader's method); its group leader may.
        tickets = pb_grpc.TicketServiceStub(desk_ch)
        dispatch = pb.DispatchTicketRequest(ticket_id=ticket_id, unit="city:sz", actor="x", note="to sz")
        assert await status(tickets.DispatchTicket(dispatch, timeout=RPC_S, metadata=meta(agent))) == (
            Code.PERMISSION_DENIED
        )
        got = await tickets.GetTicket(
            pb.GetTicketRequest(ticket_id=ticket_id), timeout=RPC_S, metadata=meta(agent)
        )
        assert got.ticket.unit == "city:gz"  # unchanged by the refused dispatch
        # The leader dispatches, as itself only (the message's actor must be the acting person).
        assert await status(tickets.DispatchTicket(dispatch, timeout=RPC_S, metadata=meta(leader))) == (
            Code.PERMISSION_DENIED
        )
        dispatch.actor = ""
        done = await tickets.DispatchTicket(dispatch, timeout=RPC_S, metadata=meta(leader))
        assert done.ticket.unit == "city:sz"
        note = pb.AddTicketNoteRequest(ticket_id=ticket_id, author=gz["group_leader"], body="as someone else")
        assert await status(tickets.AddTicketNote(note, timeout=RPC_S, metadata=meta(agent))) == (
            Code.PERMISSION_DENIED
        )

    # Each refusal is in central's audit log, with why.
    async def audited() -> list[audit_pb2.AuditEntry]:
        async with rpc.channel(central) as ch:
            reply = await audit_pb2_grpc.AuditServiceStub(ch).ListAudit(
                audit_pb2.ListAuditRequest(page_size=1000), timeout=RPC_S
            )
        return [
            e
            for e in reply.entries
            if e.action == "permission-denied" and "person refused" in e.detail.get("reason", "")
        ]

    async def all_audited() -> bool:
        return len(await audited()) >= len(refused) + 1

    await eventually(all_audited, timeout_s=20, what="the refusals audited")
    # The handler's own refusals of a person (a message naming someone else) are audited too: who
    # (the person, through which certificate), what, from where; read through `vcc audit`.
    code, out = await audit_cli(cluster, "--who", f"agent:{gz['group_leader']}@gz", "--json")
    assert code == 0, out
    mine = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    named = [e for e in mine if "not-the-acting-person" in e.get("detail", {}).get("reason", "")]
    assert [e["target"] for e in named] == ["/vcc.v1.TicketService/DispatchTicket"], mine
    [dispatch_refused] = named
    assert dispatch_refused["actor"] == f"agent:{gz['group_leader']}@gz via desktop/robots"
    assert dispatch_refused["outcome"] == "refused" and "127.0.0.1" in dispatch_refused["source"]
    code, out = await audit_cli(cluster, "--who", f"agent:{gz['agent']}@gz", "--json")
    noted = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [e["target"] for e in noted if "not-the-acting-person" in str(e)] == [
        "/vcc.v1.TicketService/AddTicketNote"
    ], noted


async def audit_cli(cluster: Cluster, *args: str) -> tuple[int, str]:
    """`vcc audit ...` against the running province."""
    from typer.testing import CliRunner

    from tools.cli import app

    argv = ["audit", "--config", str(cluster.config_path), *args]
    result = await asyncio.to_thread(CliRunner().invoke, app, argv)
    return result.exit_code, result.output


async def test_a_person_assertion_dies_with_its_session(cluster: Cluster) -> None:
    """Logout revokes the agent's assertions at once at every replica (the logout waited for the
    leader to store it; every replica reads the revocations again before a person check); a new
    login's assertion works; an administrator disabling a logged-in agent revokes its assertions
    too. Each revocation is audited."""
    sz = people(cluster, "sz")
    code = sz["group_leader"]  # a person no other test here logs in
    search = pb.SearchCustomersRequest(phone="139")

    async def at(address: str, assertion: str) -> Code:
        async with rpc.channel(address, persona=DESKTOP) as ch:
            return await status(
                pb_grpc.CustomerServiceStub(ch).SearchCustomers(
                    search, timeout=RPC_S, metadata=meta(assertion)
                )
            )

    replicas = [cluster.replica_address(r) for r in cluster.centrals]
    leader = await cluster.wait_central_leader(timeout_s=30)
    token, assertion = await login(cluster, "sz", code)
    assert [await at(a, assertion) for a in replicas] == [Code.OK] * len(replicas)
    async with rpc.channel(cluster.config.site("sz").listen, persona=DESKTOP) as ch:
        await cti_pb2_grpc.AgentDesktopServiceStub(ch).Logout(
            cti_pb2.LogoutRequest(session_token=token, idempotency_key="out-1"), timeout=RPC_S
        )
    # Refused at once by every replica, the followers asked first (no waiting for their periodic
    # read of the audit log: each reads the revocations again before a person check).
    followers = [a for a in replicas if a != leader.address]
    assert len(followers) == len(replicas) - 1 >= 1
    answers = [await at(a, assertion) for a in [*followers, leader.address]]
    assert answers == [Code.PERMISSION_DENIED] * len(replicas)
    # Logged in again: the new session's assertion is honoured, the old one still refused.
    token, fresh = await login(cluster, "sz", code)
    assert (await at(leader.address, fresh), await at(leader.address, assertion)) == (
        Code.OK,
        Code.PERMISSION_DENIED,
    )

    # An administrator disables a logged-in agent: its assertion is refused.
    agent = sz["agent"]
    _, agents = await login(cluster, "sz", agent)
    assert await at(leader.address, agents) == Code.OK
    done, out = await roster_cli(cluster, sz["administrator"], "disable", "--site", "sz", agent)
    assert done == 0, out

    async def agent_refused() -> bool:
        return await at(leader.address, agents) == Code.PERMISSION_DENIED

    await eventually(agent_refused, timeout_s=10, what="the disabled agent's assertion refused")
    done, out = await roster_cli(cluster, sz["administrator"], "enable", "--site", "sz", agent)
    assert done == 0, out
    _, revoked = await audit_cli(cluster, "--who", "site/sz", "--json")
    causes = [json.loads(line) for line in revoked.splitlines() if '"person-revoked"' in line]
    assert {e["target"] for e in causes} >= {code, agent}, causes


NEW_AGENT, NEW_PASSWORD = "0190", "246810"


async def roster_cli(cluster: Cluster, admin: str, *args: str) -> tuple[int, str]:
    """`vcc roster ...` against the running province, as `admin` (the password in its environment)."""
    from typer.testing import CliRunner

    from tools.cli import app

    env = {"VCC_ADMIN": admin, "VCC_ADMIN_PASSWORD": DEFAULT_PASSWORD, "VCC_NEW_PASSWORD": NEW_PASSWORD}
    argv = ["roster", args[0], "--config", str(cluster.config_path), *args[1:]]
    result = await asyncio.to_thread(CliRunner(env=env).invoke, app, argv)
    return result.exit_code, result.output


async def test_an_agent_added_at_runtime_is_reachable_from_another_city(cluster: Cluster) -> None:
    """gz's administrator adds an agent (not in the province config); sz learns it from central's
    directory (gz's presence on its state stream) and an sz agent transfers a caller to it."""
    admin = people(cluster, "gz")["administrator"]
    code, out = await roster_cli(cluster, admin, "add", "--site", "gz", NEW_AGENT, "--skill", "general=5")
    assert code == 0 and out.startswith(NEW_AGENT), out
    gz_ch = rpc.channel(cluster.config.site("gz").listen, persona=DESKTOP)
    sz_ch = rpc.channel(cluster.config.site("sz").listen, persona=DESKTOP)
    new = Desktop(gz_ch, NEW_AGENT)
    reply = await new.stub.Login(
        cti_pb2.LoginRequest(idempotency_key=uuid.uuid4().hex, agent_code=NEW_AGENT, password=NEW_PASSWORD),
        timeout=RPC_S,
    )
    new.token, new._reader = reply.session_token, asyncio.create_task(new._read())
    await new.ready()
    # Central's directory lists it, from gz's presence.
    async with rpc.channel(cluster.central_address()) as ch:

        async def listed() -> bool:
            found = await central_pb2_grpc.CentralServiceStub(ch).ListAgents(
                central_pb2.ListAgentsRequest(site_id="gz"), timeout=RPC_S
            )
            return any(a.agent_code == NEW_AGENT for a in found.agents)

        await eventually(listed, timeout_s=20, what="the new agent in central's directory")
    # An agent of sz (a city whose config does not name the new agent) answers a caller there...
    [sz_agent] = [a.code for a in cluster.config.site("sz").agents if a.role == "agent"][:1]
    here = Desktop(sz_ch, sz_agent)
    await here.login()
    await here.ready()
    caller = Caller(rpc.channel(cluster.config.site("sz").listen, persona=TRUNK), ani="13800000008")
    offered = await here.answer_next()
    await caller.until("connected")

    # ... and transfers it to the new agent at gz, once sz has learned it (refused before: the
    # call stays with sz's agent).
    async def transferred() -> bool:
        try:
            await here.transfer(offered.call_id, cti_pb2.TRANSFER_KIND_BLIND, agent_code=NEW_AGENT)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == Code.NOT_FOUND, exc  # unknown-agent, not learned yet
            return False
        return True

    await eventually(transferred, timeout_s=20, what="sz transfers to the agent added at gz")
    moved = await caller.until("transferred")
    assert (moved.transferred.to_site_id, moved.transferred.to_agent_code) == ("gz", NEW_AGENT)
    taken = await new.answer_next()
    assert taken.call_id == offered.call_id
    assert (await caller.until("connected")).connected.agent_code == NEW_AGENT
    await new.hang_up(offered.call_id)
    await caller.until("ended")
    await new.close()
    await here.close()
    await gz_ch.close()
    await sz_ch.close()


async def test_a_dashboard_session_survives_a_leader_change_and_ends_at_logout(cluster: Cluster) -> None:
    """The sessions are in central's database: the next leader's dashboard knows the cookie."""
    import httpx

    base = web_url(cluster.config, cluster.config.central.dashboard_listen, "")
    verify = client_verify(cluster.config)

    async def dashboard_up() -> bool:
        try:
            async with httpx.AsyncClient(base_url=base, timeout=5, verify=verify) as http:
                return (await http.get("/healthz")).status_code == 200
        except httpx.HTTPError:
            return False  # no leader's dashboard listening yet

    await eventually(dashboard_up, timeout_s=30, what="the leader's dashboard")
    async with httpx.AsyncClient(base_url=base, timeout=10, verify=verify) as http:
        login = await http.post(
            "/api/login", json={"user": DEMO_OPERATOR, "password": DEMO_OPERATOR_PASSWORD}
        )
        assert login.status_code == 200, login.text
        cookie = {COOKIE: login.cookies[COOKIE]}
        # A guesser's failures at this leader, one short of the lockout...
        for _ in range(LoginPolicy().code_failures - 1):
            wrong = await http.post("/api/login", json={"user": DEMO_OPERATOR, "password": "guess-1"})
            assert wrong.status_code == 401, wrong.text
    old = await cluster.kill_central_leader()
    await cluster.wait_central_leader(newer_than=old.epoch, timeout_s=60)

    async def served_again() -> bool:
        try:
            async with httpx.AsyncClient(base_url=base, timeout=5, cookies=cookie, verify=verify) as http:
                reply = await http.get("/api/live")
        except httpx.HTTPError:
            return False  # the next leader's dashboard is not listening yet
        assert reply.status_code == 200, reply.text  # not 401: the new leader knows the session
        return True

    await eventually(served_again, timeout_s=60, interval_s=0.5, what="the new leader's dashboard")
    # ... are counted by the next leader (in the database): one more locks the name, and then
    # even the right password is refused.
    async with httpx.AsyncClient(base_url=base, timeout=10, verify=verify) as http:
        wrong = await http.post("/api/login", json={"user": DEMO_OPERATOR, "password": "guess-2"})
        assert wrong.status_code == 401, wrong.text
        right = await http.post(
            "/api/login", json={"user": DEMO_OPERATOR, "password": DEMO_OPERATOR_PASSWORD}
        )
        assert right.status_code == 429 and right.json()["error"] == "too-many-attempts", right.text
    async with httpx.AsyncClient(base_url=base, timeout=10, cookies=cookie, verify=verify) as http:
        assert (await http.post("/api/logout")).status_code == 200
    async with httpx.AsyncClient(base_url=base, timeout=10, cookies=cookie, verify=verify) as http:
        gone = await http.get("/api/live")
    assert gone.status_code == 401 and gone.json()["error"] == "login-required"
