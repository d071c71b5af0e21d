"""Who may see the operations dashboard: the province's operators (config `operators`, argon2id
hashes, never a password), logged in with a session cookie that expires and is revoked at logout.

The same rules as an agent's login at a site (vcc.login_guard: throttling and lockout per name and
per source; one answer for an unknown name and a wrong password, an unknown name costing a decoy
hash), each attempt in central's audit log.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from central.audit import AuditEntry
from vcc import people
from vcc.config import OperatorConfig
from vcc.errors import InvalidArgument, PermissionDenied, ResourceExhausted, Unauthenticated
from vcc.login_guard import LoginGuard, LoginPolicy
from vcc.passwords import decoy_hash, password_matches

IDLE_S = 30 * 60.0
MAX_S = 12 * 3600.0
MAX_LOGIN = 32
MAX_PASSWORD = 64
BAD_CREDENTIALS = ("bad-credentials", "user name or password is wrong")


@dataclass
class OperatorSession:
    token: str
    login: str
    role: str
    created_at: float
    seen_at: float


Recorder = Callable[[AuditEntry], Awaitable[None]]


class OperatorSessions:
    def __init__(
        self,
        operators: Sequence[OperatorConfig],
        record: Recorder | None = None,
        *,
        idle_s: float = IDLE_S,
        max_s: float = MAX_S,
        policy: LoginPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._people = {o.login: o for o in operators}
        self._record = record
        self.idle_s = idle_s
        self.max_s = max_s
        self._clock = clock
        self.guard = LoginGuard(policy or LoginPolicy())
        self._by_token: dict[str, OperatorSession] = {}

    async def _audit(self, actor: str, action: str, source: str, outcome: str = "ok", **detail: str) -> None:
        if self._record is not None:
            await self._record(
                AuditEntry(
                    at=self._clock(),
                    actor=f"operator:{actor}"[:128],
                    action=action,
                    target="dashboard",
                    source=source,
                    outcome=outcome,
                    detail=dict(detail),
                )
            )

    async def login(self, login: str, password: str, host: str) -> OperatorSession:
        if not login or len(login) > MAX_LOGIN:
            raise InvalidArgument("bad-user", f"user name: 1 to {MAX_LOGIN} characters")
        if not password or len(password) > MAX_PASSWORD:
            raise InvalidArgument("bad-password-format", f"password: 1 to {MAX_PASSWORD} characters")
        source = f"http:{host}"
        now = self._clock()
        refusal = self.guard.refusal(now, login, host)
        if refusal:
            await self._audit(login, "login-refused", source, "refused", reason=refusal)
            raise ResourceExhausted("too-many-attempts", "too many failed logins: try again later")
        person = self._people.get(login)
        matches = await password_matches(person.password_hash if person else decoy_hash(), password)
        if person is None or not matches:
            await self._audit(login, "dashboard-login-failed", source, "refused")
            for lock in self.guard.failed(self._clock(), login, host):
                await self._audit(
                    login,
                    "lockout",
                    source,
                    "refused",
                    kind=lock.kind,
                    key=lock.key,
                    until=f"{lock.until:.0f}",
                )
            raise Unauthenticated(*BAD_CREDENTIALS)
        self.guard.succeeded(login)
        if not people.may(people.DASHBOARD, person.role):
            await self._audit(login, "dashboard-login", source, "denied", role=person.role)
            raise PermissionDenied("not-an-operator", "your role may not see the dashboard")
        now = self._clock()
        s = OperatorSession(secrets.token_urlsafe(24), login, person.role, now, now)
        self._by_token[s.token] = s
        await self._audit(login, "dashboard-login", source, role=person.role)
        return s

    def session(self, token: str) -> OperatorSession:
        """The live session of `token` (touched), or Unauthenticated."""
        s = self._by_token.get(token) if token else None
        if s is None:
            raise Unauthenticated("login-required", "log in to see the dashboard")
        now = self._clock()
        if now - s.seen_at > self.idle_s or now - s.created_at > self.max_s:
            del self._by_token[token]
            raise Unauthenticated("session-expired", "your session has expired: log in again")
        s.seen_at = now
        return s

    async def logout(self, token: str, host: str) -> str:
        """Revoke the session; the operator's login ("" for a session that was not live)."""
        s = self._by_token.pop(token, None) if token else None
        if s is None:
            return ""
        await self._audit(s.login, "dashboard-logout", f"http:{host}")
        return s.login

    def sweep(self) -> None:
        now = self._clock()
        for s in list(self._by_token.values()):
            if now - s.seen_at > self.idle_s or now - s.created_at > self.max_s:
                self._by_token.pop(s.token, None)
