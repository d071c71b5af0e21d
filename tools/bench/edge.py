"""CPU of a unary RPC through the chain of server interceptors against the one `ServerEdge`.

`python -m tools.bench.edge [RPCS] [ROUNDS]`: one process, a grpc.aio server on loopback with the
health service, a plain client; each round sends RPCS health checks through the server composed
one way, then the other (alternating, so that the machine's load falls on both alike), with the
server span (traced, exported to a JSON-lines file as the processes do) and the latency
histogram. Prints the process CPU per RPC (client and server together) of each, and the ratio.
The authorizer is left out of both (it needs mutual TLS; its per-RPC work is the same in both).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from statistics import median

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from vcc.config import TracingConfig
from vcc.metrics import Metrics
from vcc.server_edge import ServerEdge
from vcc.tracing import Tracing


async def _round(interceptors: Sequence[grpc.aio.ServerInterceptor], rpcs: int) -> float:
    server = grpc.aio.server(interceptors=list(interceptors))
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest()
            for _ in range(50):  # connected and warm
                await stub.Check(request, timeout=5)
            start = time.process_time()
            for _ in range(rpcs):
                await stub.Check(request, timeout=5)
            return (time.process_time() - start) / rpcs
    finally:
        await server.stop(None)


async def measure(rpcs: int = 2000, rounds: int = 5) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="vcc-edge-") as tmp:
        tracing = Tracing("bench:edge", TracingConfig(enabled=True), traces_dir=Path(tmp))
        metrics = Metrics("bench:edge")
        chain = [*tracing.server_interceptors(), metrics.server_interceptor()]
        edge = [ServerEdge(tracer=tracing.tracer, latency=metrics.rpc_server)]
        times: dict[str, list[float]] = {"chain": [], "edge": []}
        for _ in range(rounds):
            times["chain"].append(await _round(chain, rpcs))
            times["edge"].append(await _round(edge, rpcs))
        await asyncio.to_thread(tracing.shutdown)
    out = {name: median(values) * 1e6 for name, values in times.items()}
    return {
        "chain_us_per_rpc": out["chain"],
        "edge_us_per_rpc": out["edge"],
        "ratio_edge_chain": out["edge"] / out["chain"],
        "load_average_after": os.getloadavg()[0],
    }


def main() -> None:
    rpcs = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    result = asyncio.run(measure(rpcs, rounds))
    for key, value in result.items():
        print(f"{key}: {value:.3f}")


if __name__ == "__main__":
    main()
