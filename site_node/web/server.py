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
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_fixed

from site_node.audit import SiteAudit
from site_node.callcontrol.domain import Audit, CustomerInfo, Effect, ToAgent
from site_node.grpc_api.credentials import CredentialCheck
from site_node.grpc_api.idempotency import IdempotencyCache
from site_node.links.desk_data import CentralDeskData
from site_node.message_store import MessageStore
from site_node.messaging import Message, MessageBox, check_text
from site_node.person_revocation import DELIVERY_WAIT_S
from site_node.roster import Roster
from site_node.runtime import SiteRuntime
from site_node.web.admin import AdminApi
from site_node.web.console import ConsoleApi
from site_node.web.desk import DeskApi
from site_node.web.desk_data import DeskDataApi
from site_node.web.errors import error_response, internal_error
from site_node.web.presence import Presence
from site_node.web.requests import COOKIE, body_of, choice, key_of, language, origin, sse, text, token
from site_node.web.sessions import IDLE_S, Session, WebSessions
from site_node.web.views import DeskMemory, Views
from site_node.web.voicemail import VoicemailApi
from vcc.config import ProvinceConfig
from vcc.errors import (
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unavailable,
    VccError,
    from_rpc_error,
)
from vcc.https import (
    LANGUAGE_COOKIE,
    LANGUAGE_MAX_AGE_S,
    LANGUAGES,
    WebListener,
    delete_page_cookie,
    set_page_cookie,
)
from vcc.tls import TlsFiles
from vcc.v1 import peer_pb2, peer_pb2_grpc

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
# An open page is pushed its view at least this often (time in state, queue figures).
PUSH_S = 1.0
SWEEP_S = 30.0
# A message to another city's agent: how long its site may take to keep it.
PEER_MESSAGE_S = 3.0
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
Handler = Callable[[Request], Awaitable[Response]]


