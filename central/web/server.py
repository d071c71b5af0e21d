"""The operations dashboard: a starlette app served by uvicorn inside central's event loop.

Pages (one HTML shell, drawn by static/dashboard.js): `/` the province, `/site/{id}` a city,
`/site/{id}/skill/{skill}` a skill group, `/report` the interval report. JSON API (also used by
`vcc stats`):

Everything but `/login`, `/healthz` and `/static` needs an operator's session (central.web.login:
the config's `operators`, role operations or administrator): a page without one is sent to
`/login`, an API call answers 401 `{"error": "login-required"}`.

- `GET /login`, `POST /login` (form: user, password, next) → the session cookie `vcc_ops`;
  `POST /logout` ends it; `POST /api/login` (JSON `{"user", "password"}`) and `POST /api/logout`
  the same for tools (`vcc stats`)
- `GET /healthz` → `{"status": "ok"}`
- `GET /api/live` → the real-time snapshot (central.stats.realtime.snapshot)
- `GET /api/stream[?deltas=0]` → the same snapshot as server-sent events: whole first, then only
  its changes (central.web.live_stream), on each change and at least every `push_interval_s`
- `GET /api/history[?site=ID]` → samples of the last hours (calls waiting, agents ready/busy,
  status) and the 15-minute intervals of the last hours, for the charts
- `GET /api/intervals?date=YYYY-MM-DD&length=900|86400&level=...&days=N` → interval rows
  (`level` may repeat; default all levels); `/api/intervals.csv` the same as CSV
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import io
import json
import logging
import time
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from central.stats.intervals import DAY_S, INTERVAL_S, CallFacts, IntervalRow, Level, StatsPolicy
from central.stats.realtime import LiveSource, display_status, snapshot
from central.web.live_stream import LiveFeed, wants_deltas
from central.web.login import OperatorSession, OperatorSessions
from central.web.tickets_view import TicketReport, ticket_routes
from vcc.digits import is_digits
from vcc.errors import InvalidArgument, PermissionDenied, ResourceExhausted, Unauthenticated, VccError
from vcc.https import (
    LANGUAGE_COOKIE,
    LANGUAGE_MAX_AGE_S,
    LANGUAGES,
    WebListener,
    delete_page_cookie,
    set_page_cookie,
)
from vcc.tls import TlsFiles

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
CSV_COLUMNS = [
    "level",
    "key",
    "start_local",
    "length_s",
    "offered",
    "answered",
    "abandoned",
    "short_abandoned",
    "blocked",
    "failed",
    "in_progress",
    "answered_in_sl",
    "service_level",
    "abandon_rate",
    "asa_s",
    "aht_s",
    "transfers",
    "overflow_in",
    "overflow_out",
]
MAX_REPORT_DAYS = 31
COOKIE = "vcc_ops"
MAX_FORM_BYTES = 4096
_HTTP_STATUS = {
    InvalidArgument: 400,
    Unauthenticated: 401,
    PermissionDenied: 403,
    ResourceExhausted: 429,
}
_MESSAGES_ZH = {
    "bad-credentials": "用户名或密码错误",
    "too-many-attempts": "登录失败次数过多，请稍后再试",
    "not-an-operator": "您的角色无权查看运营监控",
    "bad-user": "用户名：1 至 32 个字符",
    "bad-password-format": "密码：1 至 64 个字符",
    "login-required": "请先登录",
    "session-expired": "会话已过期，请重新登录",
}
Endpoint = Callable[[Request], Awaitable[Response]]


class RecordsSource(Protocol):
    """What the dashboard reads of the call records (central.stats.service.StatsService)."""

    policy: StatsPolicy

    async def today(self) -> tuple[list[CallFacts], float]: ...

    async def intervals(
        self, start: float, end: float, length_s: int = INTERVAL_S, levels: Sequence[Level] = ...
    ) -> list[IntervalRow]: ...


@dataclass(frozen=True)
class Sample:
    at: float
    site_id: str
    status: str
    calls_waiting: int | None
    agents_ready: int | None
    agents_busy: int | None


class Dashboard:
    """start() binds and serves (returns the port); stop() ends the streams and the server."""

    def __init__(
        self,
        live: LiveSource,
        records: RecordsSource,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        province_name: str = "",
        clock: Callable[[], float] = time.time,
        push_interval_s: float = 0.5,
        sample_every_s: float = 10.0,
        history_s: float = 4 * 3600.0,
        tickets: TicketReport | None = None,
        operators: OperatorSessions,
        tls: TlsFiles | None = None,
    ) -> None:
        self._live = live
        # Who may look (deny by default: no operators in the config, nobody gets in).
        self.operators = operators
        self._records = records
        # The service desk's report, for the tickets view (none: no view).
        self._tickets = tickets
        self._host = host
        self._province_name = province_name
        self._clock = clock
        self._push_interval_s = push_interval_s
        self._sample_every_s = sample_every_s
        self._samples: deque[Sample] = deque(maxlen=max(1, int(history_s / sample_every_s)) * 64)
        self._history_s = history_s
        self._snapshot: tuple[float, dict[str, Any]] | None = None
        self._snapshot_mark: tuple[tuple[str, int, str], ...] = ()
        self._snapshot_lock = asyncio.Lock()
        self._closing = asyncio.Event()
        self._sampler: asyncio.Task[None] | None = None
        self._templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.app = self._build()
        # HTTPS only with the replica's own certificate when the province has tls (vcc.https).
        self._web = WebListener(self.app, host, port, tls, "dashboard-http")
        self.port = 0
        self._feed = LiveFeed(self.live_snapshot, self.live_mark, clock, push_interval_s, self._closing)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> int:
        self.port = await self._web.start()
        self._sampler = asyncio.create_task(self._sample_forever(), name="dashboard-sampler")
        log.info("dashboard on %s", self.url)
        return self.port

    @property
    def url(self) -> str:
        return f"{self._web.scheme}://{self._host}:{self.port}/"

    async def stop(self) -> None:
        self._closing.set()
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None
        await self._web.stop()

    # -- data ------------------------------------------------------------------------------------

    async def live_snapshot(self) -> dict[str, Any]:
        """The real-time snapshot, shared by every client until the live state changes (or for a
        fraction of the push interval, so that ages keep moving)."""
        async with self._snapshot_lock:
            now = self._clock()
            mark = self.live_mark(now)
            if (
                self._snapshot is None
                or mark != self._snapshot_mark
                or now - self._snapshot[0] >= self._push_interval_s / 2
            ):
                calls, records_age = await self._records.today()
                data = snapshot(self._live.sites(now), calls, self._records.policy, now, records_age)
                data["province"]["name"] = self._province_name
                self._snapshot = (now, data)
                self._snapshot_mark = mark
            return self._snapshot[1]

    def live_mark(self, now: float) -> tuple[tuple[str, int, str], ...]:
        """Changes whenever a site sends a new state or its status changes (cheap to compute)."""
        return tuple(
            (
                v.site_id,
                v.summary.updated_at.ToNanoseconds() if v.summary is not None else 0,
                display_status(v),
            )
            for v in self._live.sites(now)
        )

    def sample(self, now: float) -> None:
        """Keep one history sample per site (the charts' live series)."""
        for v in self._live.sites(now):
            status = display_status(v)
            s = v.summary if status != "down" else None
            if s is None:
                self._samples.append(Sample(now, v.site_id, status, None, None, None))
                continue
            agents = dict(s.agents_by_state)
            busy = sum(agents.get(k, 0) for k in ("RINGING", "TALKING", "HELD", "WRAP_UP"))
            self._samples.append(
                Sample(now, v.site_id, status, s.calls_waiting, agents.get("READY", 0), busy)
            )

    async def _sample_forever(self) -> None:
        while True:
            try:
                self.sample(self._clock())
                await self.operators.sweep()
            except Exception as exc:
                log.warning("dashboard sample failed: %s", exc)
            await asyncio.sleep(self._sample_every_s)

    # -- HTTP ------------------------------------------------------------------------------------

    def _build(self) -> Starlette:
        g = self._guarded
        tickets = ticket_routes(self._tickets, self._clock, self._templates) if self._tickets else []
        return Starlette(
            routes=[
                Route("/login", self._login_page, methods=["GET", "POST"]),
                Route("/logout", self._logout, methods=["POST"]),
                Route("/api/login", self._api_login, methods=["POST"]),
                Route("/api/logout", self._logout, methods=["POST"]),
                Route("/api/lang", self._api_lang, methods=["POST"]),
                Route("/", g(self._page)),
                Route("/site/{site_id}", g(self._page)),
                Route("/site/{site_id}/skill/{skill}", g(self._page)),
                Route("/report", g(self._page)),
                Route("/healthz", self._health),
                Route("/api/live", g(self._api_live)),
                Route("/api/stream", g(self._api_stream)),
                Route("/api/history", g(self._api_history)),
                Route("/api/intervals", g(self._api_intervals)),
                Route("/api/intervals.csv", g(self._api_intervals_csv)),
                *(Route(r.path, g(r.endpoint)) for r in tickets),
                Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
            ]
        )

    # -- who may look ----------------------------------------------------------------------------

    def _guarded(self, endpoint: Endpoint) -> Endpoint:
        """The endpoint for a live operator's session only: a page sends the browser to the login,
        an API call answers 401 in words."""

        async def guarded(request: Request) -> Response:
            try:
                request.state.operator = await self.operators.session(request.cookies.get(COOKIE, ""))
            except VccError as exc:
                if request.url.path.startswith("/api/"):
                    return _error_json(exc)
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                query = urllib.parse.urlencode({"next": target, "lang": _language(request)})
                return RedirectResponse(f"/login?{query}", status_code=303)
            return await endpoint(request)

        return guarded

    async def _login_page(self, request: Request) -> Response:
        lang = _language(request)
        if request.method == "GET":
            return self._login_form(request, lang, _safe_next(request.query_params.get("next", "")))
        form = await _form(request)
        user, nxt = form.get("user", ""), _safe_next(form.get("next", ""))
        try:
            s = await self.operators.login(user, form.get("password", ""), _host(request))
        except VccError as exc:
            return self._login_form(request, lang, nxt, user=user, error=exc)
        response = RedirectResponse(nxt, status_code=303)
        self._set_cookie(response, s)
        return response

    def _login_form(
        self, request: Request, lang: str, nxt: str, *, user: str = "", error: VccError | None = None
    ) -> Response:
        message = ""
        if error is not None:
            message = error.message if lang == "en" else _MESSAGES_ZH.get(error.error_id, error.message)
        return self._templates.TemplateResponse(
            request,
            "login.html",
            {"lang": lang, "province_name": self._province_name, "next": nxt, "user": user, "error": message},
            status_code=_status(error) if error is not None else 200,
        )

    async def _api_login(self, request: Request) -> Response:
        try:
            try:
                body = json.loads(await _limited_body(request))
            except ValueError:
                raise InvalidArgument("bad-body", "the body: a JSON object {user, password}") from None
            if not isinstance(body, dict) or not all(
                isinstance(body.get(k, ""), str) for k in ("user", "password")
            ):
                raise InvalidArgument("bad-body", "the body: a JSON object {user, password}")
            s = await self.operators.login(body.get("user", ""), body.get("password", ""), _host(request))
        except VccError as exc:
            return _error_json(exc)
        response = JSONResponse({"user": s.login, "role": s.role})
        self._set_cookie(response, s)
        return response

    async def _logout(self, request: Request) -> Response:
        await self.operators.logout(request.cookies.get(COOKIE, ""), _host(request))
        response: Response
        if request.url.path.startswith("/api/"):
            response = JSONResponse({"logged_out": True})
        else:
            response = RedirectResponse(f"/login?lang={_language(request)}", status_code=303)
        delete_page_cookie(response, COOKIE, secure=self._web.tls is not None)
        return response

    def _set_cookie(self, response: Response, s: OperatorSession) -> None:
        set_page_cookie(
            response, COOKIE, s.token, max_age=int(self.operators.max_s), secure=self._web.tls is not None
        )

    async def _api_lang(self, request: Request) -> Response:
        """The language toggle: the page's language remembered by a cookie the server sets (so it
        is Secure and HttpOnly like the session's; a script's document.cookie could be neither).
        JSON only: a cross-site form cannot post it, and a cross-site script needs CORS (never)."""
        try:
            if not request.headers.get("content-type", "").startswith("application/json"):
                raise InvalidArgument("bad-content-type", "the body: application/json {lang}")
            try:
                body = json.loads(await _limited_body(request))
            except ValueError:
                raise InvalidArgument("bad-body", "the body: a JSON object {lang}") from None
            lang = body.get("lang") if isinstance(body, dict) else None
            if lang not in LANGUAGES:
                raise InvalidArgument("bad-language", f"lang: one of {', '.join(LANGUAGES)}")
        except VccError as exc:
            return _error_json(exc)
        response = JSONResponse({"lang": lang})
        set_page_cookie(
            response, LANGUAGE_COOKIE, lang, max_age=LANGUAGE_MAX_AGE_S, secure=self._web.tls is not None
        )
        return response

    async def _page(self, request: Request) -> Response:
        lang = _language(request)
        return self._templates.TemplateResponse(
            request,
            "index.html",
            {
                "lang": lang,
                "province_name": self._province_name,
                "site_id": request.path_params.get("site_id", ""),
                "skill": request.path_params.get("skill", ""),
                "view": _view(request),
                "operator": request.state.operator.login,
            },
        )

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _api_live(self, request: Request) -> Response:
        return JSONResponse(await self.live_snapshot())

    async def _api_stream(self, request: Request) -> Response:
        try:
            deltas = wants_deltas(request.query_params.get("deltas"))
        except VccError as exc:
            return _error_json(exc)
        token = request.cookies.get(COOKIE, "")

        async def still_allowed() -> None:
            await self.operators.session(token)

        return StreamingResponse(
            self._feed.events(still_allowed, deltas),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _api_history(self, request: Request) -> Response:
        site_id = request.query_params.get("site", "")
        now = self._clock()
        since = now - self._history_s
        samples = [
            {
                "at": s.at,
                "site_id": s.site_id,
                "status": s.status,
                "calls_waiting": s.calls_waiting,
                "agents_ready": s.agents_ready,
                "agents_busy": s.agents_busy,
            }
            for s in self._samples
            if s.at >= since and (not site_id or s.site_id == site_id)
        ]
        level = Level.ENTRY_SITE if site_id else Level.PROVINCE
        rows = await self._records.intervals(since, now + 1, INTERVAL_S, [level])
        intervals = [r.as_dict() for r in rows if not site_id or r.key == site_id]
        return JSONResponse({"now": now, "samples": samples, "intervals": intervals})

    async def _report_rows(self, request: Request) -> list[IntervalRow] | Response:
        q = request.query_params
        policy = self._records.policy
        try:
            # ASCII digits only: int() also reads full-width ones (`?days=%EF%BC%91` is not 1).
            length = _whole(q.get("length", str(INTERVAL_S)), "length: 900 or 86400")
            if length not in (INTERVAL_S, DAY_S):
                raise ValueError("length: 900 or 86400")
            days = _whole(q.get("days", "1"), f"days: 1 to {MAX_REPORT_DAYS}")
            if not 1 <= days <= MAX_REPORT_DAYS:
                raise ValueError(f"days: 1 to {MAX_REPORT_DAYS}")
            levels = [Level(v) for v in q.getlist("level")] or list(Level)
            date = q.get("date") or _local_date(self._clock(), policy.utc_offset_s)
            start = _local_midnight(date, policy.utc_offset_s)
        except ValueError as exc:
            return JSONResponse({"error": "invalid-argument", "detail": str(exc)}, status_code=400)
        return await self._records.intervals(start, start + days * DAY_S, length, levels)

    async def _api_intervals(self, request: Request) -> Response:
        rows = await self._report_rows(request)
        if isinstance(rows, Response):
            return rows
        offset = self._records.policy.utc_offset_s
        return JSONResponse(
            {"rows": [{**r.as_dict(), "start_local": _local_time(r.start, offset)} for r in rows]}
        )

    async def _api_intervals_csv(self, request: Request) -> Response:
        rows = await self._report_rows(request)
        if isinstance(rows, Response):
            return rows
        offset = self._records.policy.utc_offset_s
        out = io.StringIO()
        writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r.as_dict(), "start_local": _local_time(r.start, offset)})
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="vcc-intervals.csv"'},
        )


