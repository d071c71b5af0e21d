"""`vcc ivr validate | push | show`: exit codes and output, against a real central IvrService."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from central.db.engine import create_engine
from central.db.migrate import upgrade
from central.flows import FlowStore
from central.ivr_api import SERVICE_NAME, IvrService
from central.store import Store
from tests.central.province import province_data
from tests.ivr.flows import FLOWS
from tools.cli import app
from vcc import rpc
from vcc.config import parse_province
from vcc.v1 import ivr_pb2_grpc

POSTAL = str(FLOWS / "postal-185.yaml")
BANK = str(FLOWS / "bank.yaml")


def read_yaml(path: Path | str) -> Any:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def vcc(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_validate_prints_a_summary_per_document() -> None:
    result = vcc("ivr", "validate", POSTAL, BANK, str(FLOWS / "catalog.yaml"))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].endswith(
        "flow postal-185 version 1: 53 nodes, 10 menus (at most 5 wide, 5 deep), 28 ends, languages zh/en"
    )
    assert lines[2].endswith("service catalog: 2 services on numbers 11185, 185, 95580")


def test_validate_names_every_fault_and_exits_2(tmp_path: Path) -> None:
    data = yaml.safe_load(Path(POSTAL).read_text(encoding="utf-8"))
    data["nodes"]["duty"]["options"][0]["next"] = "nowhere"
    data["nodes"]["orphan"] = {"kind": "hangup"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    result = vcc("ivr", "validate", str(bad), BANK)
    assert result.exit_code == 2
    assert f"{bad}: node duty: options.0.next: 'nowhere' is not a node of this flow" in result.output
    assert f"{bad}: node orphan: unreachable: no path from the start leads here" in result.output
    # The good file is still summarised.
    assert "flow bank version 1" in result.output


@pytest.fixture
async def config_file(tmp_path: Path) -> AsyncIterator[Path]:
    url = f"sqlite+aiosqlite:///{tmp_path}/central.db"
    await upgrade(url)
    engine = create_engine(url)
    data = province_data()
    for site in data["sites"]:
        site["skill_groups"] += [{"id": g} for g in ("parcel", "complaints", "savings", "philately")]
    server = rpc.Server([SERVICE_NAME])
    ivr = IvrService(FlowStore(Store(engine), time.time), parse_province(data))
    ivr_pb2_grpc.add_IvrServiceServicer_to_server(ivr, server.grpc)
    port = await server.start("127.0.0.1:0")
    data["central"]["listen"] = f"127.0.0.1:{port}"
    yield write_yaml(tmp_path / "province.yaml", data)
    await server.stop(0)
    await engine.dispose()


async def test_push_and_show(config_file: Path, tmp_path: Path) -> None:
    catalog = read_yaml(FLOWS / "catalog.yaml")
    for service in catalog["services"]:
        service["cities"] = ["gz", "sz"]
    catalog_file = write_yaml(tmp_path / "catalog.yaml", catalog)
    # The catalog is given first; flows are pushed before it all the same.
    result = await asyncio.to_thread(
        vcc, "ivr", "push", str(catalog_file), POSTAL, BANK, "--config", str(config_file)
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{POSTAL}: flow postal-185 version 1 stored (")
    assert lines[2] == f"{catalog_file}: service catalog revision 1 stored"
    again = await asyncio.to_thread(vcc, "ivr", "push", POSTAL, "--config", str(config_file))
    assert "already stored" in again.output
    shown = await asyncio.to_thread(vcc, "ivr", "show", "--config", str(config_file))
    assert shown.exit_code == 0, shown.output
    assert "postal-185 v1" in shown.output and "95580" in shown.output
    one = await asyncio.to_thread(vcc, "ivr", "show", "phone-banking", "--config", str(config_file))
    assert "bank v1" in one.output and "postal-185 v1" not in one.output
    missing = await asyncio.to_thread(vcc, "ivr", "show", "lottery", "--config", str(config_file))
    assert missing.exit_code == 1 and "[service-not-found]" in missing.output


async def test_push_refused_by_central(config_file: Path, tmp_path: Path) -> None:
    data = read_yaml(BANK)
    data["nodes"]["lost_queue"]["skill_group"] = "lost-cards"
    flow = write_yaml(tmp_path / "bank.yaml", data)
    result = await asyncio.to_thread(vcc, "ivr", "push", str(flow), "--config", str(config_file))
    assert result.exit_code == 2
    assert "no skill group 'lost-cards' in the province [invalid-flow]" in result.output


class Follower:
    """A central replica that does not lead, and names the one that does."""

    def __init__(self, leader: str) -> None:
        self._leader = leader

    @property
    def is_leader(self) -> bool:
        return False

    def leader_address(self) -> str | None:
        return self._leader


async def test_push_to_a_follower_goes_to_the_leader(config_file: Path, tmp_path: Path) -> None:
    data = read_yaml(config_file)
    leader = data["central"]["listen"]
    follower = rpc.Server([SERVICE_NAME])
    # Never used: a follower refuses a push before it touches its database.
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/follower.db")
    flows = FlowStore(Store(engine), time.time)
    ivr_pb2_grpc.add_IvrServiceServicer_to_server(
        IvrService(flows, parse_province(data), leadership=Follower(leader)), follower.grpc
    )
    port = await follower.start("127.0.0.1:0")
    try:
        data["central"]["listen"] = f"127.0.0.1:{port}"
        at_follower = write_yaml(tmp_path / "follower.yaml", data)
        result = await asyncio.to_thread(vcc, "ivr", "push", BANK, "--config", str(at_follower))
        assert result.exit_code == 0, result.output
        assert "flow bank version 1 stored" in result.output
        shown = await asyncio.to_thread(vcc, "ivr", "show", "--config", str(config_file))
        assert "bank" in shown.output
    finally:
        await follower.stop(0)
        await engine.dispose()


def test_try_walks_a_flow_on_this_machine() -> None:
    result = vcc(
        "ivr",
        "try",
        POSTAL,
        "--digits",
        "1 1 1234567890123# 0",
        "--var",
        "customer.level=gold",
        "--answer",
        'parcel_state={"state": "已妥投", "city": "广州"}',
        "--at",
        "2026-12-01T10:00+08:00",
    )
    assert result.exit_code == 0, result.output
    assert "  heard  parcel_state: 您查询的邮件已妥投，目前在广州。" in result.output
    assert "  key 0  after_parcel: agent -> parcel_queue" in result.output
    assert result.output.endswith("ended: queue (skill_group parcel, priority 6)\n")
    night = vcc("ivr", "try", POSTAL, "--at", "2026-12-01T23:00+08:00", "--json")
    report = json.loads(night.output)
    assert report["ended"] == {"kind": "hangup", "reason": "closed"}
    assert [s.get("heard") for s in report["steps"]][:2] == ["welcome", "closed"]
    # A look-up nobody answers times out: the flow's own late path.
    late = vcc("ivr", "try", POSTAL, "--digits", "1 1 1234567890123#", "--at", "2026-12-01T10:00+08:00")
    assert "look-up parcel_state: timed-out" in late.output and "heard  lookup_late" in late.output
    bad = vcc("ivr", "try", POSTAL, "--var", "oops")
    assert bad.exit_code == 2
