"""Every site's latest live state at central: from its state stream, or from its etcd membership value.

Sources, newest wins (by central's receive time):
- the site's `StreamSiteState` stream (at most every 100 ms, at least every second);
- the summary the site keeps in etcd under its lease (central.membership watches it): the
  fallback while the stream is not connected.

Health of a site, at a given `now` (unix seconds, central's clock):
- down: never heard of; or its stream is closed and either its etcd lease is gone or its
  latest state is older than `max_state_age_s` (a killed site's stream breaks at once: it is
  down as soon as its state is too old, without waiting for the lease to expire). A site whose
  stream is open is never down because of etcd alone: central may be the one cut from etcd.
- stale: not down, but its latest state is older than `max_state_age_s` (not trusted for routing).
- up: otherwise.

Only the latest state per site is kept, so a flood of updates costs memory for one summary.

Presence (every agent's state) comes change-driven on the stream: a FULL message carries every
agent, a DELTA only those that changed since the stream's previous message. A delta is applied
only on top of the message just before it (`seq` one more than the last applied); after a gap
(or a delta first on a stream) the presence is marked incomplete and kept as it was, `update`
answers GAP so central asks the site for a FULL one, and deltas are not applied until it comes.
The figures of every message are whole and are taken whatever its presence kind.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from central.membership_view import SiteLiveness
from vcc.v1 import central_pb2, site_admin_pb2

DELTA = central_pb2.PRESENCE_UPDATE_DELTA
# While a resync is awaited, it is asked again after this many messages (the first request or
# its answer may have been lost with a replaced stream).
RESYNC_AGAIN_AFTER = 20


class Update(enum.Enum):
    ACCEPTED = "accepted"
    # A duplicate, a late message or a replaced stream's: nothing changed.
    IGNORED = "ignored"
    # Accepted, but the presence cannot follow: ask the site for a FULL one.
    GAP = "gap"

    def __bool__(self) -> bool:
        # Truthy when the message was taken (ACCEPTED or GAP).
        return self is not Update.IGNORED


class Health(enum.StrEnum):
    UP = "up"
    STALE = "stale"
    DOWN = "down"


@dataclass(frozen=True)
class SiteState:
    """What central knows of one site at `now`: the read API for the router and the dashboard."""

    site_id: str
    name: str
    health: Health
    # The newest summary from either source; None if central never had one.
    summary: site_admin_pb2.SiteSummary | None
    # Central's receive time of that summary (unix seconds) and its age at `now`.
    received_at: float | None
    age_s: float | None
    # "stream" or "etcd": where the summary came from ("" when there is none).
    source: str
    streaming: bool
    # The site's key exists in etcd (its lease is alive), as far as central's watch tells.
    registered: bool
    # The stream's sequence number of that summary (0 when it came from etcd).
    seq: int
    # Agent code -> state name (read this, not summary.agent_states, which a delta holds only
    # in part); complete=False while a resync is awaited after a gap.
    presence: Mapping[str, str] = field(default_factory=dict)
    presence_complete: bool = True
    # While down: since when, as central's membership watch saw it (None while up, or not known).
    down_since: float | None = None

    @property
    def up(self) -> bool:
        return self.health is Health.UP


@dataclass
class _Stream:
    token: int
    seq: int = 0
    summary: site_admin_pb2.SiteSummary | None = None
    received_at: float | None = None
    presence: dict[str, str] = field(default_factory=dict)
    presence_lost: bool = False
    # The seq at which a resync was last asked for (0: none pending).
    resync_asked: int = 0
    gaps: int = 0


class LiveState:
    """The latest state per site of the province config; sites outside the config are refused."""

    def __init__(
        self,
        sites: Iterable[tuple[str, str]],
        membership: Callable[[], list[SiteLiveness]],
        max_state_age_s: float,
    ) -> None:
        self._names = dict(sites)
        self._membership = membership
        self.max_state_age_s = max_state_age_s
        self._streams: dict[str, _Stream] = {}
        # The last summary a (now closed) stream delivered: still the newest state we may have.
        self._last: dict[str, _Stream] = {}
        self._tokens = itertools.count(1)
        # Set on every accepted update: the pooled router wakes on it.
        self.changed = asyncio.Event()

    # -- writes (the stream handler) ---------------------------------------------------------

    def knows(self, site_id: str) -> bool:
        return site_id in self._names

    def open_stream(self, site_id: str) -> int:
        """A new stream from the site replaces any older one; returns the stream's token."""
        if site_id not in self._names:
            raise KeyError(site_id)
        token = next(self._tokens)
        self._streams[site_id] = _Stream(token)
        return token

    def update(
        self,
        site_id: str,
        token: int,
        seq: int,
        summary: site_admin_pb2.SiteSummary,
        now: float,
        presence: central_pb2.PresenceUpdate.ValueType = central_pb2.PRESENCE_UPDATE_FULL,
    ) -> Update:
        """The stream's newest state. IGNORED for a replaced stream or a sequence number not
        above the last one (a duplicate or a late message); GAP when a presence delta cannot be
        applied (see the module doc)."""
        stream = self._streams.get(site_id)
        if stream is None or stream.token != token:
            return Update.IGNORED
        if stream.summary is not None and seq <= stream.seq:
            return Update.IGNORED
        result = Update.ACCEPTED
        if presence == DELTA:
            if stream.summary is None or seq != stream.seq + 1:
                if not stream.presence_lost:
                    stream.gaps += 1
                stream.presence_lost = True
            if stream.presence_lost:
                if not stream.resync_asked or seq - stream.resync_asked >= RESYNC_AGAIN_AFTER:
                    stream.resync_asked = seq
                    result = Update.GAP
            else:
                stream.presence.update(summary.agent_states)
        else:
            # FULL, or an older site's whole summary.
            stream.presence = dict(summary.agent_states)
            stream.presence_lost, stream.resync_asked = False, 0
        # Nobody reads a partial map by mistake: presence lives in `presence`.
        summary.ClearField("agent_states")
        stream.seq, stream.summary, stream.received_at = seq, summary, now
        self._last[site_id] = stream
        self.changed.set()
        return result

    def gaps(self, site_id: str) -> int:
        """Presence gaps seen on the site's current (or last) stream."""
        stream = self._streams.get(site_id) or self._last.get(site_id)
        return stream.gaps if stream is not None else 0

    def close_stream(self, site_id: str, token: int) -> None:
        stream = self._streams.get(site_id)
        if stream is not None and stream.token == token:
            del self._streams[site_id]
            self.changed.set()

    # -- reads -------------------------------------------------------------------------------

    def sites(self, now: float) -> list[SiteState]:
        """Every site of the config, in config order."""
        members = {m.site_id: m for m in self._membership()}
        return [self._state(site_id, members.get(site_id), now) for site_id in self._names]

    def site(self, site_id: str, now: float) -> SiteState:
        if site_id not in self._names:
            raise KeyError(site_id)
        members = {m.site_id: m for m in self._membership()}
        return self._state(site_id, members.get(site_id), now)

    def _state(self, site_id: str, member: SiteLiveness | None, now: float) -> SiteState:
        streaming = site_id in self._streams
        registered = member is not None and member.up
        last = self._last.get(site_id)
        summary, received_at, source, seq = None, None, "", 0
        presence: Mapping[str, str] = {}
        complete = True
        if last is not None and last.summary is not None:
            summary, received_at, source, seq = last.summary, last.received_at, "stream", last.seq
            presence, complete = last.presence, not last.presence_lost
        if (
            member is not None
            and member.up
            and member.summary is not None
            and member.last_seen is not None
            and (received_at is None or member.last_seen > received_at)
        ):
            summary, received_at, source, seq = member.summary, member.last_seen, "etcd", 0
            presence, complete = member.summary.agent_states, True
        age = None if received_at is None else max(0.0, now - received_at)
        old = age is None or age > self.max_state_age_s
        # Its stream broke and nothing newer came from etcd: the site is failing (killed, or cut
        # off): stop routing to it at once rather than wait for its lease or its state to age.
        lost = source == "stream" and not streaming
        if summary is None or (not streaming and (not registered or old)):
            health = Health.DOWN
        elif old or lost:
            health = Health.STALE
        else:
            health = Health.UP
        return SiteState(
            site_id=site_id,
            name=self._names[site_id],
            health=health,
            summary=summary,
            received_at=received_at,
            age_s=age,
            source=source,
            streaming=streaming,
            registered=registered,
            seq=seq,
            presence=presence,
            down_since=member.down_since if member is not None and health is Health.DOWN else None,
            presence_complete=complete,
        )