class DeskServer:
    """start() binds and serves (returns the port); stop() ends the streams and the server."""

    def __init__(
        self,
        province: ProvinceConfig,
        runtime: SiteRuntime,
        audit: SiteAudit,
        credentials: CredentialCheck,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        session_idle_s: float = IDLE_S,
        clock: Callable[[], float] = time.time,
        roster: Roster | None = None,
        desk_data: CentralDeskData | None = None,
        forget_customer: Callable[[list[str]], None] | None = None,
        message_store: MessageStore | None = None,
        recordings: Path | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.province = province
        self.rt = runtime
        self.sb = runtime.sb
        self.audit = audit
        self._host = host
        self._clock = clock
        self.sessions = WebSessions(runtime, credentials, idle_s=session_idle_s, clock=clock)
        # Keys a login's idempotency by its password without keeping a guessable digest of it.
        self._pepper = secrets.token_bytes(32)
        self.views = Views(province, self.sb)
        self.messages = MessageBox(self.sb.agents)
        # Kept on disk (none: in memory only, gone at a restart).
        self.message_store = message_store
        if message_store is not None:
            self.messages.restore(message_store.load())
        self.memory: dict[str, DeskMemory] = {code: DeskMemory() for code in self.sb.agents}
        self._agent_site = {a.code: s.id for s in province.sites for a in s.agents}
        self._once = IdempotencyCache(max_entries=20_000)
        # Open streams: the agents whose events wake each one.
        self._streams: dict[asyncio.Event, frozenset[str]] = {}
        self.presence = Presence(province, self.sb, lambda: bool(self._streams), clock)
        self._closing = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None
        self._templates = Jinja2Templates(directory=str(HERE / "templates"))
        # The site's agents as administrators change them (none: no administration here).
        self.roster = roster
        if roster is not None:
            roster.on_added.append(self._agent_added)
        self.desk = DeskApi(self)
        self.console = ConsoleApi(self)
        self.admin = AdminApi(self)
        self.desk_data = DeskDataApi(self, desk_data)
        # Where the site keeps voicemail audio (the VoicemailService's folder; None: nowhere).
        self.recordings = recordings
        self.voicemail = VoicemailApi(self)
        # The screen pop's cache (site_node.links.customers): an edited record is asked again.
        self._forget_customer = forget_customer
        self.app = self._build()
        # HTTPS only with the site's own certificate when the province has tls (vcc.https).
        self._web = WebListener(self.app, host, port, tls, "desk-http")
        self.port = 0
        runtime.agent_watchers.append(self._on_agent)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> int:
        self.port = await self._web.start()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="desk-sessions")
        self.presence.start()
        log.info("agent desktop on %sdesk", self.url)
        return self.port

    @property
    def url(self) -> str:
        return f"{self._web.scheme}://{self._host}:{self.port}/"

    async def stop(self) -> None:
        self._closing.set()
        for event in self._streams:
            event.set()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.presence.close()
        await self._web.stop()
        with contextlib.suppress(ValueError):
            self.rt.agent_watchers.remove(self._on_agent)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                self.sessions.sweep()
            except VccError as exc:
                log.warning("session sweep: %s", exc)

    def _agent_added(self, code: str) -> None:
        self.memory.setdefault(code, DeskMemory())
        self.messages.add_agent(code)
        self._agent_site[code] = self.sb.site_id

    async def deliver(self, sender: str, to: str, text: str) -> int:
        """A message from an agent of another city to one of ours (SitePeerService.DeliverMessage)."""
        m = self.messages.between_cities(self._clock(), sender, to, text, incoming=True)
        await self.keep(m)
        self._wake(to)
        return m.id

    async def send_elsewhere(self, sender: str, to: str, text: str) -> Message:
        """To an agent of another city: delivered there first (its site keeps it), then kept here."""
        check_text(text)
        site = self._agent_site[to]
        request = peer_pb2.DeliverMessageRequest(
            from_site_id=self.sb.site_id, sender=sender, to=to, text=text, message_key=secrets.token_hex(16)
        )
        stub = peer_pb2_grpc.SitePeerServiceStub(self.presence.channel(site))
        try:
            # Retried once when the site did not answer: the key makes a second delivery the same.
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(2),
                wait=wait_fixed(0.2),
                retry=retry_if_exception(_unavailable),
                reraise=True,
            ):
                with attempt:
                    await stub.DeliverMessage(request, timeout=PEER_MESSAGE_S)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise Unavailable(
                    "site-unavailable", f"site {site} cannot be reached now: try again"
                ) from None
            raise from_rpc_error(exc) from None
        m = self.messages.between_cities(self._clock(), sender, to, text, incoming=False)
        await self.keep(m)
        return m

    async def keep(self, message: Message) -> None:
        if self.message_store is not None:
            await self.message_store.save(message)

    def customers_changed(self, customer: CustomerInfo, phones: list[str]) -> None:
        """A record saved at central from a desk: the live calls and the next screen pops show it."""
        self.rt.do(lambda now: self.sb.customer_edited(now, customer))
        if self._forget_customer is not None:
            self._forget_customer(phones)
        self._wake(*self.sb.agents)

    def require_roster(self) -> Roster:
        if self.roster is None:
            raise FailedPrecondition("no-administration", "this site does not administer its agents here")
        return self.roster

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
                Route("/api/lang", api(self._lang), methods=["POST"]),
                Route("/api/me", api(self.desk._me)),
                Route("/api/stream", api(self._stream)),
                Route("/api/state", api(self.desk._state), methods=["POST"]),
                Route("/api/wrap-up", api(self.desk._wrap_up), methods=["POST"]),
                Route("/api/calls/{call_id}/{action}", api(self.desk._call_action), methods=["POST"]),
                Route(
                    "/api/callbacks/{callback_id}/{answer}",
                    api(self.desk._callback_preview),
                    methods=["POST"],
                ),
                Route("/api/voicemail", api(self.voicemail._list)),
                Route("/api/voicemail/{message_id}/audio", api(self.voicemail._audio)),
                Route("/api/voicemail/{message_id}/{step}", api(self.voicemail._step), methods=["POST"]),
                Route("/api/directory", api(self.desk._directory)),
                Route("/api/messages", api(self.desk._message), methods=["POST"]),
                Route("/api/team", api(self.console._team)),
                Route("/api/team/leave", api(self.console._leave), methods=["POST"]),
                Route("/api/team/broadcast", api(self.console._broadcast), methods=["POST"]),
                Route("/api/team/{agent}/force", api(self.console._force), methods=["POST"]),
                Route("/api/team/{agent}/supervise", api(self.console._supervise), methods=["POST"]),
                Route("/api/audit", api(self.console._audit)),
                Route("/api/customers/{customer_id}", api(self.desk_data._get)),
                Route("/api/customers/{customer_id}", api(self.desk_data._save), methods=["POST"]),
                Route("/api/knowledge", api(self.desk_data._knowledge)),
                Route("/api/admin/agents", api(self.admin._list)),
                Route("/api/admin/agents", api(self.admin._add), methods=["POST"]),
                Route("/api/admin/agents/{agent}/{change}", api(self.admin._change), methods=["POST"]),
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
        presented = token(request)
        s = self.sessions.peek(presented) if presented else None
        action = request.url.path.removeprefix("/api/")
        params = request.path_params
        target = params.get("agent", params.get("call_id", params.get("message_id", "")))
        self.audit.record(
            Audit(self._clock(), s.code if s else "", action, target, outcome="denied", detail=exc.error_id),
            origin=origin(request),
        )

    async def _page(self, request: Request) -> Response:
        page = request.url.path.strip("/")
        return self._templates.TemplateResponse(
            request,
            "desk.html",
            {
                "lang": language(request),
                "page": page,
                "site_id": self.sb.site_id,
                "site_name": self.sb.site.name,
            },
        )

    # -- sessions --------------------------------------------------------------------------------

    def _session(self, request: Request) -> Session:
        return self.sessions.session(token(request))

    def _do(self, request: Request, op: Callable[[float], list[Effect]]) -> None:
        with self.audit.acting_from(origin(request)):
            self.rt.do(op)

    async def _mutate(
        self,
        request: Request,
        scope: str,
        act: Callable[[Session, dict[str, Any]], Awaitable[dict[str, Any]]],
    ) -> Response:
        """A state-changing request of the session's agent, applied once per idempotency key."""
        body = await body_of(request)
        s = self._session(request)
        key = key_of(request, body)
        result = await self._once.once(f"{scope}:{s.code}", key, lambda: act(s, body))
        return JSONResponse(result)

    async def _login(self, request: Request) -> Response:
        body = await body_of(request)
        code = text(body, "agent_code", 8, required=False)
        password = text(body, "password", 16, required=False)

        host = origin(request)

        async def login() -> dict[str, Any]:
            s = await self.sessions.login(code, password, host, f"web:{host}")
            return {"token": s.token, "agent": self.views.agent(self.sb.agents[s.code])}

        # A retry with the same key gets the first answer only with the same password.
        tag = hmac.new(self._pepper, password.encode(), hashlib.sha256).hexdigest()[:32]
        result = await self._once.once(f"login:{code}:{tag}", key_of(request, body), login)
        response = JSONResponse({"agent": result["agent"]})
        set_page_cookie(response, COOKIE, result["token"], secure=self._web.tls is not None)
        return response

    async def _lang(self, request: Request) -> Response:
        """The language toggle, remembered by a cookie the server sets: Secure and HttpOnly like
        the session's (a script's document.cookie can never be HttpOnly)."""
        lang = choice(await body_of(request), "lang", LANGUAGES)
        response = JSONResponse({"lang": lang})
        set_page_cookie(
            response, LANGUAGE_COOKIE, lang, max_age=LANGUAGE_MAX_AGE_S, secure=self._web.tls is not None
        )
        return response

    async def _logout(self, request: Request) -> Response:
        async def logout(s: Session, body: dict[str, Any]) -> dict[str, Any]:
            with self.audit.acting_from(origin(request)):
                self.sessions.logout(s)
            # Central refuses the agent's person assertions once it has the revocation.
            await self.audit.delivered(DELIVERY_WAIT_S)
            return {"logged_out": s.code}

        response = await self._mutate(request, "logout", logout)
        delete_page_cookie(response, COOKIE, secure=self._web.tls is not None)
        return response

    def _reason(self, body: dict[str, Any]) -> str:
        reason = text(body, "reason", 32, required=False)
        if reason not in {r.code for r in self.province.not_ready_reasons}:
            raise InvalidArgument("bad-reason-code", "reason: one of the province's not-ready reasons")
        return reason

    # -- the live stream -------------------------------------------------------------------------

    async def _stream(self, request: Request) -> Response:
        view = request.query_params.get("view", "desk")
        if view not in ("desk", "console"):
            raise InvalidArgument("bad-view", "view: desk or console")
        s = self.console._leader(request) if view == "console" else self._session(request)
        build = self.console.console_view if view == "console" else self.desk.desk_view
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
                        yield sse("ended", {"error": {"id": exc.error_id, "message": exc.message}})
                        return
                    yield sse("view", data)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(PUSH_S):
                            await wake.wait()
            finally:
                self._streams.pop(wake, None)
                self.rt.desk_detached(s.code)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


def _unavailable(exc: BaseException) -> bool:
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.UNAVAILABLE
