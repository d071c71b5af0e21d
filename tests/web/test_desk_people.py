"""Generated provinces with seats for people: a group leader and an agent per city, that robots
leave alone, and a desktop address per city; the example province's leaders validate."""

from __future__ import annotations

from pathlib import Path

from tools.province.generate import SiteSpec, agent_codes, desk_people, generate_province
from vcc.config import load_province, parse_province

FAKE_HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"


def test_people_get_seats_that_robots_leave_alone(tmp_path: Path) -> None:
    raw = generate_province(
        [SiteSpec("gz", "Guangzhou", 5, {"general": 2, "billing": 1}), SiteSpec("sz", "Shenzhen", 5)],
        etcd_endpoint="127.0.0.1:2379", central_listen="127.0.0.1:7000", database_url="sqlite+aiosqlite:///x.db",
        password_hash=FAKE_HASH, outbox_dir=tmp_path, people=True, desktop=True,
    )  # fmt: skip
    config = parse_province(raw)
    for site in config.sites:
        people = desk_people(raw, site.id)
        robots = agent_codes(raw, site.id)
        assert set(people) == {"group_leader", "agent", "administrator"}
        assert not set(people.values()) & set(robots)
        leader = next(a for a in site.agents if a.code == people["group_leader"])
        assert leader.role == "group_leader" and set(leader.leads) == {g.id for g in site.skill_groups}
        assert site.desktop_listen.startswith("127.0.0.1:")
    assert len(agent_codes(raw, "gz")) == 3
    # Without people nothing changes: every agent is a robot's, no desktop.
    plain = generate_province(
        [SiteSpec("gz", "Guangzhou", 5, {"general": 2})], etcd_endpoint="127.0.0.1:2379",
        central_listen="127.0.0.1:7000", database_url="sqlite+aiosqlite:///x.db", password_hash=FAKE_HASH,
        outbox_dir=tmp_path,
    )  # fmt: skip
    assert desk_people(plain, "gz") == {} and len(agent_codes(plain, "gz")) == 2
    assert parse_province(plain).sites[0].desktop_listen == ""


def test_the_example_province_has_a_leader_per_city() -> None:
    config = load_province(Path(__file__).parents[2] / "deploy" / "province.example.yaml")
    for site in config.sites:
        leaders = [a for a in site.agents if a.role == "group_leader"]
        assert leaders and all(a.leads for a in leaders)
        assert site.desktop_listen
