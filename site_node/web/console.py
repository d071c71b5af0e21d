"""The group leader's console: the team live and the supervisor's actions, over the desktop
server's API (`/api/team...`, `/api/audit`). Who may act on whom is the call control's decision;
this adds the province-wide view (an agent of another city is not the leader's) and the audit of
broadcasts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from site_node.callcontrol.domain import Audit
from site_node.web.requests import choice, origin, text
from site_node.web.sessions import Session
from vcc.errors import NotFound, PermissionDenied

if TYPE_CHECKING:
    from site_node.web.server import DeskServer

SUPERVISE = ("monitor", "whisper", "barge", "intercept")


class ConsoleApi:
    def __init__(self, desk: DeskServer) -> None:
        self.d = desk

    def console_view(self, s: Session) -> dict[str, Any]:
        now = self.d._clock()
        team = self.d.sb.team(s.code)
        leader = self.d.sb.agents[s.code]
        led = (
            sorted(self.d.sb.supervision.leads.get(s.code, frozenset()))
            if s.role == "group_leader"
            else [g.id for g in self.d.sb.site.skill_groups]
        )
        return {
            "now": now,
            "view": "console",
            "site_id": self.d.sb.site_id,
            "site_name": self.d.sb.site.name,
            "agent": self.d.views.agent(leader),
            "supervising": self.d.views.supervised(s.code),
            "call": self.d.views.current_call(s.code, now),
            "team": [self.d.views.team_member(code, now) for code in team],
            "queues": self.d.views.queues(led, now),
            "reasons": self.d.views.reasons,
            "messages": self.d.views.messages(self.d.messages.inbox(s.code)),
            # The administrator's "Agents" card (site_node.web.admin).
            "agents": self.d.admin.agents_view() if s.role == "administrator" else None,
        }

    def _leader(self, request: Request) -> Session:
        s = self.d._session(request)
        self.d.sb.team(s.code)  # not-a-supervisor for an agent
        return s

    def _team_agent(self, leader: Session, agent: str) -> str:
        if agent not in self.d.sb.agents:
            if agent in self.d._agent_site:
                raise PermissionDenied(
                    "not-your-team",
                    f"agent {agent} is at {self.d._agent_site[agent]}, not in a group you lead",
                )
            raise NotFound("unknown-agent", f"agent: no agent {agent!r} in the province")
        self.d.sb.check_may_supervise(leader.code, agent)
        return agent

    async def _team(self, request: Request) -> Response:
        return JSONResponse(self.console_view(self._leader(request)))

    async def _force(self, request: Request) -> Response:
        async def force(s: Session, body: dict[str, Any]) -> dict[str, Any]:
            agent = self._team_agent(s, request.path_params["agent"])
            action = choice(body, "action", ("ready", "not_ready", "logout"))
            if action == "logout":
                self.d._do(request, lambda now: self.d.sb.force_logout(now, s.code, agent))
            else:
                ready = action == "ready"
                reason = "" if ready else self.d._reason(body)
                self.d._do(request, lambda now: self.d.sb.force_state(now, s.code, agent, ready, reason))
            return {"agent": self.d.views.team_member(agent, self.d._clock())}

        self._leader(request)
        return await self.d._mutate(request, f"force-{request.path_params['agent']}", force)

    async def _supervise(self, request: Request) -> Response:
        async def supervise(s: Session, body: dict[str, Any]) -> dict[str, Any]:
            agent = self._team_agent(s, request.path_params["agent"])
            mode = choice(body, "mode", SUPERVISE)
            if mode == "intercept":
                self.d._do(request, lambda now: self.d.sb.intercept(now, s.code, agent))
            else:
                self.d._do(request, lambda now: self.d.sb.supervise(now, s.code, agent, mode))
            return {
                "agent": self.d.views.team_member(agent, self.d._clock()),
                "supervising": self.d.views.supervised(s.code),
            }

        self._leader(request)
        return await self.d._mutate(request, f"supervise-{request.path_params['agent']}", supervise)

    async def _leave(self, request: Request) -> Response:
        async def leave(s: Session, body: dict[str, Any]) -> dict[str, Any]:
            self.d._do(request, lambda now: self.d.sb.leave_supervision(now, s.code))
            return {"supervising": None}

        self._leader(request)
        return await self.d._mutate(request, "leave", leave)

    async def _broadcast(self, request: Request) -> Response:
        async def broadcast(s: Session, body: dict[str, Any]) -> dict[str, Any]:
            team = self.d.sb.team(s.code)
            m = self.d.messages.post(
                self.d._clock(), s.code, team, text(body, "text", 2000, required=False), broadcast=True
            )
            await self.d.keep(m)
            self.d.audit.record(
                Audit(self.d._clock(), s.code, "broadcast", ",".join(m.to), detail=f"message {m.id}"),
                origin=origin(request),
            )
            self.d._wake(s.code, *m.to)
            return {"id": m.id, "to": list(m.to)}

        self._leader(request)
        return await self.d._mutate(request, "broadcast", broadcast)

    async def _audit(self, request: Request) -> Response:
        s = self._leader(request)
        entries = [e for e in self.d.audit.entries if s.role == "administrator" or e.actor == s.code][-200:]
        fields = ("at", "actor", "action", "target", "call_id", "detail", "outcome", "origin")
        return JSONResponse({"entries": [{f: getattr(e, f) for f in fields} for e in entries]})
