"""Other cities' agents added at runtime, in this site's directory (the real path, central's
directory read by a running site, is tests/security/test_person_at_central.py)."""

from __future__ import annotations

from site_node.callcontrol import Switchboard
from site_node.callcontrol.directory import TransferTarget
from site_node.web.presence import Presence
from tests.central.province import province
from vcc.config import ProvinceConfig


def board() -> tuple[Switchboard, ProvinceConfig]:
    config = province()
    sites = config.sites
    sb = Switchboard(
        sites[0],
        config.province.service_number,
        agent_sites={a.code: s.id for s in sites for a in s.agents},
        site_groups={s.id: frozenset(g.id for g in s.skill_groups) for s in sites},
    )
    return sb, config


def test_an_agent_learned_is_a_transfer_target_and_known_agents_never_move() -> None:
    sb, config = board()
    here, there = sb.site_id, config.sites[1].id
    known = next(iter(sb.directory.agent_sites))
    home = sb.directory.agent_sites[known]
    assert sb.directory.learn("0190", there)
    assert sb.directory.site_of("9999", TransferTarget(agent_code="0190")) == there
    assert not sb.directory.learn("0190", there)  # already known
    assert not sb.directory.learn(known, there) and sb.directory.agent_sites[known] == home
    assert not sb.directory.learn("0191", here)  # never claimed for this site
    assert not sb.directory.learn("0192", "no-such-site")
    assert {"0191", "0192"}.isdisjoint(sb.directory.agent_sites)


def test_the_desks_directory_lists_the_agents_added_at_runtime() -> None:
    sb, config = board()
    there = config.sites[1].id
    sb.add_agent(0.0, "0180", {next(iter(sb.site.skill_groups)).id: 5})
    sb.directory.learn("0190", there)
    listed = {s["site_id"]: s for s in Presence(config, sb, wanted=lambda: False).directory()}
    ours = {a["code"]: a for a in listed[sb.site_id]["agents"]}
    theirs = {a["code"]: a for a in listed[there]["agents"]}
    assert ours["0180"]["role"] == "agent" and ours["0180"]["state"] == "LOGGED_OUT"
    assert theirs["0190"] == {"code": "0190", "name": "0190", "state": "UNKNOWN", "role": "agent"}
