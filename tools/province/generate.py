"""Generate province configs for local clusters, the demo and tests.

The result is the same dict an operator would write in YAML; `vcc.config.parse_province`
accepts it. Ports come from `free_port`, so several generated provinces can run side by side.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tools.province.netutil import free_port
from vcc.digits import is_digits

DEFAULT_PASSWORD = "123456"
# Agent codes are two digits for the group and two for the member (SPEC glossary). Group numbers
# are handed out province-wide from FIRST_GROUP_NUMBER, so codes never start with 0 and never repeat.
FIRST_GROUP_NUMBER = 10
LAST_GROUP_NUMBER = 99
MEMBERS_PER_GROUP = 99
# Beyond 90 groups of 99 (8,910 agents), codes are six digits: group 100-999, member 001-999.
FIRST_WIDE_GROUP_NUMBER = 100
LAST_WIDE_GROUP_NUMBER = 999
WIDE_MEMBERS_PER_GROUP = 999
# An IVR menu is at most five choices wide (SPEC F6).
MAX_IVR_CHOICES = 5
# Name tags of the agents `people=True` adds (robots leave them alone).
LEADER_TAG = "leader"
PERSON_TAG = "desk"

SKILL_GROUP_NAMES = {
    "general": "综合业务 general enquiries",
    "billing": "话费查询 billing",
    "broadband": "宽带报障 broadband faults",
    "complaints": "投诉 complaints",
    "vip": "大客户 key accounts",
}


@dataclass(frozen=True)
class SiteSpec:
    """One city of a generated province: its trunk, boards, tie trunks and agents per skill group."""

    id: str
    name: str
    trunk_channels: int
    # Skill group id -> number of agents; the first group is the IVR's default.
    agents: Mapping[str, int] = field(default_factory=lambda: {"general": 4})
    ivr_ports: int | None = None  # None: as many IVR ports as trunk channels
    tie_channels: int = 10  # to every other site
    listen: str | None = None  # None: a free port on 127.0.0.1


# The demo's cities (Guangdong). Extra entries are used by `vcc demo --sites N`.
CITIES: tuple[tuple[str, str], ...] = (
    ("gz", "广州 Guangzhou"),
    ("sz", "深圳 Shenzhen"),
    ("fs", "佛山 Foshan"),
    ("dg", "东莞 Dongguan"),
    ("zh", "珠海 Zhuhai"),
    ("st", "汕头 Shantou"),
    ("zs", "中山 Zhongshan"),
    ("jm", "江门 Jiangmen"),
    ("hz", "惠州 Huizhou"),
    ("zj", "湛江 Zhanjiang"),
)


def hash_password(password: str) -> str:
    """An argon2id PHC string for a six-digit agent password (slow on purpose: hash once, reuse)."""
    from argon2 import PasswordHasher

    if not (len(password) == 6 and is_digits(password)):
        raise ValueError("an agent password is six digits")
    return PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1).hash(password)


# The demo's operations viewer of central's dashboard (printed by `vcc demo`; tests log in as it).
DEMO_OPERATOR = "ops"
DEMO_OPERATOR_PASSWORD = "ops-demo-2026"


def hash_operator_password(password: str) -> str:
    """An argon2id PHC string for an operator's dashboard password (8 to 64 characters)."""
    from vcc.passwords import hash_password as hash_

    if not 8 <= len(password) <= 64:
        raise ValueError("an operator password is 8 to 64 characters")
    return hash_(password)


