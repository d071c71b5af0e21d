"""Generated provinces: every agent has its own salted hash."""

from __future__ import annotations

from pathlib import Path

from argon2 import PasswordHasher

from tools.province.generate import DEFAULT_PASSWORD, SiteSpec, generate_province
from vcc.config import parse_province


def test_every_agent_has_its_own_salt(tmp_path: Path) -> None:
    raw = generate_province(
        [
            SiteSpec("gz", "GZ", trunk_channels=2, agents={"general": 2}),
            SiteSpec("sz", "SZ", 2, {"general": 2}),
        ],
        etcd_endpoint="127.0.0.1:2379",
        central_listen="127.0.0.1:7000",
        database_url="sqlite+aiosqlite:///c.db",
        outbox_dir=tmp_path,
    )
    agents = [a for s in parse_province(raw).sites for a in s.agents]
    hashes = [a.password_hash for a in agents]
    assert len(agents) == 4 and len(set(hashes)) == 4
    salts = {h.split("$")[4] for h in hashes}
    assert len(salts) == 4
    assert all(PasswordHasher().verify(h, DEFAULT_PASSWORD) for h in hashes)
