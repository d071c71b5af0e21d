"""The desktop server of a site node: the agent desktop (`/desk`), the group leader's console
(`/console`) and the HTTP JSON API they use (`/api/...`, documented in the README), with a
server-sent event stream per open page. Starlette on uvicorn, inside the site's event loop.

Every rule is enforced here or below, never only in the page: the acting agent is the session's
(agent A's session cannot name agent B), console actions need a supervisor role and an agent of
the leader's own groups (the call control decides), state-changing requests carry an idempotency
key, and refusals are answered with the gRPC API's error ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from routing.agents import AgentState
from site_node.audit import SiteAudit
from site_node.callcontrol import TransferTarget
from site_node.callcontrol.domain import Audit, Effect, ToAgent
from site_node.callcontrol.limits import check_digits
from site_node.grpc_api.idempotency import IdempotencyCache
from site_node.messaging import MessageBox
from site_node.runtime import SiteRuntime
from site_node.web.errors import error_response, internal_error
from site_node.web.presence import Presence
from site_node.web.sessions import IDLE_S, Session, WebSessions
from site_node.web.views import DeskMemory, Views
from vcc.config import ProvinceConfig
from vcc.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, VccError

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
COOKIE = "vcc_session"
MAX_BODY = 16 * 1024
# An open page is pushed its view at least this often (time in state, queue figures).
PUSH_S = 1.0
SWEEP_S = 30.0
CALL_ACTIONS = (
    "answer",
    "hangup",
    "hold",
    "retrieve",
    "complete",
    "conference",
    "cancel",
    "transfer",
    "digits",
)
SUPERVISE = ("monitor", "whisper", "barge", "intercept")
Handler = Callable[[Request], Awaitable[Response]]


class DeskServer:
    """start() binds and serves (returns the port); stop() ends the streams and the server."""

    def __init__(
        self,
        province: ProvinceConfig,
        runtime: SiteRuntime,
        audit: SiteAudit,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        session_idle_s: float = IDLE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.province = province
        self.rt = runtime
        self.sb = runtime.sb
        self.audit = audit
        self._host = host
        self._port = port
        self._clock = clock
        self.sessions = WebSessions(runtime, idle_s=session_idle_s, clock=clock)
        self.views = Views(province, self.sb)
        self.messages = MessageBox(self.sb.agents)
        self.memory: dict[str, DeskMemory] = {code: DeskMemory() for code in self.sb.agents}
        self._agent_site = {a.code: s.id for s in province.sites for a in s.agents}
        self._once = IdempotencyCache(max_entries=20_000)
        # Open streams: the agents whose events wake each one.
        self._streams: dict[asyncio.Event, frozenset[str]] = {}
        self.presence = Presence(province, self.sb, lambda: bool(self._streams), clock)
        self._closing = asyncio.Event()
        self._server: uvicorn.Server | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.app = self._build()
        self.port = 0
        runtime.agent_watchers.append(self._on_agent)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> int:
        sock = socket.socket(socket.AF_INET6 if ":" in self._host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=2
        )
        self._server = _EmbeddedServer(config)
        self._serve_task = asyncio.create_task(self._server.serve(sockets=[sock]), name="desk-http")
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="desk-sessions")
        self.presence.start()
        while not self._server.started:
            if self._serve_task.done():
                self._serve_task.result()
                raise RuntimeError("the desktop server stopped while starting")
            await asyncio.sleep(0.01)
        log.info("agent desktop on http://%s:%d/desk", self._host, self.port)
        return self.port

    async def stop(self) -> None:
        self._closing.set()
        for event in self._streams:
            event.set()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.presence.close()
        if self._server is not None and self._serve_task is not None:
            self._server.should_exit = True
            await self._serve_task
            self._server = self._serve_task = None
        with contextlib.suppress(ValueError):
            self.rt.agent_watchers.remove(self._on_agent)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                self.sessions.sweep()
            except VccError as exc:
                log.warning("session sweep: %s", exc)

    def _on_agent(self, u: ToAgent) -> None:
        memory = self.memory.get(u.agent_code)
        if memory is not None:
            memory.saw(u)
        self._wake(u.agent_code)

    def _wake(self, *codes: str) -> None:
        for event, interest in self._streams.items():
            if interest.intersection(codes):
                event.set()

    # -- routes ----------------------------------------------------------------------------------

    def _build(self) -> Starlette:
        api = self._api
        return Starlette(
            routes=[
                Route("/", lambda r: RedirectResponse("/desk")),
                Route("/desk", self._page),
                Route("/console", self._page),
                Route("/healthz", lambda r: JSONResponse({"status": "ok"})),
                Route("/api/login", api(self._login), methods=["POST"]),
                Route("/api/logout", api(self._logout), methods=["POST"]),
                Route("/api/me", api(self._me)),
                Route("/api/stream", api(self._stream)),
                Route("/api/state", api(self._state), methods=["POST"]),
                Route("/api/wrap-up", api(self._wrap_up), methods=["POST"]),
                Route("/api/calls/{call_id}/{action}", api(self._call_action), methods=["POST"]),
                Route("/api/directory", api(self._directory)),
                Route("/api/messages", api(self._message), methods=["POST"]),
                Route("/api/team", api(self._team)),
                Route("/api/team/leave", api(self._leave), methods=["POST"]),
                Route("/api/team/broadcast", api(self._broadcast), methods=["POST"]),
                Route("/api/team/{agent}/force", api(self._force), methods=["POST"]),
                Route("/api/team/{agent}/supervise", api(self._supervise), methods=["POST"]),
                Route("/api/audit", api(self._audit)),
                Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
            ]
        )

    def _api(self, handler: Handler) -> Handler:
        """Errors in words: a VccError becomes its status and id, anything else a plain 500."""

        @functools.wraps(handler)
        async def wrapped(request: Request) -> Response:
            try:
                return await handler(request)
            except VccError as exc:
                if isinstance(exc, PermissionDenied):
                    self._audit_denied(request, exc)
                return error_response(exc)
            except Exception:
                log.exception("desk API %s %s failed", request.method, request.url.path)
                return internal_error()

        return wrapped

    def _audit_denied(self, request: Request, exc: VccError) -> None:
        token = _token(request)
        s = self.sessions.peek(token) if token else None
        action = request.url.path.removeprefix("/api/")
        target = request.path_params.get("agent", request.path_params.get("call_id", ""))
        self.audit.record(
            Audit(self._clock(), s.code if s else "", action, target, outcome="denied", detail=exc.error_id),
            origin=_origin(request),
        )

    async def _page(self, request: Request) -> Response:
        page = request.url.path.strip("/")
        return self._templates.TemplateResponse(
            request,
            "desk.html",
            {
                "lang": _language(request),
                "page": page,
                "site_id": self.sb.site_id,
                "site_name": self.sb.site.name,
            },
        )

    # -- sessions --------------------------------------------------------------------------------

    def _session(self, request: Request) -> Session:
        return self.sessions.session(_token(request))

    def _do(self, request: Request, op: Callable[[float], list[Effect]]) -> None:
        with self.audit.acting_from(_origin(request)):
            self.rt.do(op)

    async def _mutate(
        self,
        request: Request,
        scope: str,
        act: Callable[[Session, dict[str, Any]], Awaitable[dict[str, Any]]],
    ) -> Response:
        """A state-changing request of the session's agent, applied once per idempotency key."""
        body = await _body(request)
        s = self._session(request)
        key = _key(request, body)
        result = await self._once.once(f"{scope}:{s.code}", key, lambda: act(s, body))
        return JSONResponse(result)

    async def _login(self, request: Request) -> Response:
        body = await _body(request)
        code = _text(body, "agent_code", 8, required=False)
        password = _text(body, "password", 16, required=False)

        async def login() -> dict[str, Any]:
            s = await self.sessions.login(code, password)
            return {"token": s.token, "agent": self.views.agent(self.sb.agents[s.code])}

        result = await self._once.once(f"login:{code}", _key(request, body), login)
        response = JSONResponse({"agent": result["agent"]})
        response.set_cookie(COOKIE, result["token"], httponly=True, samesite="strict", path="/")
        return response

    async def _logout(self, request: Request) -> Response:
        async def logout(s: Session, body: dict[str, Any]) -> dict[str, Any]:
            with self.audit.acting_from(_origin(request)):
                self.sessions.logout(s)
            return {"logged_out": s.code}

        response = await self._mutate(request, "logout", logout)
        response.delete_cookie(COOKIE, path="/")
        return response

    # -- the desktop -----------------------------------------------------------------------------

    def desk_view(self, s: Session) -> dict[str, Any]:
        now = self._clock()
        code = s.code
        agent = self.sb.agents[code]
        memory = self.memory[code]
        offer = memory.offer
        if agent.state != AgentState.RINGING or offer is None or offer.get("call_id") != agent.call_id:
            offer = None
        return {
            "now": now,
            "view": "desk",
            "site_id": self.sb.site_id,
            "site_name": self.sb.site.name,
            "agent": self.views.agent(agent),
            "offer": offer,
            "call": self.views.current_call(code, now),
            "last_offer": memory.offer,
            "forced": memory.forced,
            "supervision": memory.supervision,
            "transfer": memory.transfer,
            "reasons": self.views.reasons,
            "wrap_up_codes": [
                {"code": r.code, "label": r.label or r.code} for r in self.province.wrap_up_codes
            ],
            "queues": self.views.queues(sorted(self.sb.skills[code]), now),
            "messages": self.views.messages(self.messages.inbox(code)),
            "calls_today": list(memory.calls_today),
            "colleagues": [
                {"code": c, "name": self.views.names.get(c, "")} for c in self.sb.agents if c != code
            ],
        }

    async def _me(self, request: Request) -> Response:
        return JSONResponse(self.desk_view(self._session(request)))

    async def _state(self, request: Request) -> Response:
        async def set_state(s: Session, body: dict[str, Any]) -> dict[str, Any]:
            ready = _choice(body, "state", ("ready", "not_ready")) == "ready"
            reason = "" if ready else self._reason(body)
            self._do(request, lambda now: self.sb.set_ready(now, s.code, ready, reason))
            return {"agent": self.views.agent(self.sb.agents[s.code])}

        return await self._mutate(request, "state", set_state)

    async def _wrap_up(self, request: Request) -> Response:
        async def end(s: Session, body: dict[str, Any]) -> dict[str, Any]:
            ready = _choice(body, "next", ("ready", "not_ready")) == "ready"
            reason = "" if ready else self._reason(body)
            wrap_code = _text(body, "code", 32, required=False)
            if wrap_code and wrap_code not in {r.code for r in self.province.wrap_up_codes}:
                raise InvalidArgument(
                    "bad-wrap-up-code", f"code: not a wrap-up code of the province: {wrap_code!r}"
                )
            note = _text(body, "note", 1000, required=False)
            call_id = self.sb.agents[s.code].call_id
            self._do(request, lambda now: self.sb.end_wrap_up(now, s.code, ready, reason))
            for c in self.memory[s.code].calls_today:
                if c["call_id"] == call_id:
                    c.update(wrap_up_code=wrap_code, note=note)
                    break
            return {"agent": self.views.agent(self.sb.agents[s.code])}

        return await self._mutate(request, "wrapup", end)

    def _reason(self, body: dict[str, Any]) -> str:
        reason = _text(body, "reason", 32, required=False)
        if reason not in {r.code for r in self.province.not_ready_reasons}:
            raise InvalidArgument("bad-reason-code", "reason: one of the province's not-ready reasons")
        return reason

    async def _call_action(self, request: Request) -> Response:
        call_id = request.path_params["call_id"]
        action = request.path_params["action"]
        if action not in CALL_ACTIONS:
            raise NotFound("unknown-action", f"action: one of {', '.join(CALL_ACTIONS)}")
        if not call_id or len(call_id) > 64:
            raise InvalidArgument("bad-call-id", "call_id: required, at most 64 characters")
        sb = self.sb

        async def act(s: Session, body: dict[str, Any]) -> dict[str, Any]:
            code = s.code
            ops: dict[str, Callable[[float], list[Effect]]] = {
                "answer": lambda now: sb.answer(now, code, call_id),
                "hangup": lambda now: sb.agent_hang_up(now, code, call_id),
                "hold": lambda now: sb.hold(now, code, call_id, True),
                "retrieve": lambda now: sb.hold(now, code, call_id, False),
                "complete": lambda now: sb.complete_transfer(now, code, call_id),
                "conference": lambda now: sb.conference(now, code, call_id),
                "cancel": lambda now: sb.cancel_transfer(now, code, call_id),
            }
            if action == "transfer":
                ops["transfer"] = self._transfer_op(code, call_id, body)
            if action == "digits":
                return self._digits(code, call_id, body)
            self._do(request, ops[action])
            return {"agent": self.views.agent(sb.agents[code])}

        return await self._mutate(request, f"call-{action}", act)

    def _transfer_op(self, code: str, call_id: str, body: dict[str, Any]) -> Callable[[float], list[Effect]]:
        kind = _choice(body, "kind", ("blind", "consult"))
        raw = body.get("target")
        if not isinstance(raw, dict):
            raise InvalidArgument(
                "bad-transfer-target", "target: an object with agent_code, skill_group or ivr"
            )
        ivr = raw.get("ivr", False)
        if not isinstance(ivr, bool):
            raise InvalidArgument("bad-transfer-target", "target.ivr: true or false")
        target = TransferTarget(
            _text(raw, "agent_code", 8, required=False, key="target.agent_code"),
            _text(raw, "skill_group", 32, required=False, key="target.skill_group"),
            _text(raw, "site_id", 32, required=False, key="target.site_id"),
            ivr,
        )
        note = _text(body, "note", 500, required=False)
        attached = {"agent_note": note, "agent_note_by": code} if note else {}
        return lambda now: self.sb.transfer(
            now, code, call_id, target, blind=kind == "blind", attached=attached
        )

    def _digits(self, code: str, call_id: str, body: dict[str, Any]) -> dict[str, Any]:
        digits = _text(body, "digits", 32)
        check_digits(digits)
        call = self.sb.calls.get(call_id)
        if call is None:
            raise NotFound("unknown-call", f"call_id: no live call {call_id!r} at site {self.sb.site_id}")
        if call.agent_code != code:
            raise FailedPrecondition("not-your-call", f"call {call_id} is not with agent {code}")
        # The tones go to the caller through the agent's phone and the media engine (the
        # telephony part); the call control has nothing to change.
        log.info("agent %s keypad %s on call %s", code, digits, call_id)
        return {"digits": digits, "call_id": call_id}

    async def _directory(self, request: Request) -> Response:
        self._session(request)
        return JSONResponse({"now": self._clock(), "sites": self.presence.directory()})

    async def _message(self, request: Request) -> Response:
        async def send(s: Session, body: dict[str, Any]) -> dict[str, Any]:
            to = _text(body, "to", 8)
            if to not in self.sb.agents and to in self._agent_site:
                raise NotFound(
                    "unknown-agent",
                    f"to: agent {to} is at {self._agent_site[to]}; messages reach this site's agents",
                )
            m = self.messages.post(self._clock(), s.code, [to], _text(body, "text", 2000, required=False))
            self._wake(s.code, *m.to)
            return {"id": m.id}

        return await self._mutate(request, "message", send)

    # -- the console -----------------------------------------------------------------------------

    def console_view(self, s: Session) -> dict[str, Any]:
        now = self._clock()
        team = self.sb.team(s.code)
        leader = self.sb.agents[s.code]
        led = (
            sorted(self.sb.supervision.leads.get(s.code, frozenset()))
            if s.role == "group_leader"
            else [g.id for g in self.sb.site.skill_groups]
        )
        return {
            "now": now,
            "view": "console",
            "site_id": self.sb.site_id,
            "site_name": self.sb.site.name,
            "agent": self.views.agent(leader),
            "supervising": self.views.supervised(s.code),
            "call": self.views.current_call(s.code, now),
            "team": [self.views.team_member(code, now) for code in team],
            "queues": self.views.queues(led, now),
            "reasons": self.views.reasons,
            "messages": self.views.messages(self.messages.inbox(s.code)),
        }

    def _leader(self, request: Request) -> Session:
        s = self._session(request)
        self.sb.team(s.code)  # not-a-supervisor for an agent
        return s

    def _team_agent(self, leader: Session, agent: str) -> str:
        if agent not in self.sb.agents:
            if agent in self._agent_site:
                raise PermissionDenied(
                    "not-your-team", f"agent {agent} is at {self._agent_site[agent]}, not in a group you lead"
                )
            raise NotFound("unknown-agent", f"agent: no agent {agent!r} in the province")
        self.sb.check_may_supervise(leader.code, agent)
        return agent

    async def _team(self, request: Request) -> Response:
        return JSONResponse(self.console_view(self._leader(request)))

    async def _force(self, request: Request) -> Response:
        async def force(s: Session, body: dict[str, Any]) -> dict[str, Any]:
            agent = self._team_agent(s, request.path_params["agent"])
            action = _choice(body, "action", ("ready", "not_ready", "logout"))
            if action == "logout":
                self._do(request, lambda now: self.sb.force_logout(now, s.code, agent))
            else:
                ready = action == "ready"
                reason = "" if ready else self._reason(body)
                self._do(request, lambda now: self.sb.force_state(now, s.code, agent, ready, reason))
            return {"agent": self.views.team_member(agent, self._clock())}

        self._leader(request)
        return await self._mutate(request, f"force-{request.path_params['agent']}", force)

    async def _supervise(self, request: Request) -> Response:
        async def supervise(s: Session, body: dict[str, Any]) -> dict[str, Any]:
            agent = self._team_agent(s, request.path_params["agent"])
            mode = _choice(body, "mode", SUPERVISE)
            if mode == "intercept":
                self._do(request, lambda now: self.sb.intercept(now, s.code, agent))
            else:
                self._do(request, lambda now: self.sb.supervise(now, s.code, agent, mode))
            return {
                "agent": self.views.team_member(agent, self._clock()),
                "supervising": self.views.supervised(s.code),
            }

        self._leader(request)
        return await self._mutate(request, f"supervise-{request.path_params['agent']}", supervise)

    async def _leave(self, request: Request) -> Response:
        async def leave(s: Session, body: dict[str, Any]) -> dict[str, Any]:
            self._do(request, lambda now: self.sb.leave_supervision(now, s.code))
            return {"supervising": None}

        self._leader(request)
        return await self._mutate(request, "leave", leave)

    async def _broadcast(self, request: Request) -> Response:
        async def broadcast(s: Session, body: dict[str, Any]) -> dict[str, Any]:
            team = self.sb.team(s.code)
            m = self.messages.post(
                self._clock(), s.code, team, _text(body, "text", 2000, required=False), broadcast=True
            )
            self.audit.record(
                Audit(self._clock(), s.code, "broadcast", ",".join(m.to), detail=f"message {m.id}"),
                origin=_origin(request),
            )
            self._wake(s.code, *m.to)
            return {"id": m.id, "to": list(m.to)}

        self._leader(request)
        return await self._mutate(request, "broadcast", broadcast)

    async def _audit(self, request: Request) -> Response:
        s = self._leader(request)
        entries = [e for e in self.audit.entries if s.role == "administrator" or e.actor == s.code][-200:]
        fields = ("at", "actor", "action", "target", "call_id", "detail", "outcome", "origin")
        return JSONResponse({"entries": [{f: getattr(e, f) for f in fields} for e in entries]})

    # -- the live stream -------------------------------------------------------------------------

    async def _stream(self, request: Request) -> Response:
        view = request.query_params.get("view", "desk")
        if view not in ("desk", "console"):
            raise InvalidArgument("bad-view", "view: desk or console")
        s = self._leader(request) if view == "console" else self._session(request)
        build = self.console_view if view == "console" else self.desk_view
        interest = frozenset([s.code, *(self.sb.team(s.code) if view == "console" else [])])
        token = s.token

        async def events() -> AsyncIterator[str]:
            wake = asyncio.Event()
            self._streams[wake] = interest
            # An open page is a desk at work: the agent is not logged out for a missing desk.
            self.rt.desk_attached(s.code)
            try:
                yield "retry: 1000\n\n"
                while not self._closing.is_set():
                    wake.clear()
                    try:
                        data = build(self.sessions.session(token))
                    except VccError as exc:
                        yield _sse("ended", {"error": {"id": exc.error_id, "message": exc.message}})
                        return
                    yield _sse("view", data)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), PUSH_S)
            finally:
                self._streams.pop(wake, None)
                self.rt.desk_detached(s.code)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the site's own handlers decide when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n"


