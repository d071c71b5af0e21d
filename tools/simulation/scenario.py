"""The scenario of `vcc simulate` (SPEC §6): what province to build, what traffic to offer, what to break.

Strict like the province config: an unknown key, a value out of range or a reference to a site that
does not exist is a ScenarioError naming the key (`sites.1.agents: ...`), never a silent default.
Keys that are optional have the defaults documented in the README ("Simulation scenarios and
reports"). `kill_central_leader` needs at least two central replicas (up to 3). A site is cut
(`partition_site`) and healed (`heal_site`) in turn: a heal without a cut, or a second cut of a cut
site, is refused. A cut resets the site's open connections (`cut: reset`, the default) or silently
stops forwarding on them (`cut: silent`: a pulled cable; only keepalive tells either end).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tools.province.faultproxy import CENTRAL_PLACE, Wan
from vcc.config import IDENT

Distribution = Literal["exponential", "constant"]
EventAction = Literal[
    "kill_site",
    "restart_site",
    "kill_central_leader",
    "stop_database",
    "start_database",
    "partition_site",
    "heal_site",
]
SITE_ACTIONS = frozenset({"kill_site", "restart_site", "partition_site", "heal_site"})
DATABASE_ACTIONS = frozenset({"stop_database", "start_database"})
# Refused at validation until the fault-tolerance work lands (issue 5).
NOT_SUPPORTED_YET: dict[str, str] = {}
# A simulated province runs at most this many central replicas (one leads, the others follow).
MAX_CENTRAL_REPLICAS = 3


class ScenarioError(Exception):
    """A scenario that cannot be run; the message names the key and the reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimeDistribution(_Strict):
    mean_s: float = Field(gt=0, le=86_400)
    distribution: Distribution = "exponential"


class RoutingSpec(_Strict):
    mode: Literal["isolated", "overflow", "pooled"]
    # overflow only: how long a call waits in its own city before other cities are asked.
    after_s: float | None = Field(default=None, ge=0, le=3600)


class TransfersSpec(_Strict):
    probability: float = Field(default=0.0, ge=0, le=1)
    kind: Literal["blind", "consult", "conference"] = "blind"
    to: Literal["local", "remote"] = "remote"


class IvrSpec(_Strict):
    """An IVR flow every caller runs (the model engine only): keys pressed, one group per key
    request, then silence; prompts take their text's length at `speech_chars_per_s`."""

    flow: str = Field(min_length=1)
    keys: list[Annotated[str, Field(pattern=r"^[0-9*#]{1,32}$")]] = []
    speech_chars_per_s: float = Field(default=4.0, gt=0, le=100)


class CentralSpec(_Strict):
    replicas: int = Field(default=1, ge=1, le=MAX_CENTRAL_REPLICAS)
    database: Literal["sqlite", "postgresql"] = "sqlite"


class SiteSpecModel(_Strict):
    id: Annotated[str, Field(pattern=IDENT)]
    trunk_channels: int = Field(ge=1, le=100_000)
    # Skill group -> agents; the first group is the IVR's default.
    agents: dict[Annotated[str, Field(pattern=IDENT)], Annotated[int, Field(ge=0, le=5000)]]
    arrival_rate_per_s: float = Field(ge=0, le=10_000)
    # Voice channels to every other site (for overflow and pooled routing).
    tie_channels: int = Field(default=10, ge=0, le=100_000)


class EventSpec(_Strict):
    at_s: float = Field(ge=0)
    action: EventAction
    site: Annotated[str, Field(pattern=IDENT)] | None = None
    # partition_site only: how the open connections of the cut links end (see tools/province/faultproxy.py).
    cut: Literal["reset", "silent"] | None = None


class WanSpec(_Strict):
    """An emulated WAN (tools/province/faultproxy.py): the one-way delay of each link, in ms."""

    # "gz-sz": delay between two cities; "central-gz": between a city and central (and etcd).
    links: dict[
        Annotated[str, Field(pattern=r"^[a-z0-9_]+-[a-z0-9_]+$")], Annotated[float, Field(ge=0, le=1000)]
    ] = Field(default_factory=dict)
    # Links not listed.
    default_ms: float = Field(default=0.0, ge=0, le=1000)
    # Each chunk waits a further random 0..jitter_ms (never overtaking the one before it).
    jitter_ms: float = Field(default=0.0, ge=0, le=1000)

    def to_wan(self) -> Wan:
        delays = {frozenset(key.split("-", 1)): ms / 1000 for key, ms in self.links.items()}
        return Wan(delays, jitter_s=self.jitter_ms / 1000, default_s=self.default_ms / 1000)


