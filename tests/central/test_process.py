"""`python -m central` as a real process: starts, serves health, ingests, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import pytest
import yaml

from central import convert
from tests.central.factories import answered_call
from tests.central.province import province_data
from tools.province.etcd_server import EtcdServer
from tools.province.netutil import free_port
from vcc import rpc
from vcc.v1 import central_pb2, central_pb2_grpc

pytestmark = pytest.mark.cluster


async def start_central(config: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "central",
        "--config",
        str(config),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), str(Path.cwd() / "proto")])},
    )


async def test_central_process_serves_and_stops_on_sigterm(tmp_path: Path, etcd_server: EtcdServer) -> None:
    listen = f"127.0.0.1:{free_port()}"
    data = province_data(
        central_listen=listen,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        etcd_endpoint=etcd_server.endpoint,
        etcd_prefix="/process-test",
    )
    config = tmp_path / "province.yaml"
    config.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    process = await start_central(config, "--seed-customers", "10")
    try:
        await rpc.wait_serving(listen, timeout_s=30)
        async with rpc.channel(listen) as channel:
            stub = central_pb2_grpc.CentralServiceStub(channel)
            request = central_pb2.IngestCallEventsRequest(
                site_id="gz", events=[convert.event_to_proto(e) for e in answered_call("p1")]
            )
            reply = await stub.IngestCallEvents(request, timeout=rpc.DEFAULT_DEADLINE_S)
            assert (reply.stored, reply.duplicates) == (8, 0)
            customer = await stub.LookupCustomer(
                central_pb2.LookupCustomerRequest(phone="13800000009"), timeout=rpc.DEFAULT_DEADLINE_S
            )
            assert customer.customer.name == "客户 0009 / Customer 0009"
            status = await stub.GetProvinceStatus(
                central_pb2.GetProvinceStatusRequest(), timeout=rpc.DEFAULT_DEADLINE_S
            )
            assert (status.province_id, status.call_records) == ("gd", 1)
            assert [s.site_id for s in status.sites] == ["gz", "sz"]
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, stderr.decode()
        assert b"Traceback" not in stderr, stderr.decode()
        assert b"central stopped" in stderr
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_central_process_with_a_bad_config_exits_2(tmp_path: Path) -> None:
    data = province_data()
    data["central"]["database_url"] = "mysql://nope"
    config = tmp_path / "province.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    process = await start_central(config)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    text = stderr.decode()
    assert "central.database_url" in text
    assert "Traceback" not in text


async def test_central_process_stops_on_sigint(tmp_path: Path, etcd_server: EtcdServer) -> None:
    listen = f"127.0.0.1:{free_port()}"
    data = province_data(
        central_listen=listen,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        etcd_endpoint=etcd_server.endpoint,
        etcd_prefix="/process-test-2",
    )
    config = tmp_path / "province.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    process = await start_central(config)
    try:
        await rpc.wait_serving(listen, timeout_s=30)
        process.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, stderr.decode()
        assert b"central stopped" in stderr
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_central_process_that_cannot_listen_exits_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        data = province_data(
            central_listen=f"127.0.0.1:{taken.getsockname()[1]}",
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        )
        config = tmp_path / "province.yaml"
        config.write_text(yaml.safe_dump(data), encoding="utf-8")
        process = await start_central(config)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1, stderr.decode()
    assert "central cannot start" in stderr.decode()
    assert "Traceback" not in stderr.decode()
