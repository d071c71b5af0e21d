"""Who may see the operations dashboard: the province's operators (config `operators`, argon2id
hashes, never a password), logged in with a session cookie that expires and is revoked at logout.
The sessions are in central's database (`dashboard_sessions`, only a digest of each token), so
every replica knows them and a leader change keeps them; without a database (unit tests) they
are in this process's memory.

The same rules as an agent's login at a site (vcc.login_guard: throttling and lockout per name and
per source; one answer for an unknown name and a wrong password, an unknown name costing a decoy
hash), each attempt in central's audit log.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from central.audit import AuditEntry
from central.db.engine import writer
from central.db.models import Base
from central.db.session_models import DashboardLoginGuard, DashboardSession
from vcc import people
from vcc.config import OperatorConfig
from vcc.errors import InvalidArgument, PermissionDenied, ResourceExhausted, Unauthenticated
from vcc.login_guard import Lockout, LoginGuard, LoginPolicy, count_failure, limits
from vcc.passwords import decoy_hash, password_matches

IDLE_S = 30 * 60.0
MAX_S = 12 * 3600.0
MAX_LOGIN = 32
MAX_PASSWORD = 64
BAD_CREDENTIALS = ("bad-credentials", "user name or password is wrong")
# A session's last use is written at most this often (a live stream checks it every push).
TOUCH_S = 30.0
SWEEP_S = 60.0


@dataclass
class OperatorSession:
    token: str
    login: str
    role: str
    created_at: float
    seen_at: float


Recorder = Callable[[AuditEntry], Awaitable[None]]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionBook(Protocol):
    """Where live sessions are kept, by the digest of their token."""

    async def get(self, digest: str) -> OperatorSession | None: ...
    async def put(self, digest: str, s: OperatorSession) -> None: ...
    async def touch(self, digest: str, seen_at: float) -> None: ...
    async def delete(self, digest: str) -> bool: ...
    async def sweep(self, idle_before: float, created_before: float) -> None: ...


class MemoryBook:
    def __init__(self) -> None:
        self._by_digest: dict[str, OperatorSession] = {}

    async def get(self, digest: str) -> OperatorSession | None:
        found = self._by_digest.get(digest)
        return replace(found) if found else None

    async def put(self, digest: str, s: OperatorSession) -> None:
        self._by_digest[digest] = replace(s, token="")

    async def touch(self, digest: str, seen_at: float) -> None:
        if digest in self._by_digest:
            self._by_digest[digest].seen_at = seen_at

    async def delete(self, digest: str) -> bool:
        return self._by_digest.pop(digest, None) is not None

    async def sweep(self, idle_before: float, created_before: float) -> None:
        for digest, s in list(self._by_digest.items()):
            if s.seen_at < idle_before or s.created_at < created_before:
                del self._by_digest[digest]


_TABLE = Base.metadata.tables[DashboardSession.__tablename__]


class DatabaseBook:
    """Central's database: every replica reads the same sessions."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # Writes take SQLite's write lock at BEGIN (another replica's writer is waited for, as
        # busy_timeout says, instead of a deferred transaction failing "database is locked").
        self._writer = writer(engine)

    async def get(self, digest: str) -> OperatorSession | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(_TABLE).where(_TABLE.c.token_hash == digest))).first()
        if row is None:
            return None
        return OperatorSession("", row.login, row.role, row.created_at, row.seen_at)

    async def put(self, digest: str, s: OperatorSession) -> None:
        async with self._writer.begin() as conn:
            await conn.execute(
                _TABLE.insert().values(
                    token_hash=digest, login=s.login, role=s.role, created_at=s.created_at, seen_at=s.seen_at
                )
            )

    async def touch(self, digest: str, seen_at: float) -> None:
        async with self._writer.begin() as conn:
            await conn.execute(_TABLE.update().where(_TABLE.c.token_hash == digest).values(seen_at=seen_at))

    async def delete(self, digest: str) -> bool:
        async with self._writer.begin() as conn:
            done = await conn.execute(_TABLE.delete().where(_TABLE.c.token_hash == digest))
        return bool(done.rowcount)

    async def sweep(self, idle_before: float, created_before: float) -> None:
        async with self._writer.begin() as conn:
            await conn.execute(
                _TABLE.delete().where(
                    sa.or_(_TABLE.c.seen_at < idle_before, _TABLE.c.created_at < created_before)
                )
            )


class Guard(Protocol):
    """Failed logins per user name and per source (vcc.login_guard's policy)."""

    policy: LoginPolicy

    async def refusal(self, now: float, login: str, host: str) -> str: ...
    async def failed(self, now: float, login: str, host: str) -> list[Lockout]: ...
    async def succeeded(self, login: str) -> None: ...
    async def sweep(self, now: float) -> None: ...


class MemoryGuard:
    """This process's memory (unit tests without a database)."""

    def __init__(self, policy: LoginPolicy) -> None:
        self.policy = policy
        self._guard = LoginGuard(policy)

    async def refusal(self, now: float, login: str, host: str) -> str:
        return self._guard.refusal(now, login, host)

    async def failed(self, now: float, login: str, host: str) -> list[Lockout]:
        return self._guard.failed(now, login, host)

    async def succeeded(self, login: str) -> None:
        self._guard.succeeded(login)

    async def sweep(self, now: float) -> None:
        return None


_GUARD = Base.metadata.tables[DashboardLoginGuard.__tablename__]