def _token(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.cookies.get(COOKIE, "")


def _origin(request: Request) -> str:
    return request.client.host if request.client else ""


async def _body(request: Request) -> dict[str, Any]:
    if request.method != "POST":
        return {}
    if not request.headers.get("content-type", "").startswith("application/json"):
        # Also what keeps other sites' forms out: a cross-site JSON post needs CORS, never granted.
        raise InvalidArgument("bad-content-type", "send the request body as application/json")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise InvalidArgument("too-large", f"request body: at most {MAX_BODY} bytes")
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise InvalidArgument("too-large", f"request body: at most {MAX_BODY} bytes")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise InvalidArgument("bad-json", "request body: not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidArgument("bad-json", "request body: a JSON object")
    return body


def _key(request: Request, body: dict[str, Any]) -> str:
    key = request.headers.get("idempotency-key") or body.get("idempotency_key", "")
    if not isinstance(key, str):
        raise InvalidArgument("bad-idempotency-key", "idempotency_key: a string")
    return key


def _text(body: dict[str, Any], name: str, max_len: int, *, required: bool = True, key: str = "") -> str:
    value = body.get(name, "")
    key = key or name
    if not isinstance(value, str):
        raise InvalidArgument("bad-argument", f"{key}: a string")
    if required and not value.strip():
        raise InvalidArgument("bad-argument", f"{key}: required")
    if len(value) > max_len:
        raise InvalidArgument("bad-argument", f"{key}: at most {max_len} characters")
    return value


def _choice(body: dict[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    value = body.get(name)
    if value not in allowed:
        raise InvalidArgument("bad-argument", f"{name}: one of {', '.join(allowed)}")
    return str(value)


def _language(request: Request) -> str:
    lang = request.query_params.get("lang") or request.cookies.get("vcc_lang", "")
    if lang in ("zh", "en"):
        return lang
    accept = request.headers.get("accept-language", "").lower()
    return "en" if accept.startswith("en") else "zh"
