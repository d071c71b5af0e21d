"""Agent administration over the desktop server's API (SPEC F25), for a site's administrators only:
list, add, disable and enable, reset a password, change skills and levels. The console's
"Agents" card and `vcc agents admin` use it. The role is checked here, on every request (a group
leader or an agent gets 403 `not-an-administrator`, audited, nothing changed); the change itself
is site_node.roster's (in force at once, kept across a restart) and audited at central.

- `GET  /api/admin/agents` → `{"agents": [...]}`
- `POST /api/admin/agents` `{"agent_code", "name", "skills": {group: level}, "password"}`
- `POST /api/admin/agents/{agent}/skills` `{"skills": {group: level}}`
- `POST /api/admin/agents/{agent}/password` `{"password"}`
- `POST /api/admin/agents/{agent}/disable`, `.../enable`
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from site_node.callcontrol.domain import Audit
from site_node.roster import AgentEntry, check_admin, parse_skills
from site_node.web.requests import origin, text
from site_node.web.sessions import Session
from vcc.errors import NotFound

CHANGES = ("skills", "password", "disable", "enable")

if TYPE_CHECKING:
    from site_node.web.server import DeskServer


class AdminApi:
    def __init__(self, desk: DeskServer) -> None:
        self.d = desk

    def _admin(self, request: Request) -> Session:
        s = self.d._session(request)
        check_admin(s.role)
        return s

    def view(self, e: AgentEntry) -> dict[str, Any]:
        agent = self.d.sb.agents.get(e.code)
        return {
            "code": e.code,
            "name": e.name,
            "role": e.role,
            "skills": dict(sorted(e.skills.items())),
            "disabled": e.disabled,
            "added": e.added,
            "state": str(agent.state) if agent is not None else "",
            "changed_by": e.changed_by,
            "changed_at": e.changed_at,
        }

    def agents_view(self) -> list[dict[str, Any]]:
        roster = self.d.roster
        return [self.view(e) for _, e in sorted(roster.entries.items())] if roster else []

    async def _list(self, request: Request) -> Response:
        self._admin(request)
        return JSONResponse({"agents": self.agents_view()})

    def _audit(self, request: Request, s: Session, action: str, code: str, detail: str = "") -> None:
        self.d.audit.record(
            Audit(self.d._clock(), s.code, action, code, detail=detail), origin=origin(request)
        )
        self.d._wake(s.code, code)

    async def _add(self, request: Request) -> Response:
        async def add(s: Session, body: dict[str, Any]) -> dict[str, Any]:
            code = text(body, "agent_code", 8)
            name = text(body, "name", 64, required=False)
            skills = parse_skills(body.get("skills"), self.d.sb.site)
            password = text(body, "password", 16)
            e = await self.d.require_roster().add(s.code, code, name, skills, password, self.d._clock())
            self._audit(request, s, "agent-add", code, _skills_text(e.skills))
            return {"agent": self.view(e)}

        self._admin(request)
        return await self.d._mutate(request, "admin-add", add)

    async def _change(self, request: Request) -> Response:
        change = request.path_params["change"]
        if change not in CHANGES:
            raise NotFound("unknown-action", f"action: one of {', '.join(CHANGES)}")

        async def act(s: Session, body: dict[str, Any]) -> dict[str, Any]:
            roster = self.d.require_roster()
            code = request.path_params["agent"]
            now = self.d._clock()
            if change == "skills":
                e = await roster.set_skills(
                    s.code, code, parse_skills(body.get("skills"), self.d.sb.site), now
                )
                self._audit(request, s, "agent-skills", code, _skills_text(e.skills))
            elif change == "password":
                e = await roster.reset_password(s.code, code, text(body, "password", 16), now)
                self._audit(request, s, "agent-password-reset", code)
            else:
                e = await roster.set_enabled(s.code, code, change == "enable", now)
                self._audit(request, s, f"agent-{change}", code)
            return {"agent": self.view(e)}

        self._admin(request)
        return await self.d._mutate(request, f"admin-{change}-{request.path_params['agent']}", act)


def _skills_text(skills: dict[str, int]) -> str:
    return ",".join(f"{g}:{lvl}" for g, lvl in sorted(skills.items()))