class DatabaseGuard:
    """Central's database: every replica counts the same failures, a leader change forgives none."""

    def __init__(self, engine: AsyncEngine, policy: LoginPolicy) -> None:
        self._engine = engine
        # A failure is read, then written, in one transaction: under a deferred BEGIN, SQLite
        # refuses the write at once ("database is locked", no busy wait) when another replica
        # wrote since the read; BEGIN IMMEDIATE takes the lock first, waiting its busy timeout.
        self._writer = writer(engine)
        self.policy = policy

    async def refusal(self, now: float, login: str, host: str) -> str:
        query = sa.select(_GUARD.c.kind).where(
            _GUARD.c.locked_until > now,
            sa.or_(
                sa.and_(_GUARD.c.kind == "code", _GUARD.c.key == login),
                sa.and_(_GUARD.c.kind == "source", _GUARD.c.key == host),
            ),
        )
        async with self._engine.connect() as conn:
            kinds = set((await conn.execute(query)).scalars())
        return "code-locked" if "code" in kinds else "source-locked" if "source" in kinds else ""

    async def failed(self, now: float, login: str, host: str) -> list[Lockout]:
        out = []
        async with self._writer.begin() as conn:
            for kind, key in (("code", login), ("source", host)):
                where = sa.and_(_GUARD.c.kind == kind, _GUARD.c.key == key)
                row = (await conn.execute(sa.select(_GUARD).where(where).with_for_update())).first()
                before: tuple[float, ...] = tuple(json.loads(row.failures)) if row is not None else ()
                failures, until, locked = count_failure(
                    self.policy, kind, before, row.locked_until if row is not None else 0.0, now
                )
                values = {"failures": json.dumps(failures), "locked_until": until, "changed_at": now}
                if row is None:
                    await conn.execute(_GUARD.insert().values(kind=kind, key=key, **values))
                else:
                    await conn.execute(_GUARD.update().where(where).values(**values))
                if locked:
                    out.append(Lockout(kind, key, until))
        return out

    async def succeeded(self, login: str) -> None:
        """The right password forgives the name's failures (asked only when it is not locked)."""
        async with self._writer.begin() as conn:
            await conn.execute(_GUARD.delete().where(_GUARD.c.kind == "code", _GUARD.c.key == login))

    async def sweep(self, now: float) -> None:
        """Rows whose failures are all out of their window and whose lockout is over."""
        longest = max(max(limits(self.policy, k)[1:]) for k in ("code", "source"))
        async with self._writer.begin() as conn:
            await conn.execute(
                _GUARD.delete().where(_GUARD.c.changed_at < now - longest, _GUARD.c.locked_until <= now)
            )


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
        engine: AsyncEngine | None = None,
    ) -> None:
        self._people = {o.login: o for o in operators}
        self._record = record
        self.idle_s = idle_s
        self.max_s = max_s
        self._clock = clock
        policy = policy or LoginPolicy()
        # In the database with the sessions: a leader change keeps the failures and lockouts.
        self.guard: Guard = DatabaseGuard(engine, policy) if engine is not None else MemoryGuard(policy)
        self._book: SessionBook = DatabaseBook(engine) if engine is not None else MemoryBook()
        self._swept_at = float("-inf")

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
        refusal = await self.guard.refusal(now, login, host)
        if refusal:
            await self._audit(login, "login-refused", source, "refused", reason=refusal)
            raise ResourceExhausted("too-many-attempts", "too many failed logins: try again later")
        person = self._people.get(login)
        matches = await password_matches(person.password_hash if person else decoy_hash(), password)
        if person is None or not matches:
            await self._audit(login, "dashboard-login-failed", source, "refused")
            for lock in await self.guard.failed(self._clock(), login, host):
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
        await self.guard.succeeded(login)
        if not people.may(people.DASHBOARD, person.role):
            await self._audit(login, "dashboard-login", source, "denied", role=person.role)
            raise PermissionDenied("not-an-operator", "your role may not see the dashboard")
        now = self._clock()
        s = OperatorSession(secrets.token_urlsafe(24), login, person.role, now, now)
        await self._book.put(_digest(s.token), s)
        await self._audit(login, "dashboard-login", source, role=person.role)
        return s

    async def session(self, token: str) -> OperatorSession:
        """The live session of `token` (touched), or Unauthenticated."""
        digest = _digest(token)
        s = await self._book.get(digest) if token else None
        if s is None:
            raise Unauthenticated("login-required", "log in to see the dashboard")
        now = self._clock()
        if now - s.seen_at > self.idle_s or now - s.created_at > self.max_s:
            await self._book.delete(digest)
            raise Unauthenticated("session-expired", "your session has expired: log in again")
        if now - s.seen_at >= min(TOUCH_S, self.idle_s / 2):
            await self._book.touch(digest, now)
        return replace(s, token=token, seen_at=now)

    async def logout(self, token: str, host: str) -> str:
        """Revoke the session; the operator's login ("" for a session that was not live)."""
        if not token:
            return ""
        digest = _digest(token)
        s = await self._book.get(digest)
        if s is None or not await self._book.delete(digest):
            return ""
        await self._audit(s.login, "dashboard-logout", f"http:{host}")
        return s.login

    async def sweep(self) -> None:
        """Expired sessions deleted (at most once a minute: the dashboard calls it every sample)."""
        now = self._clock()
        if now - self._swept_at < SWEEP_S:
            return
        self._swept_at = now
        await self._book.sweep(now - self.idle_s, now - self.max_s)
        await self.guard.sweep(now)
