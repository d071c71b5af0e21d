"""Where transfer targets are: every agent's site and every site's skill groups, as this site
knows the province."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from vcc.errors import InvalidArgument, NotFound


@dataclass(frozen=True, slots=True)
class TransferTarget:
    """Exactly one of: an agent code, a skill group (with a site, or here), the IVR."""

    agent_code: str = ""
    skill_group: str = ""
    site_id: str = ""
    ivr: bool = False
    # With `ivr`: a temporary transfer to this flow; the caller comes back to the agent (F9).
    flow_id: str = ""

    def describe(self, site: str) -> str:
        if self.ivr:
            return f"ivr:{self.flow_id}" if self.flow_id else "ivr"
        return f"{self.agent_code or self.skill_group}@{site}"


class Directory:
    """The province as this site knows it: agent code -> site, site -> its skill groups."""

    def __init__(
        self, site_id: str, agent_sites: Mapping[str, str], site_groups: Mapping[str, frozenset[str]]
    ) -> None:
        self.site_id = site_id
        self.agent_sites = dict(agent_sites)
        self.site_groups = dict(site_groups)

    def learn(self, code: str, site_id: str) -> bool:
        """An agent of another site this site's config does not name (added there by its
        administrator at runtime), as the province's directory reports it. Never moves a known
        agent, never claims one for this site. True when it is new here."""
        if code in self.agent_sites or site_id == self.site_id or site_id not in self.site_groups:
            return False
        self.agent_sites[code] = site_id
        return True

    def site_of(self, code: str, target: TransferTarget) -> str:
        """The site a target is at; raises for a bad target."""
        chosen = sum((bool(target.agent_code), bool(target.skill_group), target.ivr))
        if chosen != 1:
            raise InvalidArgument(
                "bad-transfer-target", "target: exactly one of agent_code, skill_group, ivr"
            )
        if target.ivr:
            return target.site_id or self.site_id
        if target.agent_code:
            site = self.agent_sites.get(target.agent_code)
            if site is None:
                raise NotFound(
                    "unknown-agent", f"target.agent_code: no agent {target.agent_code!r} in the province"
                )
            if target.agent_code == code:
                raise InvalidArgument("transfer-to-self", "target: that is you")
            return site
        site = target.site_id or self.site_id
        if target.skill_group not in self.site_groups.get(site, frozenset()):
            raise NotFound("unknown-skill-group", f"target: no skill group {target.skill_group!r} at {site}")
        return site
