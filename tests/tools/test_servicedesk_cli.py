"""`vcc customers|tickets|kb|history`: the real command in a child process against a real
central gRPC server (the service desk over SQLite) in the test's event loop."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from central.audit import AuditLog
from central.customer_pins import CustomerPins, PinCheck
from central.db.engine import create_engine
from central.db.migrate import upgrade
from central.servicedesk.desk import ServiceDesk
from central.servicedesk.grpc_api import SERVICE_NAMES
from central.store import Store
from tests.central.province import province
from vcc import rpc


@pytest.fixture
async def central(tmp_path: Path) -> AsyncIterator[str]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'central.db'}"
    await upgrade(url)
    engine = create_engine(url)
    store = Store(engine)
    await store.sync_province(province())
    server = rpc.Server(SERVICE_NAMES)
    ServiceDesk(store, ["gz", "sz"], senders={}).add_to(server.grpc)
    port = await server.start("127.0.0.1:0")
    yield f"127.0.0.1:{port}"
    await server.stop(0)
    await engine.dispose()


async def vcc(central: str, *args: str) -> subprocess.CompletedProcess[str]:
    # In a thread: the server in this event loop answers while the child runs.
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tools", *args, "--central", central],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def json_of(central: str, *args: str) -> Any:
    done = await vcc(central, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_import_tickets_kb_history(central: str, tmp_path: Path) -> None:
    csv_file = tmp_path / "customers.csv"
    csv_file.write_text(
        "customer_id,name,phones,email,address\n"
        "k1,李四,13900000001;02012345678,li@example.com,广州市天河路1号\n"
        "k2,,13900000002,,\n"
        "k3,王五,13900000001,,\n"
        "k4,too,many,cells,here,extra\n",
        encoding="utf-8",
    )
    done = await vcc(central, "customers", "import", str(csv_file))
    assert done.returncode == 1  # some rows were rejected
    assert "1 created, 0 updated, 3 rejected" in done.stdout
    for line, error_id in (("3", "bad-name"), ("4", "phone-taken"), ("5", "bad-row")):
        assert any(
            [cell.strip() for cell in row.split("│")][1:3] == [line, error_id]
            for row in done.stdout.splitlines()
            if "│" in row
        ), done.stdout

    found = await json_of(central, "customers", "search", "--phone", "139")
    assert [c["customer_id"] for c in found["customers"]] == ["k1"]

    ticket = (
        await json_of(
            central, "tickets", "create", "--category", "complaint", "--title", "包裹延误",
            "--by", "0101", "--customer", "k1", "--site", "gz", "--unit", "city:sz",
        )
    )["ticket"]  # fmt: skip
    assert ticket["state"] == "TICKET_STATE_ASSIGNED" and ticket["unit"] == "city:sz"
    listed = await json_of(central, "tickets", "list", "--unit", "city:sz", "--state", "assigned")
    assert [t["ticket_id"] for t in listed["tickets"]] == [ticket["ticket_id"]]
    refused = await vcc(central, "tickets", "close", ticket["ticket_id"], "--by", "x")
    assert refused.returncode == 1 and "[bad-transition]" in refused.stderr
    report = await vcc(central, "tickets", "report")
    assert report.returncode == 0 and "city:sz" in report.stdout

    article = (
        await json_of(
            central,
            "kb",
            "propose",
            "--title",
            "查询邮政编码的方法",
            "--body",
            "登录网站查询。",
            "--by",
            "0101",
        )
    )["article"]
    await json_of(central, "kb", "publish", article["article_id"], "--by", "reviewer")
    hits = await json_of(central, "kb", "search", "邮政编码")
    assert [h["article"]["article_id"] for h in hits["hits"]] == [article["article_id"]]

    history = await json_of(central, "history", "02012345678")
    assert history["customer"]["customer_id"] == "k1"
    assert [i["kind"] for i in history["items"]] == ["ticket"]


async def test_set_pin_keeps_a_hash_the_ivr_checks(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'central.db'}"
    await upgrade(url)
    engine = create_engine(url)
    store = Store(engine)
    await store.seed_demo_customers(1, ["广州"])
    pins = CustomerPins(engine, store, AuditLog(engine))
    server = rpc.Server(SERVICE_NAMES)
    ServiceDesk(store, ["gz", "sz"], senders={}).add_to(server.grpc, pins)
    address = f"127.0.0.1:{await server.start('127.0.0.1:0')}"
    try:

        async def set_pin(customer_id: str, pin: str) -> subprocess.CompletedProcess[str]:
            return await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "tools", "customers", "set-pin", customer_id, "--pin-stdin",
                 "--central", address],
                input=f"{pin}\n", capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip

        done = await set_pin("demo-0000", "7531")
        assert done.returncode == 0, done.stderr
        assert await pins.verify("A000000", "7531", actor="site/gz") is PinCheck.VERIFIED
        bad = await set_pin("demo-0000", "75x1")
        assert bad.returncode != 0 and "bad-pin" in bad.stderr and "75x1" not in bad.stderr
        nobody = await set_pin("demo-0009", "7531")
        assert nobody.returncode != 0 and "customer-not-found" in nobody.stderr
        # The refused ones changed nothing.
        assert await pins.verify("A000000", "7531", actor="site/gz") is PinCheck.VERIFIED
    finally:
        await server.stop(0)
        await engine.dispose()
