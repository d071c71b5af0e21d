"""The province config: one YAML file that every process of a province reads.

It is a contract like the gRPC one: operators write it by hand and `vcc` validates it at
start, naming the key and the reason of the first thing that is wrong.
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Four digits (two for the group, two for the member) as the SPEC has it; a province with more
# than 8,910 agents uses longer codes, up to eight digits. Codes are unique in the province.
AGENT_CODE_DIGITS = (4, 8)
# ASCII digits only (`\d` also takes full-width ones), and no trailing newline (`$` allows one).
AGENT_CODE = re.compile(rf"^[0-9]{{{AGENT_CODE_DIGITS[0]},{AGENT_CODE_DIGITS[1]}}}\Z")
AGENT_CODE_RULE = "an agent code is 4 to 8 digits (four: two for the group, two for the member)"
IDENT = r"^[a-z][a-z0-9_-]{0,31}$"
HostPort = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-\[\]:]+:[0-9]{1,5}$")]
Ident = Annotated[str, Field(pattern=IDENT)]


class ConfigError(Exception):
    """A province config that cannot be used; the message names the key and the reason."""


class _Strict(BaseModel):
    # Unknown keys are errors, never silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrunkGroupConfig(_Strict):
    id: Ident
    channels: int = Field(gt=0, le=100_000)


class TieTrunkConfig(_Strict):
    """Channels between this site and a peer city (used when a call is served elsewhere)."""

    peer: Ident
    channels: int = Field(ge=0, le=100_000)


BoardKind = Literal["ivr", "fax", "recording", "conference"]


class BoardConfig(_Strict):
    id: Ident
    kind: BoardKind
    channels: int = Field(gt=0, le=100_000)


RoutingStrategy = Literal["longest_idle", "most_skilled", "round_robin", "least_occupied"]


class SkillGroupConfig(_Strict):
    id: Ident
    name: str = ""
    strategy: RoutingStrategy = "longest_idle"
    # Higher is served first among calls of the same skill group.
    priority: int = Field(default=0, ge=0, le=9)


Role = Literal["agent", "group_leader", "administrator"]


class ReasonCode(_Strict):
    """A not-ready reason agents pick from (the desktop shows the label)."""

    code: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
    label: str = ""


DEFAULT_REASONS = (
    ReasonCode(code="break", label="休息 break"),
    ReasonCode(code="lunch", label="午餐 lunch"),
    ReasonCode(code="training", label="培训 training"),
    ReasonCode(code="meeting", label="会议 meeting"),
    ReasonCode(code="paperwork", label="事后处理 paperwork"),
)


DEFAULT_WRAP_UP_CODES = (
    ReasonCode(code="resolved", label="已解决 resolved"),
    ReasonCode(code="follow-up", label="需跟进 follow-up"),
    ReasonCode(code="complaint", label="投诉 complaint"),
    ReasonCode(code="enquiry", label="咨询 enquiry"),
    ReasonCode(code="other", label="其他 other"),
)


class AgentConfig(_Strict):
    code: str
    name: str = ""
    # A slow salted hash (argon2id, PHC format); never the password itself.
    password_hash: str = Field(min_length=20)
    # Skill group id -> level 1..10 (10 is the most skilled).
    skills: dict[str, Annotated[int, Field(ge=1, le=10)]] = Field(min_length=1)
    role: Role = "agent"
    # Skill groups (of this site) whose agents a group leader supervises (SPEC F24, F25); an
    # administrator supervises every agent of the site, an agent nobody.
    leads: list[Ident] = []

    @model_validator(mode="after")
    def _leads_for_leaders(self) -> AgentConfig:
        if self.role == "group_leader" and not self.leads:
            raise ValueError("leads: a group leader leads at least one skill group")
        if self.role == "agent" and self.leads:
            raise ValueError("leads: only a group_leader or administrator leads groups")
        _unique("leads", list(self.leads))
        return self

    # The agent's SIP phone registers as the agent code with digest authentication: this is
    # MD5("code:realm:password") in hex (`vcc sip-ha1`), never the password. Empty: no phone.
    sip_ha1: Annotated[str, Field(pattern=r"^([0-9a-f]{32})?$")] = ""

    @field_validator("code")
    @classmethod
    def _code_digits(cls, v: str) -> str:
        if not AGENT_CODE.match(v):
            raise ValueError(AGENT_CODE_RULE)
        return v

    @field_validator("password_hash")
    @classmethod
    def _slow_hash(cls, v: str) -> str:
        if not v.startswith("$argon2id$"):
            raise ValueError("must be an argon2id hash (see `vcc hash-password`)")
        return v


OperatorRole = Literal["operations", "administrator"]
OPERATOR_LOGIN = r"^[a-z][a-z0-9_.-]{1,31}$"


class OperatorConfig(_Strict):
    """A person of the province's operations (not an agent of a site): logs in to central's
    dashboard. `operations` views it; an `administrator` views it too (and is the role the
    province's administration is done in)."""

    login: Annotated[str, Field(pattern=OPERATOR_LOGIN)]
    name: str = ""
    # A slow salted hash (argon2id, PHC format, `vcc hash-password --any`); never the password.
    password_hash: str = Field(min_length=20)
    role: OperatorRole = "operations"

    @field_validator("password_hash")
    @classmethod
    def _slow_hash(cls, v: str) -> str:
        if not v.startswith("$argon2id$"):
            raise ValueError("must be an argon2id hash (see `vcc hash-password`)")
        return v


class IvrChoice(_Strict):
    digit: Annotated[str, Field(pattern=r"^[0-9*#]$")]
    skill_group: Ident
    label: str = ""


class IvrConfig(_Strict):
    """The first IVR step: the caller picks the service with one digit."""

    prompt: str = "Welcome. Press a key for the service you need."
    # At most 5 choices wide (SPEC F6).
    choices: list[IvrChoice] = Field(min_length=1, max_length=5)
    digit_timeout_s: float = Field(default=5.0, gt=0, le=120)
    # Where a caller who presses nothing (or a wrong key) goes.
    default_skill_group: Ident

    @model_validator(mode="after")
    def _unique_digits(self) -> IvrConfig:
        digits = [c.digit for c in self.choices]
        if len(set(digits)) != len(digits):
            raise ValueError("choices: each digit may appear once")
        return self


class MediaEngineConfig(_Strict):
    """The site's rtpengine: started and supervised by the site node, or an existing one (`ng`)."""

    # An rtpengine already running (its ng control address); empty: the site starts its own.
    ng: HostPort | Literal[""] = ""
    binary: str = "rtpengine"
    # Where the managed rtpengine sends RTP (and tells callers to send theirs).
    interface: Annotated[str, Field(pattern=r"^[0-9.]+$")] = "127.0.0.1"
    # The RTP port range of this site's rtpengine; sites on one host need disjoint ranges.
    port_min: int = Field(default=30000, ge=1024, le=65535)
    port_max: int = Field(default=30999, ge=1024, le=65535)
    # The top `bridge_ports` of that range are the mixing bridges' (supervision, consultations;
    # site_node/media/ports.py), the rest rtpengine's: the two never share a port.
    bridge_ports: int = Field(default=100, ge=2, le=10000)
    # rtpengine's worker threads (its own default on a 2-core host is 4; every RTP socket and
    # the ng control socket are served by them).
    threads: int = Field(default=4, ge=1, le=64)
    # How long one ng request may take before it is retried (bounded), then counted a failure.
    request_timeout_s: float = Field(default=1.0, gt=0, le=10)
    # A managed engine that dies is restarted at most this many times per `restart_window_s`.
    # Digits the caller plays as tones (in-band, not RFC 4733) are heard too: rtpengine decodes
    # every caller's audio for them (transcoding cost: docs/BENCHMARKS.md, SIP).
    inband_dtmf: bool = False
    max_restarts: int = Field(default=3, ge=0, le=100)
    restart_window_s: float = Field(default=60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _range(self) -> MediaEngineConfig:
        if self.rtp_max - self.port_min < 3:
            raise ValueError(
                f"port_max: must leave rtpengine at least 4 ports above port_min "
                f"(the top {self.bridge_ports} are the bridges')"
            )
        return self

    @property
    def rtp_max(self) -> int:
        """rtpengine's highest port."""
        return self.port_max - self.bridge_ports

    @property
    def bridge_min(self) -> int:
        """The bridges' lowest port (their highest is port_max)."""
        return self.rtp_max + 1


class SipConfig(_Strict):
    """The site's SIP trunk from the local exchange (a user agent server on UDP)."""

    # host:port to bind; port 0 takes a free one (tests).
    listen: HostPort
    # The trunk group whose channels SIP calls hold (the concurrent-call limit).
    trunk_group: Ident
    # Full trunk: 486 Busy Here (this site only) or 503 Service Unavailable (try elsewhere).
    busy_status: Literal[486, 503] = 503
    # Larger datagrams are answered 513 Message Too Large.
    max_message_bytes: int = Field(default=8192, ge=1024, le=65507)
    # Prompts built by `vcc prompts build` (relative paths: from the process's working folder).
    prompts_dir: str = "prompts"
    language: Literal["zh", "en"] = "zh"
    # Session timers (RFC 4028): the shortest Session-Expires accepted (422 below it). The RFC
    # says 90 or more; tests use less to see a session expire.
    session_min_se_s: int = Field(default=90, ge=1, le=86400)
    # The digest realm agents' phones authenticate in (part of every agent's sip_ha1).
    realm: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "vcc"
    # Bounds of a phone's registration (seconds); asked for less or more, it gets the bound.
    min_expires_s: int = Field(default=60, ge=10, le=3600)
    max_expires_s: int = Field(default=3600, ge=60, le=86400)
    # Where answered calls' recordings are kept (a WAV per call; rtpengine's pcaps below it);
    # empty: `recordings-<site>` beside the outbox.
    recordings_dir: str = ""
    media: MediaEngineConfig = MediaEngineConfig()


class SiteConfig(_Strict):
    id: Ident
    name: str
    listen: HostPort
    trunk_groups: list[TrunkGroupConfig] = Field(min_length=1)
    tie_trunks: list[TieTrunkConfig] = []
    boards: list[BoardConfig] = []
    skill_groups: list[SkillGroupConfig] = Field(min_length=1)
    agents: list[AgentConfig] = []
    ivr: IvrConfig
    ring_timeout_s: float = Field(default=10.0, gt=0, le=300)
    wrap_up_s: float = Field(default=5.0, ge=0, le=3600)
    # How long a logged-in agent's desktop may be gone before the agent is logged out.
    desktop_grace_s: float = Field(default=30.0, gt=0, le=3600)
    # An agent's session ends this long after its login at the latest (then: log in again).
    session_ttl_s: float = Field(default=12 * 3600.0, gt=0, le=7 * 86400)
    # Local SQLite journal of call records not yet acknowledged by central.
    outbox_path: str = ""
    # The agent desktop and group leader's console (HTTP); empty: none. Port 0: a free one.
    desktop_listen: HostPort | Literal[""] = ""
    # The SIP trunk; none: this site takes calls on its gRPC trunk only.
    sip: SipConfig | None = None
    # Prometheus scrape endpoint (HTTP, /metrics); empty: none.
    metrics_listen: HostPort | Literal[""] = ""
    # An agent's state rides in the desktop event that changed it (offered, connected, ended carry
    # the state they left the agent in); false: a state_changed of its own after each, one more
    # message per change (for a desktop that reads an agent's state from state_changed alone;
    # `vcc bench throughput --compare fold`).
    desk_states_in_call_events: bool = True
    # How this city's legs reach another city: "pair", every leg on the pair's one PeerLink
    # stream; "per-call", a ServeCall stream per leg (the protocol before: for a target city not
    # yet upgraded, and the benchmark's side-by-side row).
    peer_stream: Literal["pair", "per-call"] = "pair"

    @model_validator(mode="after")
    def _references(self) -> SiteConfig:
        groups = {g.id for g in self.skill_groups}
        _unique("skill_groups", [g.id for g in self.skill_groups])
        _unique("trunk_groups", [t.id for t in self.trunk_groups])
        _unique("boards", [b.id for b in self.boards])
        _unique("agents", [a.code for a in self.agents])
        for i, agent in enumerate(self.agents):
            for skill in agent.skills:
                if skill not in groups:
                    raise ValueError(f"agents.{i}.skills: unknown skill group {skill!r}")
            for led in agent.leads:
                if led not in groups:
                    raise ValueError(f"agents.{i}.leads: unknown skill group {led!r}")
        for i, choice in enumerate(self.ivr.choices):
            if choice.skill_group not in groups:
                raise ValueError(f"ivr.choices.{i}.skill_group: unknown skill group {choice.skill_group!r}")
        if self.ivr.default_skill_group not in groups:
            raise ValueError(f"ivr.default_skill_group: unknown skill group {self.ivr.default_skill_group!r}")
        if self.sip is not None and self.sip.trunk_group not in {t.id for t in self.trunk_groups}:
            raise ValueError(f"sip.trunk_group: unknown trunk group {self.sip.trunk_group!r}")
        return self


class EtcdConfig(_Strict):
    endpoints: list[HostPort] = Field(default=["127.0.0.1:2379"], min_length=1)
    # Keys live under this prefix, so several provinces can share one etcd cluster.
    prefix: Annotated[str, Field(pattern=r"^/[A-Za-z0-9_/-]*$")] = "/vcc"
    # A site that stops renewing its lease is gone after this many seconds.
    lease_ttl_s: int = Field(default=3, ge=1, le=60)


DATABASE_URL_ENV = "VCC_DATABASE_URL"


class CentralConfig(_Strict):
    listen: HostPort = "127.0.0.1:7000"
    # sqlite+aiosqlite:///path.db (embedded) or cockroachdb+asyncpg://user@host:port/db. Never with
    # a password: this file is shared by every node. Credentials go in the central host's
    # environment (VCC_DATABASE_URL) or in `database_url_file` (a file only central can read).
    database_url: str = "sqlite+aiosqlite:///vcc-central.db"
    database_url_file: str = ""
    # The operations dashboard (HTTP); empty: no dashboard.
    dashboard_listen: HostPort | Literal[""] = ""
    # Prometheus scrape endpoint of replica 1 (HTTP, /metrics); empty: none. Other replicas are
    # given theirs with `vcc central --metrics-listen`.
    metrics_listen: HostPort | Literal[""] = ""
    # At start: "migrate" brings the schema to the newest (under an advisory lock where the
    # database has one); "require" refuses to start on a database that `vcc central migrate` has
    # not brought to this version's schema (for several replicas on CockroachDB, which has no
    # advisory locks: migrations then run once, as their own step).
    schema_mode: Literal["migrate", "require"] = "migrate"

    @field_validator("database_url")
    @classmethod
    def _supported(cls, v: str) -> str:
        if not (v.startswith("sqlite+aiosqlite://") or v.startswith("cockroachdb+asyncpg://")):
            raise ValueError("use sqlite+aiosqlite:// or cockroachdb+asyncpg://")
        if _has_password(v):
            raise ValueError(
                f"no password in the shared province file: put the URL in {DATABASE_URL_ENV} "
                "or in central.database_url_file on the central host"
            )
        return v

    def effective_database_url(self) -> str:
        """The URL central connects with: its environment, else its own file, else the shared one."""
        url = os.environ.get(DATABASE_URL_ENV, "").strip()
        if not url and self.database_url_file:
            try:
                url = Path(self.database_url_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"central.database_url_file: cannot read: {exc.strerror}") from None
        if not url:
            return self.database_url
        if not (url.startswith("sqlite+aiosqlite://") or url.startswith("cockroachdb+asyncpg://")):
            raise ConfigError("database URL: use sqlite+aiosqlite:// or cockroachdb+asyncpg://")
        return url


def _has_password(url: str) -> bool:
    """user:password@ in the authority part, or a password=... query parameter."""
    rest = url.split("://", 1)[1] if "://" in url else url
    authority = rest.split("/", 1)[0]
    return ("@" in authority and ":" in authority.rsplit("@", 1)[0]) or "password=" in url.lower()


class TlsConfig(_Strict):
    """Mutual TLS on every link. Only the CA is named here (it is public); each process's own
    certificate and key come from its environment (VCC_TLS_CERT, VCC_TLS_KEY) or sit beside the CA
    as `<kind>-<name>.crt/.key` (`vcc certs province`), never in this shared file."""

    # The province CA's certificate (PEM); relative paths are from the process's working folder.
    ca_file: str = Field(min_length=1)


RoutingMode = Literal["isolated", "overflow", "pooled"]


class RoutingConfig(_Strict):
    """How the cities share calls (the virtual call center)."""

    # isolated: never leave the city; overflow: leave after waiting `overflow_after_s` locally (at
    # once when nobody is logged in for the skill); pooled: the province is one queue.
    mode: RoutingMode = "overflow"
    overflow_after_s: float = Field(default=10.0, ge=0, le=3600)
    # Live state older than this is not trusted for routing (the site counts as unknown).
    max_state_age_s: float = Field(default=2.0, gt=0, le=60)
    # How long a target site may take to reserve an agent for an offered call.
    offer_timeout_s: float = Field(default=1.0, gt=0, le=30)
    # A call that stayed after a routing decision asks again this often while it waits.
    reroute_interval_s: float = Field(default=1.0, gt=0, le=60)
    # Central pushes each city its ready overflow targets, so a call that must leave is offered
    # at once (false: every such call asks RouteCall first, as before; for comparison).
    push_targets: bool = True


class TracingConfig(_Strict):
    """Traces (vcc.tracing): one per call across the cities it touches."""

    enabled: bool = True
    # OTLP/gRPC collector (host:port or URL); empty: OTEL_EXPORTER_OTLP_ENDPOINT, else a local
    # JSON-lines file per process in `file_dir` (relative to the process's working folder).
    otlp_endpoint: str = ""
    file_dir: str = "traces"
    # Share of calls traced (a call's trace is kept or dropped whole, in every city).
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    # The local file is rotated at this size (`<name>.1` ... `<name>.<file_keep>`, oldest dropped):
    # a process's traces never take more than (file_keep + 1) * file_max_bytes of disk.
    file_max_bytes: int = Field(default=64 * 1024 * 1024, ge=4096)
    file_keep: int = Field(default=3, ge=1, le=100)


class ProvinceInfo(_Strict):
    id: Ident
    name: str
    service_number: Annotated[str, Field(pattern=r"^[0-9]{3,8}$")] = "10000"


class ProvinceConfig(_Strict):
    province: ProvinceInfo
    etcd: EtcdConfig = EtcdConfig()
    central: CentralConfig = CentralConfig()
    routing: RoutingConfig = RoutingConfig()
    # None: every link in plaintext, nobody authenticated (in-process tests only; logged loudly).
    tls: TlsConfig | None = None
    # Not-ready reasons offered on every desktop of the province.
    not_ready_reasons: list[ReasonCode] = Field(default=list(DEFAULT_REASONS), min_length=1, max_length=20)
    # What an agent may record a call as, at wrap-up.
    wrap_up_codes: list[ReasonCode] = Field(default=list(DEFAULT_WRAP_UP_CODES), min_length=1, max_length=30)
    tracing: TracingConfig = TracingConfig()
    # People who log in to central's dashboard (operations viewers, administrators).
    operators: list[OperatorConfig] = Field(default=[], max_length=1000)
    sites: list[SiteConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _province_wide(self) -> ProvinceConfig:
        ids = [s.id for s in self.sites]
        _unique("sites", ids)
        _unique("sites.*.listen", [s.listen for s in self.sites] + [self.central.listen])
        _unique("not_ready_reasons", [r.code for r in self.not_ready_reasons])
        _unique("wrap_up_codes", [r.code for r in self.wrap_up_codes])
        _unique("operators", [o.login for o in self.operators])
        _unique(
            "sites.*.desktop_listen",
            [
                s.desktop_listen
                for s in self.sites
                if s.desktop_listen and not s.desktop_listen.endswith(":0")
            ],
        )
        sips = [s.sip for s in self.sites if s.sip is not None]
        _unique("sites.*.sip.listen", [x.listen for x in sips if not x.listen.endswith(":0")])
        # Every site's range holds its bridges' ports, so a given engine's site keeps it too.
        managed = sorted((x.media.interface, x.media.port_min, x.media.port_max) for x in sips)
        for a, b in itertools.pairwise(managed):
            if a[0] == b[0] and b[1] <= a[2]:
                raise ValueError(
                    f"sites.*.sip.media: RTP port ranges {a[1]}-{a[2]} and {b[1]}-{b[2]} overlap"
                )
        # Every HTTP endpoint on its own address too. Port 0 (the system picks one) and wildcard
        # hosts (each process on its own host, as in a real province) cannot collide here.
        http = [self.central.metrics_listen, self.central.dashboard_listen]
        http += [s.metrics_listen for s in self.sites]
        endpoints = [s.listen for s in self.sites] + [self.central.listen] + [a for a in http if a]
        _unique("metrics_listen", [a for a in endpoints if not _any_host_or_port(a)])
        # Agent codes are unique in the province: a transfer names an agent by code alone.
        _unique("agents (province-wide)", [a.code for s in self.sites for a in s.agents])
        for i, site in enumerate(self.sites):
            for j, tie in enumerate(site.tie_trunks):
                if tie.peer not in ids or tie.peer == site.id:
                    raise ValueError(f"sites.{i}.tie_trunks.{j}.peer: unknown peer site {tie.peer!r}")
        return self

    def site(self, site_id: str) -> SiteConfig:
        for s in self.sites:
            if s.id == site_id:
                return s
        raise ConfigError(
            f"site: no site {site_id!r} in the province config (have: {', '.join(s.id for s in self.sites)})"
        )


def _any_host_or_port(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    return port == "0" or host in ("0.0.0.0", "[::]", "::", "")


def _unique(key: str, values: list[str]) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{key}: {v!r} appears twice")
        seen.add(v)


def parse_province(data: object, source: str = "<config>") -> ProvinceConfig:
    try:
        return ProvinceConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {format_validation_error(exc)}") from None


def load_province(path: str | Path) -> ProvinceConfig:
    """Read and validate a province config; raise ConfigError naming the key and the reason."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    return parse_province(data, str(p))


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: `key.path: reason`."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{key}: {msg}")
    return "; ".join(lines)