def generate_province(
    sites: Sequence[SiteSpec],
    *,
    province_id: str = "gd",
    name: str = "Guangdong",
    service_number: str = "10000",
    etcd_endpoint: str,
    central_listen: str,
    database_url: str,
    password: str = DEFAULT_PASSWORD,
    password_hash: str | None = None,
    ring_timeout_s: float = 5.0,
    wrap_up_s: float = 0.0,
    outbox_dir: str | Path,
    digit_timeout_s: float = 3.0,
    lease_ttl_s: int = 3,
    routing: Mapping[str, Any] | None = None,
    dashboard_listen: str = "",
    people: bool = False,
    desktop: bool = False,
) -> dict[str, Any]:
    """A province config dict with one IVR, one trunk group and tie trunks to every other site per city.

    Every agent gets `password`, hashed for it alone (its own salt: two agents with the same
    password do not share a hash, and a cracked hash cracks one agent). `password_hash` gives
    every agent that one hash instead: for tests that cannot spend a slow hash per agent.
    `people`: each city also gets a group leader (leading all its skill groups) and an agent for a
    person at the desktop, both left alone by robots (`agent_codes` leaves them out; `desk_people`
    names them): codes 9901 and 9902 in the first city, 9801 and 9802 in the second, and so on.
    `desktop`: each city serves the agent desktop on a free port.
    """
    if not sites:
        raise ValueError("a province has at least one site")
    # A placeholder until every agent is known; replaced below by a hash per agent.
    shared_hash = password_hash or _PLACEHOLDER
    catalogue = _skill_catalogue(sites)
    codes = _CodeAllocator()
    site_ids = [s.id for s in sites]
    central: dict[str, Any] = {"listen": central_listen, "database_url": database_url}
    if dashboard_listen:
        central["dashboard_listen"] = dashboard_listen
    raw: dict[str, Any] = {
        "province": {"id": province_id, "name": name, "service_number": service_number},
        "etcd": {"endpoints": [etcd_endpoint], "prefix": "/vcc", "lease_ttl_s": lease_ttl_s},
        "central": central,
        "sites": [
            _site(
                spec,
                peers=[p for p in site_ids if p != spec.id],
                catalogue=catalogue,
                codes=codes,
                password_hash=shared_hash,
                ring_timeout_s=ring_timeout_s,
                wrap_up_s=wrap_up_s,
                outbox_dir=Path(outbox_dir),
                digit_timeout_s=digit_timeout_s,
                people_group=LAST_GROUP_NUMBER - i if people else None,
                desktop=desktop,
            )
            for i, spec in enumerate(sites)
        ],
    }
    if routing is not None:
        raw["routing"] = dict(routing)
    if dashboard_listen:
        # Nobody sees the dashboard without a login: the demo's operator is the way in.
        raw["operators"] = [
            {
                "login": DEMO_OPERATOR,
                "name": "运维 operations (demo)",
                "password_hash": hash_operator_password(DEMO_OPERATOR_PASSWORD),
                "role": "operations",
            }
        ]
    if password_hash is None:
        agents = [a for site in raw["sites"] for a in site["agents"]]
        # argon2 releases the GIL: the slow hashes run on every core at once.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for agent, hashed in zip(agents, pool.map(hash_password, [password] * len(agents)), strict=True):
                agent["password_hash"] = hashed
    return raw


_PLACEHOLDER = "$argon2id$placeholder"


def _skill_catalogue(sites: Sequence[SiteSpec]) -> dict[str, str]:
    """Skill group -> IVR digit, the same digit in every city (one number, one menu)."""
    groups: list[str] = []
    for spec in sites:
        for group in spec.agents:
            if group not in groups:
                groups.append(group)
    return {group: str(i + 1) for i, group in enumerate(groups[:MAX_IVR_CHOICES])}


class _CodeAllocator:
    """Hands out agent codes, unique in the province: four digits, one group number per 99 members,
    while they last (every province of up to 8,910 agents keeps the codes it always had); then six
    digits, three for the group and three for the member, which never collide with four-digit ones."""

    def __init__(self) -> None:
        self._next_group = FIRST_GROUP_NUMBER

    def codes(self, count: int) -> list[str]:
        out: list[str] = []
        while len(out) < count:
            if self._next_group == LAST_GROUP_NUMBER + 1:
                self._next_group = FIRST_WIDE_GROUP_NUMBER
            if self._next_group > LAST_WIDE_GROUP_NUMBER:
                raise ValueError("too many agents for six-digit codes (at most 900 groups of 999 members)")
            group = self._next_group
            self._next_group += 1
            if group >= FIRST_WIDE_GROUP_NUMBER:
                take = min(WIDE_MEMBERS_PER_GROUP, count - len(out))
                out.extend(f"{group:03d}{member:03d}" for member in range(1, take + 1))
            else:
                take = min(MEMBERS_PER_GROUP, count - len(out))
                out.extend(f"{group:02d}{member:02d}" for member in range(1, take + 1))
        return out


