"""The site's agents as administrators change them (SPEC F25): added, disabled, a password reset,
skills and levels changed, in force on the running site at once and kept across a restart.

The province config stays what operators wrote (a shared file every process reads, never
rewritten by a running node); the changes are an overlay kept beside the site's outbox, in its own
SQLite file (`<outbox>-agents.db`: one row per agent changed, its current values), read at start
over the config's agents. The site is where its agents log in and are routed, so it is where the
change must take effect; each change is in the site's audit journal and central's audit log.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from routing.agents import AgentState
from site_node.grpc_api import auth
from site_node.grpc_api.credentials import CredentialCheck
from site_node.runtime import SiteRuntime
from vcc import people
from vcc.config import SiteConfig
from vcc.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    VccError,
)
from vcc.passwords import hash_password

SCHEMA = """
CREATE TABLE IF NOT EXISTS agent_overlay (
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    skills TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    disabled INTEGER NOT NULL,
    added INTEGER NOT NULL,
    changed_at REAL NOT NULL,
    changed_by TEXT NOT NULL
)
"""
MAX_NAME = 64


@dataclass(frozen=True)
class AgentEntry:
    code: str
    name: str
    skills: dict[str, int]
    password_hash: str
    role: str = "agent"
    disabled: bool = False
    # Not in the province config: added by an administrator.
    added: bool = False
    changed_at: float = 0.0
    changed_by: str = ""
    leads: tuple[str, ...] = field(default=())


class RosterStore:
    """The overlay's SQLite file (small, rarely written: each write is its own transaction)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(SCHEMA)
        return conn

    def load(self) -> dict[str, AgentEntry]:
        """At start, before the site serves (blocking is fine then)."""
        conn = self._connect()
        try:
            rows = conn.execute(
                "SELECT code, name, skills, password_hash, role, disabled, added, changed_at, changed_by "
                "FROM agent_overlay"
            ).fetchall()
        finally:
            conn.close()
        return {
            r[0]: AgentEntry(r[0], r[1], json.loads(r[2]), r[3], r[4], bool(r[5]), bool(r[6]), r[7], r[8])
            for r in rows
        }

    async def save(self, e: AgentEntry) -> None:
        def write() -> None:
            conn = self._connect()
            try:
                with conn:
                    conn.execute(
                        "INSERT OR REPLACE INTO agent_overlay VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            e.code, e.name, json.dumps(e.skills, sort_keys=True), e.password_hash, e.role,
                            int(e.disabled), int(e.added), e.changed_at, e.changed_by,
                        ),
                    )  # fmt: skip
            finally:
                conn.close()

        async with self._lock:
            await asyncio.to_thread(write)


def overlay_path(outbox_path: Path) -> Path:
    return outbox_path.with_name(f"{outbox_path.stem}-agents.db")


