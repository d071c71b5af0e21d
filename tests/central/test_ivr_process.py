"""A real central process serves IvrService and hands flows to etcd; a new leader republishes them."""

from __future__ import annotations

import signal
from pathlib import Path

import aetcd
import pytest
import yaml

from tests.central.province import province_data
from tests.central.test_process import start_central
from tests.helpers import eventually
from tests.ivr.flows import FLOWS
from tools.province.etcd_server import EtcdServer
from tools.province.netutil import free_port
from vcc import rpc
from vcc.ivr.keys import decode_flow, flow_key, ivr_prefix
from vcc.v1 import ivr_pb2, ivr_pb2_grpc

pytestmark = pytest.mark.cluster
PREFIX = "/ivr-process-test"


def write_config(tmp_path: Path, listen: str, etcd_endpoint: str) -> Path:
    data = province_data(
        central_listen=listen,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'central.db'}",
        etcd_endpoint=etcd_endpoint,
        etcd_prefix=PREFIX,
    )
    config = tmp_path / "province.yaml"
    config.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return config


def bank_flow() -> str:
    return (FLOWS / "bank.yaml").read_text(encoding="utf-8")


async def test_central_publishes_flows_and_a_new_leader_writes_back_what_etcd_lost(
    tmp_path: Path, etcd_server: EtcdServer
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    config = write_config(tmp_path, listen, etcd_server.endpoint)
    document = bank_flow()
    host, _, port = etcd_server.endpoint.rpartition(":")
    etcd = aetcd.Client(host=host, port=int(port), timeout=3)
    key = flow_key(PREFIX, "gd", "bank", 1).encode()
    try:
        for round_ in (1, 2):
            process = await start_central(config)
            try:
                await rpc.wait_serving(listen, timeout_s=30)
                if round_ == 1:
                    async with rpc.channel(listen) as channel:
                        stub = ivr_pb2_grpc.IvrServiceStub(channel)
                        reply = await stub.PushFlow(ivr_pb2.PushFlowRequest(document=document), timeout=10)
                        assert reply.created and reply.flow.version == 1
                    got = await etcd.get(key)
                    assert got is not None and decode_flow(got.value).id == "bank"
                else:

                    async def republished() -> bool:
                        return await etcd.get(key) is not None

                    await eventually(republished, what="the new leader republished the flow")
            finally:
                process.send_signal(signal.SIGTERM)
                await process.wait()
            # etcd loses the IVR keys while no central runs (wiped, restored from an old backup).
            await etcd.delete_prefix(ivr_prefix(PREFIX, "gd").encode())
    finally:
        await etcd.close()