def _language(request: Request) -> str:
    lang = request.query_params.get("lang") or request.cookies.get(LANGUAGE_COOKIE, "")
    if lang in LANGUAGES:
        return lang
    accept = request.headers.get("accept-language", "").lower()
    return "en" if accept.startswith("en") else "zh"


def _status(exc: VccError) -> int:
    return next((code for cls, code in _HTTP_STATUS.items() if isinstance(exc, cls)), 400)


def _error_json(exc: VccError) -> Response:
    return JSONResponse({"error": exc.error_id, "detail": exc.message}, status_code=_status(exc))


def _host(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def _safe_next(target: str) -> str:
    """Only a path of this dashboard (never another site: no open redirect)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target or len(target) > 512:
        return "/"
    return target


async def _limited_body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise InvalidArgument("body-too-large", f"the body: at most {MAX_FORM_BYTES} bytes")
    return body


async def _form(request: Request) -> dict[str, str]:
    """An url-encoded form (starlette's own form parser needs python-multipart)."""
    try:
        raw = (await _limited_body(request)).decode("utf-8")
    except (InvalidArgument, UnicodeDecodeError):
        return {}
    return {k: v[0] for k, v in urllib.parse.parse_qs(raw, keep_blank_values=True).items() if v}


def _view(request: Request) -> str:
    if "skill" in request.path_params:
        return "skill"
    if "site_id" in request.path_params:
        return "site"
    return "report" if request.url.path == "/report" else "province"


def _whole(text: str, rule: str) -> int:
    if not is_digits(text):
        raise ValueError(rule)
    return int(text)


def _local_midnight(date: str, utc_offset_s: int) -> float:
    day = dt.date.fromisoformat(date)
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() - utc_offset_s


def _local_date(now: float, utc_offset_s: int) -> str:
    return dt.datetime.fromtimestamp(now + utc_offset_s, dt.UTC).date().isoformat()


def _local_time(at: float, utc_offset_s: int) -> str:
    return dt.datetime.fromtimestamp(at + utc_offset_s, dt.UTC).strftime("%Y-%m-%d %H:%M")
