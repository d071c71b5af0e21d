"""Desktop sessions of the web pages: the same credential check and duplicate-login refusal as the
gRPC API (site_node.grpc_api.auth and the call control's login), with sessions that expire.

A session ends when it has been idle too long, has lived too long, or when its agent is no longer
logged in (logged out by a supervisor, or by the site after the desk was gone).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from routing.agents import LOGGED_IN_IDLE, AgentState
from site_node.grpc_api import auth
from site_node.grpc_api.credentials import CredentialCheck
from site_node.runtime import SiteRuntime
from vcc.errors import Unauthenticated

IDLE_S = 30 * 60.0
MAX_S = 12 * 3600.0


@dataclass
class Session:
    token: str
    code: str
    role: str
    created_at: float
    seen_at: float


class WebSessions:
    def __init__(
        self,
        runtime: SiteRuntime,
        credentials: CredentialCheck,
        *,
        idle_s: float = IDLE_S,
        max_s: float = MAX_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rt = runtime
        self.credentials = credentials
        self.idle_s = idle_s
        self.max_s = max_s
        self._clock = clock
        self._by_token: dict[str, Session] = {}
        self._by_code: dict[str, str] = {}

    async def login(self, code: str, password: str, host: str, source: str) -> Session:
        # The site's one credential check: the same answers, throttling and audit as over gRPC.
        await self.credentials.check(code, password, host, source)
        # A second login of the same code is refused here (already-logged-in), as over gRPC.
        self.rt.do(lambda now: self.rt.sb.login(now, code))
        self._drop(self._by_code.get(code, ""))
        now = self._clock()
        s = Session(auth.new_session_token(), code, self.rt.sb.supervision.roles.get(code, "agent"), now, now)
        self._by_token[s.token] = s
        self._by_code[code] = s.token
        return s

    def session(self, token: str) -> Session:
        """The live session of `token` (touched), or Unauthenticated."""
        s = self._by_token.get(token)
        if s is None:
            raise Unauthenticated("bad-session", "session: unknown or expired; log in again")
        now = self._clock()
        if now - s.seen_at > self.idle_s or now - s.created_at > self.max_s:
            self.expire(s)
            raise Unauthenticated("session-expired", "session: expired; log in again")
        if self.rt.sb.agent(s.code).state == AgentState.LOGGED_OUT:
            self._drop(s.token)
            raise Unauthenticated("logged-out", "you are logged out; log in again")
        s.seen_at = now
        return s

    def peek(self, token: str) -> Session | None:
        return self._by_token.get(token)

    def logout(self, s: Session) -> None:
        self.rt.do(lambda now: self.rt.sb.logout(now, s.code))
        self._drop(s.token)

    def expire(self, s: Session) -> None:
        """An expired session logs its agent out when idle (a busy agent finishes the call; the
        site logs it out once its desk has been gone for the grace time)."""
        self._drop(s.token)
        if self.rt.sb.agent(s.code).state in LOGGED_IN_IDLE and not self.rt.closed:
            self.rt.do(lambda now: self.rt.sb.logout(now, s.code))

    def sweep(self) -> None:
        now = self._clock()
        for s in list(self._by_token.values()):
            if now - s.seen_at > self.idle_s or now - s.created_at > self.max_s:
                self.expire(s)

    def _drop(self, token: str) -> None:
        s = self._by_token.pop(token, None)
        if s is not None and self._by_code.get(s.code) == token:
            del self._by_code[s.code]
