"""The province generator: its configs validate, codes are unique, the IVR points at real groups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from tools.province.generate import SiteSpec, agent_codes, generate_province, hash_password, write_province
from vcc.config import ConfigError, load_province, parse_province

SITES = [
    SiteSpec("gz", "广州 Guangzhou", trunk_channels=30, agents={"general": 6, "billing": 3}),
    SiteSpec("sz", "深圳 Shenzhen", trunk_channels=20, agents={"general": 4}),
    SiteSpec("fs", "佛山 Foshan", trunk_channels=20, agents={"billing": 2, "general": 2}, ivr_ports=5),
]


@pytest.fixture(scope="module")
def shared_hash() -> str:
    return hash_password("123456")


def generate(sites: list[SiteSpec], shared_hash: str, **kw: Any) -> dict[str, Any]:
    return generate_province(
        sites,
        etcd_endpoint="127.0.0.1:2379",
        central_listen="127.0.0.1:7000",
        database_url="sqlite+aiosqlite:///central.db",
        outbox_dir="/tmp/outbox",
        password_hash=shared_hash,
        **kw,
    )


def test_generated_province_validates(shared_hash: str) -> None:
    config = parse_province(generate(SITES, shared_hash))
    assert [s.id for s in config.sites] == ["gz", "sz", "fs"]
    assert [len(s.agents) for s in config.sites] == [9, 4, 4]
    assert config.sites[2].boards[0].channels == 5
    assert config.sites[0].outbox_path == "/tmp/outbox/gz-outbox.db"


def test_agent_codes_are_four_digits_and_unique_in_the_province(shared_hash: str) -> None:
    big = [
        SiteSpec("gz", "gz", 10, {"general": 250, "billing": 120}),
        SiteSpec("sz", "sz", 10, {"general": 150}),
    ]
    config = parse_province(generate(big, shared_hash))
    codes = [a.code for s in config.sites for a in s.agents]
    assert len(codes) == 520 == len(set(codes))
    assert all(len(c) == 4 and c.isdigit() and c[2:] != "00" for c in codes)
    # Two digits for the group: each group number belongs to one skill group of one site.
    owner: dict[str, tuple[str, str]] = {}
    for site in config.sites:
        for agent in site.agents:
            (skill,) = agent.skills
            assert owner.setdefault(agent.code[:2], (site.id, skill)) == (site.id, skill)


def test_beyond_four_digit_codes_the_province_gets_six_digit_ones(shared_hash: str) -> None:
    # The 20 cities of 1,000 agents: more than four-digit codes allow (8,910).
    big = [SiteSpec(f"c{i:02d}", f"c{i:02d}", 10, {"general": 1000}) for i in range(20)]
    config = parse_province(generate(big, shared_hash))
    codes = [a.code for s in config.sites for a in s.agents]
    assert len(codes) == 20_000 == len(set(codes))
    narrow = [c for c in codes if len(c) == 4]
    # Each city's 1,000 take 11 group numbers (the last one part-filled) while four digits last.
    assert len(narrow) == 8 * 1000 + 2 * 99 and narrow[0] == "1001" and narrow[-1].startswith("99")
    wide = codes[len(narrow) :]
    assert all(len(c) == 6 and c.isdigit() and c[3:] != "000" for c in wide)
    assert wide[0] == "100001"
    # The first cities keep exactly the codes a small province has always had.
    assert [a.code for a in config.sites[0].agents][:3] == ["1001", "1002", "1003"]


def test_too_many_agents_for_six_digit_codes(shared_hash: str) -> None:
    with pytest.raises(ValueError, match="too many agents"):
        generate([SiteSpec("gz", "gz", 10, {"general": 90 * 99 + 900 * 999 + 1})], shared_hash)


@pytest.mark.parametrize("code", ["123", "123456789", "12a4", " 1234", "1234\n", "\uff11\uff12\uff13\uff14"])
def test_bad_agent_codes_are_refused_naming_the_rule(shared_hash: str, code: str) -> None:
    raw = generate(SITES, shared_hash)
    raw["sites"][0]["agents"][0]["code"] = code
    with pytest.raises(ConfigError, match="4 to 8 digits"):
        parse_province(raw)


@pytest.mark.parametrize("code", ["1234", "12345678"])
def test_agent_codes_of_four_to_eight_digits_are_accepted(shared_hash: str, code: str) -> None:
    raw = generate(SITES, shared_hash)
    raw["sites"][0]["agents"][0]["code"] = code
    config = parse_province(raw)
    assert config.sites[0].agents[0].code == code


def test_ivr_choices_name_real_groups_with_one_digit_per_service(shared_hash: str) -> None:
    config = parse_province(generate(SITES, shared_hash))
    digit_of: dict[str, str] = {}
    for site in config.sites:
        groups = {g.id for g in site.skill_groups}
        assert site.ivr.default_skill_group in groups
        for choice in site.ivr.choices:
            assert choice.skill_group in groups
            assert digit_of.setdefault(choice.skill_group, choice.digit) == choice.digit
    assert digit_of == {"general": "1", "billing": "2"}


def test_tie_trunks_between_every_pair_of_sites(shared_hash: str) -> None:
    config = parse_province(generate(SITES, shared_hash))
    for site in config.sites:
        assert sorted(t.peer for t in site.tie_trunks) == sorted({"gz", "sz", "fs"} - {site.id})


def test_listen_addresses_are_distinct_free_ports(shared_hash: str) -> None:
    config = parse_province(generate(SITES, shared_hash))
    listens = [s.listen for s in config.sites] + [config.central.listen]
    assert len(set(listens)) == len(listens)


def test_a_password_hash_per_agent_and_each_verifies() -> None:
    raw = generate_province(
        SITES[1:2],
        etcd_endpoint="127.0.0.1:2379",
        central_listen="127.0.0.1:7000",
        database_url="sqlite+aiosqlite:///c.db",
        outbox_dir="/tmp",
        password="654321",
    )
    # Issue 11: each agent its own salt (one shared hash cracked every agent at once).
    hashes = {a["password_hash"] for a in raw["sites"][0]["agents"]}
    assert len(hashes) == 4
    assert all(PasswordHasher().verify(h, "654321") for h in hashes)
    assert agent_codes(raw, "sz") == ["1001", "1002", "1003", "1004"]


def test_a_password_is_six_digits() -> None:
    with pytest.raises(ValueError, match="six digits"):
        hash_password("12345a")


def test_written_yaml_loads_back(tmp_path: Path, shared_hash: str) -> None:
    path = write_province(generate(SITES, shared_hash), tmp_path / "p.yaml")
    assert load_province(path).sites[0].name == "广州 Guangzhou"


def test_example_config_of_deploy_validates() -> None:
    config = load_province(Path(__file__).parents[2] / "deploy" / "province.example.yaml")
    assert len(config.sites) == 3


def test_desk_states_ride_in_call_events_unless_a_site_says_otherwise(shared_hash: str) -> None:
    raw = generate(SITES, shared_hash)
    raw["sites"][1]["desk_states_in_call_events"] = False
    config = parse_province(raw)
    assert [s.desk_states_in_call_events for s in config.sites] == [True, False, True]
    raw["sites"][1]["desk_states_in_call_events"] = "sometimes"
    with pytest.raises(ConfigError, match="desk_states_in_call_events"):
        parse_province(raw)
