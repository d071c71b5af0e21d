"""A small province config for central's tests."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import argon2
from sqlalchemy.ext.asyncio import AsyncEngine

from central.db.engine import create_engine
from central.db.migrate import upgrade
from central.store import Store
from vcc.config import ProvinceConfig, parse_province


@functools.cache
def password_hash() -> str:
    return argon2.PasswordHasher().hash("123456")


def site(site_id: str, name: str, listen: str, agents: list[tuple[str, dict[str, int]]]) -> dict[str, Any]:
    return {
        "id": site_id,
        "name": name,
        "listen": listen,
        "trunk_groups": [{"id": "pstn", "channels": 30}],
        "skill_groups": [
            {"id": "general", "name": "General"},
            {"id": "billing", "name": "Billing", "priority": 2},
        ],
        "agents": [
            {"code": code, "name": f"Agent {code}", "password_hash": password_hash(), "skills": skills}
            for code, skills in agents
        ],
        "ivr": {"choices": [{"digit": "1", "skill_group": "general"}], "default_skill_group": "general"},
    }


def province_data(
    central_listen: str = "127.0.0.1:7000",
    database_url: str = "sqlite+aiosqlite:///central.db",
    etcd_endpoint: str = "127.0.0.1:2379",
    etcd_prefix: str = "/vcc",
) -> dict[str, Any]:
    return {
        "province": {"id": "gd", "name": "Guangdong"},
        "etcd": {"endpoints": [etcd_endpoint], "prefix": etcd_prefix},
        "central": {"listen": central_listen, "database_url": database_url},
        "sites": [
            site("gz", "Guangzhou", "127.0.0.1:7101", [("0101", {"general": 5}), ("0102", {"billing": 9})]),
            site("sz", "Shenzhen", "127.0.0.1:7102", [("0201", {"general": 3, "billing": 4})]),
        ],
    }


def province(**kwargs: str) -> ProvinceConfig:
    return parse_province(province_data(**kwargs))


async def central_store(tmp_path: Path, customers: int = 0) -> tuple[AsyncEngine, Store, ProvinceConfig]:
    """A migrated SQLite store at tmp_path with this province synced and `customers` demo customers."""
    url = f"sqlite+aiosqlite:///{tmp_path}/central.db"
    await upgrade(url)
    engine = create_engine(url)
    store = Store(engine)
    config = province()
    await store.sync_province(config)
    if customers:
        await store.seed_demo_customers(customers)
    return engine, store, config