class Roster:
    """The site's agents: the config's, with the overlay's changes, applied to the running site."""

    def __init__(
        self, site: SiteConfig, runtime: SiteRuntime, credentials: CredentialCheck, store: RosterStore
    ):
        self.site = site
        self.rt = runtime
        self.credentials = credentials
        self.store = store
        self.entries: dict[str, AgentEntry] = {
            a.code: AgentEntry(a.code, a.name, dict(a.skills), a.password_hash, a.role, leads=tuple(a.leads))
            for a in site.agents
        }
        # Hooks of the adapters that keep per-agent state (the web desk's memory): a code added.
        self.on_added: list[Callable[[str], None]] = []

    def apply_overlay(self) -> int:
        """At start: the kept changes over the config (before anyone logs in). How many."""
        kept = self.store.load()
        for code, e in sorted(kept.items()):
            known = self.entries.get(code)
            if known is None:
                if not e.added:
                    continue  # a change to an agent the config no longer has
                self.rt.sb.add_agent(0.0, code, e.skills)
                for hook in self.on_added:
                    hook(code)
            elif known.skills != e.skills:
                self.rt.sb.set_agent_skills(0.0, code, e.skills)
            self.entries[code] = replace(
                e, role=known.role if known else "agent", leads=known.leads if known else ()
            )
            self.credentials.set_hash(code, e.password_hash, enabled=not e.disabled)
        return len(kept)

    # What administrators do ------------------------------------------------------------------

    def entry(self, code: str) -> AgentEntry:
        if not auth.CODE.match(code):
            raise InvalidArgument("bad-agent-code", "agent_code: 4 to 8 digits")
        e = self.entries.get(code)
        if e is None:
            raise NotFound("unknown-agent", f"agent_code: no agent {code!r} at site {self.site.id}")
        return e

    async def add(
        self, admin: str, code: str, name: str, skills: Mapping[str, int], password: str, now: float
    ) -> AgentEntry:
        if not auth.CODE.match(code):
            raise InvalidArgument("bad-agent-code", "agent_code: 4 to 8 digits")
        _check_name(name)
        _check_password(password)
        if code in self.rt.sb.directory.agent_sites or code in self.entries:
            raise AlreadyExists("agent-exists", f"agent {code} already exists in the province")
        hashed = await asyncio.to_thread(hash_password, password)
        e = AgentEntry(code, name, dict(skills), hashed, added=True, changed_at=now, changed_by=admin)
        self.rt.do(lambda t: self.rt.sb.add_agent(t, code, dict(skills)))
        await self._keep(e)
        for hook in self.on_added:
            hook(code)
        return e

    async def set_skills(self, admin: str, code: str, skills: Mapping[str, int], now: float) -> AgentEntry:
        e = self.entry(code)
        self.rt.do(lambda t: self.rt.sb.set_agent_skills(t, code, dict(skills)))
        e = replace(e, skills=dict(skills), changed_at=now, changed_by=admin)
        await self._keep(e)
        return e

    async def reset_password(self, admin: str, code: str, password: str, now: float) -> AgentEntry:
        e = self.entry(code)
        _check_password(password)
        hashed = await asyncio.to_thread(hash_password, password)
        e = replace(e, password_hash=hashed, changed_at=now, changed_by=admin)
        await self._keep(e)
        return e

    async def set_enabled(self, admin: str, code: str, enabled: bool, now: float) -> AgentEntry:
        e = self.entry(code)
        if code == admin and not enabled:
            raise FailedPrecondition("cannot-disable-yourself", "an administrator cannot disable themself")
        e = replace(e, disabled=not enabled, changed_at=now, changed_by=admin)
        await self._keep(e)
        if not enabled:
            self._log_out(admin, code)
        return e

    def _log_out(self, admin: str, code: str) -> None:
        """A disabled agent leaves now when idle; a busy one once the call is over."""
        state = self.rt.sb.agent(code).state
        if state == AgentState.LOGGED_OUT:
            return
        try:
            self.rt.do(lambda t: self.rt.sb.force_logout(t, admin, code))
        except VccError:
            if state in (AgentState.READY, AgentState.NOT_READY):
                self.rt.do(lambda t: self.rt.sb.logout(t, code))

    async def _keep(self, e: AgentEntry) -> None:
        # Durable first: a change the site answered is a change a restart keeps.
        await self.store.save(e)
        self.entries[e.code] = e
        self.credentials.set_hash(e.code, e.password_hash, enabled=not e.disabled)


def parse_skills(value: object, site: SiteConfig) -> dict[str, int]:
    """`{"group": level}` from a request: known groups of this site, levels 1..10."""
    groups = {g.id for g in site.skill_groups}
    if not isinstance(value, dict) or not value:
        raise InvalidArgument("bad-skills", "skills: an object {skill group: level 1-10}, at least one")
    out: dict[str, int] = {}
    for group, level in value.items():
        if group not in groups:
            raise InvalidArgument("unknown-skill-group", f"skills: no skill group {group!r} at this site")
        if not isinstance(level, int) or isinstance(level, bool) or not 1 <= level <= 10:
            raise InvalidArgument("bad-skill-level", f"skills.{group}: a level from 1 to 10")
        out[group] = level
    return out


def check_admin(role: str) -> None:
    people.require(people.ADMINISTER, role, "not-an-administrator", "only an administrator manages agents")


def _check_name(name: str) -> None:
    if len(name) > MAX_NAME:
        raise InvalidArgument("bad-argument", f"name: at most {MAX_NAME} characters")


def _check_password(password: str) -> None:
    if not auth.PASSWORD.match(password):
        raise InvalidArgument("bad-password-format", "password: six digits")
