"""Agent administration over the desktop server's API on a real site node (real etcd, real HTTP,
the agents' real argon2 check, no central): only an administrator may (a group leader and an agent
get 403, audited, nothing changed); bad input is answered in words; an added agent, new skills, a
reset password and a disabled agent take effect on the running site at once, and are still in
force after the site restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from routing.agents import AgentState
from site_node.app import SiteNode
from site_node.roster import overlay_path
from tests.web.test_desk_api import HASH, error, key, login, post
from tools.province.etcd_server import EtcdServer
from tools.province.generate import DEFAULT_PASSWORD, SiteSpec, desk_people, generate_province
from tools.province.netutil import free_port
from vcc.config import ProvinceConfig, parse_province

NEW, NEW_PASSWORD, RESET_PASSWORD = "0190", "246810", "135790"


def province(tmp_path: Path, etcd: EtcdServer) -> tuple[ProvinceConfig, dict[str, Any]]:
    raw = generate_province(
        [SiteSpec("gz", "Guangzhou", trunk_channels=3, agents={"general": 2, "billing": 1})],
        etcd_endpoint=etcd.endpoint,
        central_listen=f"127.0.0.1:{free_port()}",  # no central: audit entries wait at the site
        database_url="sqlite+aiosqlite:///unused.db",
        password_hash=HASH,
        outbox_dir=tmp_path,
        people=True,
        desktop=True,
    )
    return parse_province(raw), raw


async def log_in_as(http: httpx.AsyncClient, code: str, password: str) -> httpx.Response:
    return await post(http, "/api/login", {"agent_code": code, "password": password})


async def test_an_administrator_manages_agents_on_the_running_site_and_it_lasts(
    tmp_path: Path, etcd_server: EtcdServer
) -> None:
    config, raw = province(tmp_path, etcd_server)
    people = desk_people(raw, "gz")
    admin, leader, person = people["administrator"], people["group_leader"], people["agent"]
    robot = next(a.code for a in config.sites[0].agents if a.role == "agent" and a.code != person)
    node = SiteNode(config, "gz")
    await node.start()
    try:
        assert node.desktop_url
        base = node.desktop_url.rstrip("/")
        sb = node.switchboard
        async with (
            httpx.AsyncClient(base_url=base, timeout=20) as adm,
            httpx.AsyncClient(base_url=base, timeout=20) as lead,
            httpx.AsyncClient(base_url=base, timeout=20) as agent,
        ):
            await login(lead, leader)
            await login(agent, person)
            new = {
                "agent_code": NEW,
                "name": "新坐席 new",
                "skills": {"general": 7},
                "password": NEW_PASSWORD,
            }

            # A group leader and an agent cannot: 403, nothing changed, audited as denied.
            error(await post(lead, "/api/admin/agents", new), 403, "not-an-administrator")
            error(await lead.get("/api/admin/agents"), 403, "not-an-administrator")
            error(await post(agent, f"/api/admin/agents/{robot}/disable"), 403, "not-an-administrator")
            error(
                await post(lead, f"/api/admin/agents/{robot}/password", {"password": RESET_PASSWORD}),
                403,
                "not-an-administrator",
            )
            assert NEW not in sb.agents and robot not in node.roster.credentials._disabled  # type: ignore[union-attr]
            denied = [(e.actor, e.action) for e in node.audit_journal.entries if e.outcome == "denied"]
            assert (leader, "admin/agents") in denied and (person, f"admin/agents/{robot}/disable") in denied

            await login(adm, admin)
            listed = (await adm.get("/api/admin/agents")).json()["agents"]
            assert {a["code"] for a in listed} == {a.code for a in config.sites[0].agents}
            console = (await adm.get("/api/team")).json()
            assert console["agents"] and (await lead.get("/api/team")).json()["agents"] is None

            # Bad input, in words, nothing changed.
            for body, status, error_id in (
                ({**new, "agent_code": "19"}, 400, "bad-agent-code"),
                ({**new, "skills": {}}, 400, "bad-skills"),
                ({**new, "skills": "general"}, 400, "bad-skills"),
                ({**new, "skills": {"sales": 5}}, 400, "unknown-skill-group"),
                ({**new, "skills": {"general": 11}}, 400, "bad-skill-level"),
                ({**new, "skills": {"general": True}}, 400, "bad-skill-level"),
                ({**new, "password": "12ab56"}, 400, "bad-password-format"),
                ({**new, "name": "x" * 65}, 400, "bad-argument"),
                ({**new, "agent_code": robot}, 409, "agent-exists"),
            ):
                error(await post(adm, "/api/admin/agents", body), status, error_id)
            error(await post(adm, "/api/admin/agents/9999/disable"), 404, "unknown-agent")
            error(await post(adm, f"/api/admin/agents/{robot}/promote"), 404, "unknown-action")
            error(
                await post(adm, f"/api/admin/agents/{robot}/skills", {"skills": {"x": 1}}),
                400,
                "unknown-skill-group",
            )
            error(
                await post(adm, f"/api/admin/agents/{robot}/password", {"password": "1"}),
                400,
                "bad-password-format",
            )
            error(await post(adm, f"/api/admin/agents/{admin}/disable"), 409, "cannot-disable-yourself")
            error(await adm.post("/api/admin/agents", json=new), 400, "bad-idempotency-key")
            assert NEW not in sb.agents

            # Add: the new agent logs in at once and is routed for its skill group.
            same_key = key()
            added = await adm.post("/api/admin/agents", json={**new, "idempotency_key": same_key})
            assert added.status_code == 200, added.text
            assert added.json()["agent"]["skills"] == {"general": 7}
            again = await adm.post("/api/admin/agents", json={**new, "idempotency_key": same_key})
            assert again.json() == added.json()  # a retry, not a second agent
            async with httpx.AsyncClient(base_url=base, timeout=20) as fresh:
                error(await log_in_as(fresh, NEW, DEFAULT_PASSWORD), 401, "bad-credentials")
                assert (await log_in_as(fresh, NEW, NEW_PASSWORD)).status_code == 200
                assert (await post(fresh, "/api/state", {"state": "ready"})).status_code == 200
                assert sb.acd.is_ready(NEW) and NEW in sb.acd.members("general")

                # New skills, in force while the agent is ready.
                staffed = dict(sb.desk.staffed)
                moved = await post(adm, f"/api/admin/agents/{NEW}/skills", {"skills": {"billing": 4}})
                assert moved.status_code == 200, moved.text
                assert sb.skills[NEW] == {"billing": 4} and NEW in sb.acd.members("billing")
                assert NEW not in sb.acd.members("general") and sb.acd.is_ready(NEW)
                assert sb.desk.staffed["general"] == staffed["general"] - 1
                assert sb.desk.staffed["billing"] == staffed["billing"] + 1
                assert (await post(fresh, "/api/logout")).status_code == 200

            # Reset a password: the old one is refused, the new one works.
            reset = await post(adm, f"/api/admin/agents/{robot}/password", {"password": RESET_PASSWORD})
            assert reset.status_code == 200, reset.text
            async with httpx.AsyncClient(base_url=base, timeout=20) as r:
                error(await log_in_as(r, robot, DEFAULT_PASSWORD), 401, "bad-credentials")
                assert (await log_in_as(r, robot, RESET_PASSWORD)).status_code == 200
                assert (await post(r, "/api/logout")).status_code == 200

            # Messages (a colleague's and the leader's broadcast) are kept across the restart below.
            assert (await post(adm, "/api/messages", {"to": person, "text": "kept 保留"})).status_code == 200
            assert (await post(lead, "/api/team/broadcast", {"text": "team meeting at 3"})).status_code == 200

            # Disable a logged-in agent: out now, and refused like a wrong password from then on.
            assert (await post(adm, f"/api/admin/agents/{person}/disable")).status_code == 200
            assert sb.agents[person].state == AgentState.LOGGED_OUT
            error(await agent.get("/api/me"), 401, "logged-out")
            error(await log_in_as(agent, person, DEFAULT_PASSWORD), 401, "bad-credentials")

        done = [
            (e.action, e.target)
            for e in node.audit_journal.entries
            if e.actor == admin and e.outcome == "done"
        ]
        assert done == [
            ("agent-add", NEW),
            ("agent-skills", NEW),
            ("agent-password-reset", robot),
            ("force-logout", person),  # the call control's own entry
            ("agent-disable", person),
        ]
    finally:
        await node.stop()

    # A restart keeps every change (the overlay beside the outbox), the config untouched.
    assert overlay_path(tmp_path / "gz-outbox.db").exists()
    node = SiteNode(config, "gz")
    await node.start()
    try:
        assert node.desktop_url
        sb = node.switchboard
        assert sb.skills[NEW] == {"billing": 4}
        async with httpx.AsyncClient(base_url=node.desktop_url.rstrip("/"), timeout=20) as http:
            error(await log_in_as(http, person, DEFAULT_PASSWORD), 401, "bad-credentials")
            error(await log_in_as(http, robot, DEFAULT_PASSWORD), 401, "bad-credentials")
            assert (await log_in_as(http, NEW, NEW_PASSWORD)).status_code == 200
            assert (await post(http, "/api/logout")).status_code == 200
            assert (await log_in_as(http, robot, RESET_PASSWORD)).status_code == 200
            enabled = await _as_admin(node.desktop_url, admin, f"/api/admin/agents/{person}/enable")
            assert enabled.status_code == 200, enabled.text
        async with httpx.AsyncClient(base_url=node.desktop_url.rstrip("/"), timeout=20) as http:
            assert (await log_in_as(http, person, DEFAULT_PASSWORD)).status_code == 200
            inbox = (await http.get("/api/me")).json()["messages"]
            assert [(m["from"], m["text"], m["broadcast"]) for m in inbox] == [
                (admin, "kept 保留", False),
                (leader, "team meeting at 3", True),
            ]
            # New messages after the restart continue the numbering (no id reused).
            sent = await post(http, "/api/messages", {"to": admin, "text": "thanks"})
            assert sent.json()["id"] > max(m["id"] for m in inbox)
    finally:
        await node.stop()


async def _as_admin(url: str, admin: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url.rstrip("/"), timeout=20) as http:
        await login(http, admin)
        return await post(http, path)
