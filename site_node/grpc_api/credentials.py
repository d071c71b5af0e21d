"""The one credential check of a site, whichever door an agent logs in by (the CTI gRPC API or the
web desktop): one answer for an unknown code and a wrong password, throttling and lockout per code
and per source (shared by both doors), every attempt audited."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from site_node.audit import SiteAudit
from site_node.grpc_api import auth
from vcc.errors import AlreadyExists, ResourceExhausted, Unauthenticated
from vcc.login_guard import LoginGuard, LoginPolicy

BAD_CREDENTIALS = ("bad-credentials", "agent code or password is wrong")


class CredentialCheck:
    def __init__(
        self,
        hashes: dict[str, str],
        clock: Callable[[], float],
        logged_in: Callable[[str], bool],
        audit: SiteAudit | None = None,
        policy: LoginPolicy | None = None,
    ) -> None:
        self._hashes = hashes
        self._clock = clock
        self._logged_in = logged_in
        self._audit = audit
        self.guard = LoginGuard(policy or LoginPolicy())
        # Agents an administrator disabled: answered like an unknown code.
        self._disabled: set[str] = set()

    def set_hash(self, code: str, password_hash: str, *, enabled: bool = True) -> None:
        """An administrator's change (site_node.roster): in force at the next login, either door."""
        self._hashes[code] = password_hash
        if enabled:
            self._disabled.discard(code)
        else:
            self._disabled.add(code)

    def record(self, actor: str, action: str, **fields: Any) -> None:
        if self._audit is not None:
            self._audit.event(actor, action, **fields)

    def admit(self, code: str, host: str, source: str) -> None:
        """Before the password is looked at: a code or a source that is locked out is refused."""
        refusal = self.guard.refusal(self._clock(), code, host)
        if refusal:
            self.record(
                f"agent:{code}", "login-refused", target=code, source=source, outcome="refused",
                detail={"reason": refusal},
            )  # fmt: skip
            raise ResourceExhausted("too-many-attempts", "too many failed logins: try again later")

    async def verify(self, code: str, password: str, host: str, source: str) -> None:
        """The password of a known code, or one answer for every failure (no enumeration)."""
        known = code in self._hashes and code not in self._disabled
        if known and self._logged_in(code):
            # Answered before the password is checked: the answer says nothing about it.
            raise AlreadyExists("already-logged-in", f"agent {code} is already logged in")
        matches = await auth.password_matches(self._hashes.get(code) or auth.decoy_hash(), password)
        if not (known and matches):
            self.record(f"agent:{code}", "login-failed", target=code, source=source, outcome="refused")
            for lock in self.guard.failed(self._clock(), code, host):
                self.record(
                    f"agent:{code}", "lockout", target=lock.key, source=source, outcome="refused",
                    detail={"kind": lock.kind, "until": f"{lock.until:.0f}"},
                )  # fmt: skip
            raise Unauthenticated(*BAD_CREDENTIALS)
        self.guard.succeeded(code)

    async def check(self, code: str, password: str, host: str, source: str) -> None:
        auth.check_format(code, password)
        self.admit(code, host, source)
        await self.verify(code, password, host, source)
