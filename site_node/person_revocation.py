"""A person's assertions end with their session (issue 11): the site tells central at once.

A person assertion (vcc.person_assertion) lives a few minutes; when the agent's session ends
before that (logged out by themself, a supervisor or the site; disabled by an administrator) the
site records a `person-revoked` audit entry naming the agent. The entry goes to central on the
site's one audit path (journaled, on disk, sent again until acknowledged), and central refuses
every assertion of that agent the site issued before it (central.audit, PersonGate). A logout
waits a moment for central's acknowledgement, so that when it returns the assertion is dead.
"""

from __future__ import annotations

from site_node.audit import SiteAudit
from site_node.callcontrol.domain import ToAgent

REVOKED = "person-revoked"
LOGGED_OUT = "LOGGED_OUT"
# How long a logout waits for central to take the revocation (central away: the entry waits on
# disk, and the assertion dies at its own expiry at the latest).
DELIVERY_WAIT_S = 2.0


class PersonRevocation:
    def __init__(self, site_id: str, audit: SiteAudit) -> None:
        self._site = site_id
        self._audit = audit

    def revoke(self, code: str, cause: str) -> None:
        self._audit.event(f"site/{self._site}", REVOKED, target=code, detail={"cause": cause})

    def to_agent(self, fx: ToAgent) -> None:
        """The call control's agent events: every way an agent leaves ends in LOGGED_OUT."""
        if fx.kind == "state" and fx.state == LOGGED_OUT:
            self.revoke(fx.agent_code, fx.event or "logged-out")

    async def delivered(self) -> bool:
        """Whether central took every revocation recorded so far (waits DELIVERY_WAIT_S at most)."""
        return await self._audit.delivered(DELIVERY_WAIT_S)
