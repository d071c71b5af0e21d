"""What each piece of the security layer costs per RPC, split (issue 11): TLS itself, the server
edge's authorizer (vcc.authz through vcc.server_edge), the person assertion check, and per message
on a stream.

`python -m tools.bench.security [RPCS] [ROUNDS]`: one process, a grpc.aio server on loopback with
the one server edge (`ServerEdge`, its latency histogram, as every vcc server has it) and a
stand-in service desk (`CustomerService/GetCustomer` answering at once) and desktop stream
(`AgentDesktopService/StreamEvents` sending MESSAGES messages). Each round runs every variant in
turn (so that the machine's load falls on all alike) and the process CPU (client and server
together) per RPC is the median over the rounds:

* `plaintext`: no TLS, no authorizer (what `vcc bench throughput --compare tls` runs);
* `tls`: mutual TLS, no authorizer: TLS itself;
* `tls_authz`: mutual TLS and the authorizer (the table, the per-client limit);
* `tls_authz_person`: and central's person check of the `vcc-person` assertion (a desktop server
  acting for an agent at the service desk);
* `stream_*`: CPU per message of a server stream, plaintext and with TLS and the authorizer.

Every variant sends the same request and the same metadata; only the server differs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from statistics import median
from typing import Any

import grpc

from tools.province.certs import issue, make_ca
from vcc import rpc
from vcc.authz import Authorizer
from vcc.metrics import Metrics
from vcc.person_assertion import METADATA_KEY, PersonGate, PersonSigner
from vcc.server_edge import ServerEdge
from vcc.tls import TlsFiles, central_server
from vcc.v1 import cti_pb2, cti_pb2_grpc
from vcc.v1 import servicedesk_pb2 as pb
from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

MESSAGES = 200
DEADLINE_S = 10.0


class _Desk(pb_grpc.CustomerServiceServicer):
    async def GetCustomer(self, request: pb.GetCustomerRequest, context: Any) -> pb.GetCustomerResponse:
        return pb.GetCustomerResponse()


class _Desktop(cti_pb2_grpc.AgentDesktopServiceServicer):
    async def StreamEvents(
        self, request: cti_pb2.StreamEventsRequest, context: Any
    ) -> AsyncIterator[cti_pb2.StreamEventsResponse]:
        event = cti_pb2.StreamEventsResponse()
        event.state_changed.agent.agent_code = "1001"
        for _ in range(MESSAGES):
            yield event


class _Certs:
    def __init__(self, folder: Path) -> None:
        make_ca(folder, "bench")
        for kind, name in (("central", "1"), ("desktop", "robots"), ("site", "gz")):
            issue(folder, kind, name)
        self.folder = folder

    def files(self, stem: str) -> TlsFiles:
        return TlsFiles(self.folder / "ca.crt", self.folder / f"{stem}.crt", self.folder / f"{stem}.key")


async def _serve(certs: _Certs | None, authorizer: Authorizer | None) -> tuple[rpc.Server, int]:
    edge = ServerEdge(latency=Metrics("bench:security").rpc_server, authorizer=authorizer)
    server = rpc.Server([], tls=certs.files("central-1") if certs else None, interceptors=[edge])
    pb_grpc.add_CustomerServiceServicer_to_server(_Desk(), server.grpc)  # type: ignore[abstract]
    cti_pb2_grpc.add_AgentDesktopServiceServicer_to_server(_Desktop(), server.grpc)  # type: ignore[abstract]
    return server, await server.start("127.0.0.1:0")


async def _unary(channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...], rpcs: int) -> float:
    stub = pb_grpc.CustomerServiceStub(channel)
    request = pb.GetCustomerRequest(customer_id="c-1")
    for _ in range(50):  # connected and warm
        await stub.GetCustomer(request, timeout=DEADLINE_S, metadata=metadata)
    start = time.process_time()
    for _ in range(rpcs):
        await stub.GetCustomer(request, timeout=DEADLINE_S, metadata=metadata)
    return (time.process_time() - start) / rpcs


async def _stream(channel: grpc.aio.Channel, streams: int) -> float:
    stub = cti_pb2_grpc.AgentDesktopServiceStub(channel)
    request = cti_pb2.StreamEventsRequest(session_token="x")
    async for _ in stub.StreamEvents(request, timeout=DEADLINE_S):
        pass
    start = time.process_time()
    for _ in range(streams):
        async for _ in stub.StreamEvents(request, timeout=DEADLINE_S):
            pass
    return (time.process_time() - start) / (streams * MESSAGES)


async def measure(rpcs: int = 2000, rounds: int = 5) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="vcc-bench-security-"))
    try:
        certs = _Certs(folder)
        assertion = PersonSigner(certs.files("site-gz"), "gz").sign("1001", "a-session", ttl_s=3600)
        metadata = ((METADATA_KEY, assertion),)
        gate = PersonGate(folder / "ca.crt", {"gz": {"1001": "agent"}})
        client = certs.files("desktop-robots")

        def plain() -> tuple[_Certs | None, Authorizer | None]:
            return None, None

        def tls() -> tuple[_Certs | None, Authorizer | None]:
            return certs, None

        def authz() -> tuple[_Certs | None, Authorizer | None]:
            return certs, Authorizer(["gz"])

        def person() -> tuple[_Certs | None, Authorizer | None]:
            return certs, Authorizer(["gz"], persons=gate)

        variants: dict[str, Callable[[], tuple[_Certs | None, Authorizer | None]]] = {
            "plaintext": plain,
            "tls": tls,
            "tls_authz": authz,
            "tls_authz_person": person,
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        times |= {"stream_plaintext": [], "stream_tls_authz": []}
        for _ in range(rounds):
            for name, make in variants.items():
                server_certs, authorizer = make()
                server, port = await _serve(server_certs, authorizer)
                files = client if server_certs else None
                try:
                    async with _channel(port, files) as channel:
                        times[name].append(await _unary(channel, metadata, rpcs))
                        if name in ("plaintext", "tls_authz"):
                            streams = max(1, rpcs // MESSAGES)
                            times[f"stream_{name}"].append(await _stream(channel, streams))
                finally:
                    await server.stop(0)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    us = {name: median(values) * 1e6 for name, values in times.items()}
    base = us["plaintext"]
    return {
        **{f"{name}_us_per_rpc": value for name, value in us.items() if not name.startswith("stream")},
        "stream_plaintext_us_per_message": us["stream_plaintext"],
        "stream_tls_authz_us_per_message": us["stream_tls_authz"],
        "tls_over_plaintext": us["tls"] / base,
        "authz_over_tls": us["tls_authz"] / us["tls"],
        "person_over_authz": us["tls_authz_person"] / us["tls_authz"],
        "all_over_plaintext": us["tls_authz_person"] / base,
        "load_average_after": os.getloadavg()[0],
    }


def _channel(port: int, files: TlsFiles | None) -> grpc.aio.Channel:
    if files is None:
        return grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=rpc.CHANNEL_OPTIONS)
    return rpc.channel(f"127.0.0.1:{port}", tls=files, expect=central_server())


def main() -> None:
    rpcs = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    result = asyncio.run(measure(rpcs, rounds))
    for key, value in result.items():
        print(f"{key}: {value:.3f}")


if __name__ == "__main__":
    main()