class Scenario(_Strict):
    seed: int = 0
    duration_s: float = Field(gt=0, le=86_400)
    warmup_s: float = Field(default=0.0, ge=0, le=86_400)
    handle_time: TimeDistribution
    patience: TimeDistribution | None = None  # None: callers never hang up
    service_level_threshold_s: float = Field(ge=0, le=3600)
    ring_delay_s: float = Field(default=0.0, ge=0, le=300)
    wrap_up_s: float = Field(default=0.0, ge=0, le=3600)
    routing: RoutingSpec
    transfers: TransfersSpec = TransfersSpec()
    ivr: IvrSpec | None = None
    central: CentralSpec = CentralSpec()
    sites: list[SiteSpecModel] = Field(min_length=1)
    events: list[EventSpec] = Field(default_factory=list)
    wan: WanSpec | None = None

    @property
    def traffic_s(self) -> float:
        """Seconds of arrivals: the warm-up, then the measured duration."""
        return self.warmup_s + self.duration_s

    def site_ids(self) -> list[str]:
        return [s.id for s in self.sites]

    def agents_per_site(self) -> dict[str, int]:
        return {s.id: sum(s.agents.values()) for s in self.sites}

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        # Messages start with the full key: the error formatter shows them as they are.
        ids = self.site_ids()
        seen: set[str] = set()
        for i, site in enumerate(self.sites):
            if site.id in seen:
                raise ValueError(f"sites.{i}.id: {site.id!r} appears twice")
            seen.add(site.id)
            if not site.agents or sum(site.agents.values()) == 0:
                raise ValueError(f"sites.{i}.agents: site {site.id!r} has no agents (give at least one)")
        if self.routing.mode == "overflow" and self.routing.after_s is None:
            raise ValueError("routing.after_s: required with mode overflow (seconds before leaving the city)")
        if self.routing.mode != "overflow" and self.routing.after_s is not None:
            raise ValueError(f"routing.after_s: only with mode overflow, not {self.routing.mode}")
        if self.transfers.probability > 0 and self.transfers.to == "remote" and len(self.sites) < 2:
            raise ValueError("transfers.to: remote transfers need at least two sites")
        for i, event in enumerate(self.events):
            _check_event(self, i, event, ids)
        _check_partitions(self.events)
        if self.wan is not None:
            places = {*ids, CENTRAL_PLACE}
            for key in self.wan.links:
                a, b = key.split("-", 1)
                if a == b or not {a, b} <= places:
                    raise ValueError(f"wan.links.{key}: two different places of {', '.join(sorted(places))}")
            if self.central.replicas > 1:
                raise ValueError("central.replicas: more than one replica with wan is not supported yet")
        return self

    def partitioned_sites(self) -> list[str]:
        """The sites some event cuts from the province (they run behind fault proxies)."""
        return sorted({e.site for e in self.events if e.action == "partition_site" and e.site})


def _check_event(scenario: Scenario, i: int, event: EventSpec, site_ids: list[str]) -> None:
    key = f"events.{i}"
    if event.at_s >= scenario.traffic_s:
        raise ValueError(
            f"{key}.at_s: {event.at_s:g} is past the end of traffic "
            f"(warmup_s + duration_s = {scenario.traffic_s:g})"
        )
    if event.action in NOT_SUPPORTED_YET:
        raise ValueError(f"{key}.action: {event.action}: {NOT_SUPPORTED_YET[event.action]}")
    if event.action in SITE_ACTIONS:
        if event.site is None:
            raise ValueError(f"{key}.site: required with action {event.action}")
        if event.site not in site_ids:
            raise ValueError(f"{key}.site: unknown site {event.site!r} (have: {', '.join(site_ids)})")
    elif event.site is not None:
        raise ValueError(f"{key}.site: action {event.action} takes no site")
    if event.cut is not None and event.action != "partition_site":
        raise ValueError(f"{key}.cut: only with action partition_site, not {event.action}")
    if event.action == "kill_central_leader" and scenario.central.replicas < 2:
        raise ValueError(
            f"{key}.action: kill_central_leader needs central.replicas 2 or more (nobody would take over)"
        )
    if event.action in DATABASE_ACTIONS and scenario.central.database != "postgresql":
        raise ValueError(
            f"{key}.action: {event.action} needs central.database postgresql "
            f"(an embedded SQLite database cannot be stopped apart from central)"
        )


def _check_partitions(events: list[EventSpec]) -> None:
    """Cuts and heals of a site alternate, in time order (the runner applies them so)."""
    cut: set[str] = set()
    order = sorted(range(len(events)), key=lambda i: events[i].at_s)
    for i in order:
        event = events[i]
        if event.action == "partition_site" and event.site is not None:
            if event.site in cut:
                raise ValueError(f"events.{i}.action: site {event.site!r} is already partitioned then")
            cut.add(event.site)
        elif event.action == "heal_site" and event.site is not None:
            if event.site not in cut:
                raise ValueError(f"events.{i}.action: heal_site of {event.site!r}, which is not partitioned")
            cut.discard(event.site)


def format_errors(exc: ValidationError) -> str:
    """One `key.path: reason` per problem, joined by `; `."""
    lines = []
    for err in exc.errors():
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        key = ".".join(str(part) for part in err["loc"])
        lines.append(f"{key}: {msg}" if key else msg)
    return "; ".join(lines)


def parse_scenario(data: object, source: str = "<scenario>") -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a scenario is a mapping of keys (seed, duration_s, sites, ...)")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(f"{source}: {format_errors(exc)}") from None


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; raise ScenarioError naming the key and the reason."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{p}: not valid YAML: {exc}") from None
    ivr = data.get("ivr") if isinstance(data, dict) else None
    if isinstance(ivr, dict) and isinstance(ivr.get("flow"), str):
        # A flow's path is the scenario file's neighbour unless absolute.
        ivr["flow"] = str((p.parent / ivr["flow"]).resolve())
    return parse_scenario(data, str(p))