def _site(
    spec: SiteSpec,
    *,
    peers: Sequence[str],
    catalogue: Mapping[str, str],
    codes: _CodeAllocator,
    password_hash: str,
    ring_timeout_s: float,
    wrap_up_s: float,
    outbox_dir: Path,
    digit_timeout_s: float,
    people_group: int | None = None,
    desktop: bool = False,
) -> dict[str, Any]:
    if not spec.agents:
        raise ValueError(f"site {spec.id}: at least one skill group")
    groups = list(spec.agents)
    agents: list[dict[str, Any]] = []
    for group, count in spec.agents.items():
        for code in codes.codes(count):
            agents.append(
                {
                    "code": code,
                    "name": f"{spec.id}-{group}-{code}",
                    "password_hash": password_hash,
                    "skills": {group: 5},
                }
            )
    if people_group is not None:
        # From the top of the code space down, so the robots' codes are the same with or without.
        leader, person = f"{people_group:02d}01", f"{people_group:02d}02"
        skills = dict.fromkeys(groups, 5)
        agents.append(
            {"code": leader, "name": f"{spec.id}-{LEADER_TAG}-{leader}", "password_hash": password_hash,
             "skills": skills, "role": "group_leader", "leads": list(groups)}
        )  # fmt: skip
        agents.append(
            {
                "code": person,
                "name": f"{spec.id}-{PERSON_TAG}-{person}",
                "password_hash": password_hash,
                "skills": skills,
            }
        )
        # The site's administrator (adds agents, disables them, resets passwords, changes skills).
        admin = f"{people_group:02d}03"
        agents.append(
            {"code": admin, "name": f"{spec.id}-admin-{admin}", "password_hash": password_hash,
             "skills": skills, "role": "administrator"}
        )  # fmt: skip
    choices = [
        {"digit": catalogue[g], "skill_group": g, "label": SKILL_GROUP_NAMES.get(g, g)}
        for g in groups
        if g in catalogue
    ]
    if not choices:  # every group of this site is beyond the menu width: offer its first one
        choices = [
            {"digit": "1", "skill_group": groups[0], "label": SKILL_GROUP_NAMES.get(groups[0], groups[0])}
        ]
    return {
        "id": spec.id,
        "name": spec.name,
        "listen": spec.listen or f"127.0.0.1:{free_port()}",
        "trunk_groups": [{"id": "pstn", "channels": spec.trunk_channels}],
        "tie_trunks": [{"peer": p, "channels": spec.tie_channels} for p in peers],
        "boards": [{"id": "ivr", "kind": "ivr", "channels": spec.ivr_ports or spec.trunk_channels}],
        "skill_groups": [{"id": g, "name": SKILL_GROUP_NAMES.get(g, g)} for g in groups],
        "agents": agents,
        "ivr": {
            "prompt": "欢迎致电. Welcome. Press a key for the service you need.",
            "choices": choices,
            "digit_timeout_s": digit_timeout_s,
            "default_skill_group": groups[0],
        },
        "ring_timeout_s": ring_timeout_s,
        "wrap_up_s": wrap_up_s,
        "outbox_path": str(outbox_dir / f"{spec.id}-outbox.db"),
        **({"desktop_listen": f"127.0.0.1:{free_port()}"} if desktop else {}),
    }


def agent_codes(config: Mapping[str, Any], site_id: str) -> list[str]:
    """The agent codes of one site of a generated (or loaded-as-dict) province config, for robots:
    without the group leaders and the agents kept for people (see `desk_people`)."""
    for site in config["sites"]:
        if site["id"] == site_id:
            return [str(a["code"]) for a in site.get("agents", []) if not _for_people(a)]
    raise KeyError(site_id)


def desk_people(config: Mapping[str, Any], site_id: str) -> dict[str, str]:
    """The codes robots leave alone at one site: {"group_leader": code, "agent": code} (if any)."""
    for site in config["sites"]:
        if site["id"] == site_id:
            out: dict[str, str] = {}
            for a in site.get("agents", []):
                if a.get("role", "agent") != "agent":
                    out.setdefault(str(a["role"]), str(a["code"]))
                elif f"-{PERSON_TAG}-" in str(a.get("name", "")):
                    out.setdefault("agent", str(a["code"]))
            return out
    raise KeyError(site_id)


def _for_people(agent: Mapping[str, Any]) -> bool:
    return agent.get("role", "agent") != "agent" or f"-{PERSON_TAG}-" in str(agent.get("name", ""))


def write_province(config: Mapping[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(config), allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path
