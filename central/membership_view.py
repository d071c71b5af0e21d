"""Which sites of the province are up, as membership in etcd says (pure: time comes in as `now`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from vcc.v1 import site_admin_pb2


@dataclass(frozen=True)
class SiteLiveness:
    site_id: str
    name: str
    up: bool = False
    # The last summary the site published; None while it is down.
    summary: site_admin_pb2.SiteSummary | None = None
    # When central last saw the site's key written (unix seconds); None if never.
    last_seen: float | None = None
    # While down: since when, as this replica saw it (the lease gone, or the key absent from its
    # first snapshot: "down since at least then"); None while up or before any snapshot.
    down_since: float | None = None
    # While down: etcd itself said so (key deleted, lease expired, absent from a snapshot). False
    # when central only lost sight of etcd: then nobody knows whether the site lives.
    down_in_etcd: bool = False


@dataclass(frozen=True)
class Transition:
    site_id: str
    before: str
    event: str
    after: str

    def __str__(self) -> str:
        return f"site {self.site_id}: {self.before} -[{self.event}]-> {self.after}"


class MembershipView:
    """Up/down, last summary and last-seen time of every site of the config.

    Keys of sites the config does not name are ignored: the config is the province.
    """

    def __init__(self, sites: Iterable[tuple[str, str]]) -> None:
        self._sites = {site_id: SiteLiveness(site_id, name) for site_id, name in sites}

    def sites(self) -> list[SiteLiveness]:
        """Every site of the config, in config order."""
        return list(self._sites.values())

    def site(self, site_id: str) -> SiteLiveness:
        return self._sites[site_id]

    def put(self, site_id: str, summary: site_admin_pb2.SiteSummary, now: float) -> list[Transition]:
        """The site's key was written: it is up, with this summary."""
        old = self._sites.get(site_id)
        if old is None:
            return []
        self._sites[site_id] = replace(
            old, up=True, summary=summary, last_seen=now, down_since=None, down_in_etcd=False
        )
        return [] if old.up else [Transition(site_id, "down", "key written", "up")]

    def delete(
        self, site_id: str, event: str = "key deleted", now: float | None = None, *, in_etcd: bool = True
    ) -> list[Transition]:
        """The site's key is gone (deleted, or its lease expired): it is down. `in_etcd`: etcd said
        so (False: central lost sight of etcd, the site may live)."""
        old = self._sites.get(site_id)
        if old is None:
            return []
        # Down since the first moment seen down (a second notice does not move it).
        since = old.down_since if not old.up and old.down_since is not None else now
        self._sites[site_id] = replace(old, up=False, summary=None, down_since=since, down_in_etcd=in_etcd)
        return [Transition(site_id, "up", event, "down")] if old.up else []

    def reset(self, alive: Mapping[str, site_admin_pb2.SiteSummary], now: float) -> list[Transition]:
        """A fresh snapshot of every key: the sites in it are up, the others down."""
        transitions: list[Transition] = []
        for site_id in self._sites:
            if site_id in alive:
                transitions += self.put(site_id, alive[site_id], now)
            else:
                transitions += self.delete(site_id, "absent from snapshot", now)
        return transitions

    def all_down(self, event: str, now: float | None = None) -> list[Transition]:
        """Central lost sight of etcd: it cannot tell any site is up (nor that any is down)."""
        transitions: list[Transition] = []
        for site_id in self._sites:
            transitions += self.delete(site_id, event, now, in_etcd=False)
        return transitions
