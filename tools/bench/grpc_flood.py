"""A flood of new streams at a bare grpc.aio server whose event loop is starved (no vcc code).

The scale bench's callers once failed CANCELLED or INTERNAL ("Internal error from Core") within a
fraction of a second of dialling, never reaching the site's code (docs/BENCHMARKS.md, scale). This
shows the same with nothing of vcc: `streams` bidirectional streams opened at `rate` a second over
channels of `per_channel`, to a server (a child process, plaintext, no interceptors) whose loop is
kept busy `server_busy_ms` in every `server_busy_ms + gap_ms`, or a client's loop kept busy the
same way. Each stream writes one message, reads the answer and waits until all are open.

    python -m tools.bench.grpc_flood --server-busy-ms 500
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from tools.province.netutil import free_port

SERVICE, METHOD = "flood.Flood", "Call"


def _same(data: bytes) -> bytes:
    return data


async def _busy(busy_ms: float, gap_ms: float) -> None:
    """Holds the loop `busy_ms` (a handler or a parser that does not yield), then lets it go."""
    while True:
        until = time.perf_counter() + busy_ms / 1000
        while time.perf_counter() < until:
            pass
        await asyncio.sleep(gap_ms / 1000)


async def serve(port: int, busy_ms: float, gap_ms: float, options: list[tuple[str, Any]]) -> None:
    server = grpc.aio.server(options=options)

    async def call(requests: AsyncIterator[bytes], _context: Any) -> AsyncIterator[bytes]:
        await anext(requests)
        yield b"answer"
        async for _ in requests:
            pass

    handler = grpc.stream_stream_rpc_method_handler(call, _same, _same)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    burner = asyncio.create_task(_busy(busy_ms, gap_ms)) if busy_ms else None
    try:
        await server.wait_for_termination()
    finally:
        if burner is not None:
            burner.cancel()


async def flood(
    port: int, streams: int, rate: int, per_channel: int, client_busy_ms: float, gap_ms: float
) -> dict[str, Any]:
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(-(-streams // per_channel))
    ]
    await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in channels)), 60.0)
    counts: collections.Counter[str] = collections.Counter()
    ages: list[float] = []
    release = asyncio.Event()

    async def one(n: int) -> None:
        dialled = time.monotonic()
        call = channels[n // per_channel].stream_stream(
            f"/{SERVICE}/{METHOD}", request_serializer=_same, response_deserializer=_same
        )(timeout=600.0)
        try:
            await call.write(b"offer")
            await call.read()
            counts["answered"] += 1
            await release.wait()
        except grpc.aio.AioRpcError as exc:
            counts[f"{exc.code().name}: {exc.details()}"] += 1
            ages.append(time.monotonic() - dialled)
        finally:
            call.cancel()

    burner = asyncio.create_task(_busy(client_busy_ms, gap_ms)) if client_busy_ms else None
    tasks = []
    for n in range(streams):
        tasks.append(asyncio.create_task(one(n)))
        if n % rate == rate - 1:
            await asyncio.sleep(1.0)
    for _ in range(120):
        if counts["answered"] + len(ages) >= streams:
            break
        await asyncio.sleep(1.0)
    release.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    if burner is not None:
        burner.cancel()
    for ch in channels:
        await ch.close()
    ages.sort()
    return {
        "streams": streams,
        "outcomes": dict(counts),
        "failed": len(ages),
        "failed_after_s": {"p50": ages[len(ages) // 2], "max": ages[-1]} if ages else {},
        "load_average": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=250, help="new streams a second")
    parser.add_argument("--per-channel", type=int, default=90)
    parser.add_argument("--server-busy-ms", type=float, default=0.0)
    parser.add_argument("--client-busy-ms", type=float, default=0.0)
    parser.add_argument("--gap-ms", type=float, default=50.0)
    parser.add_argument("--server-option", action="append", default=[], help="name=integer, for the server")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    options = [(k, int(v)) for k, v in (o.split("=", 1) for o in args.server_option)]
    if args.serve:
        asyncio.run(serve(args.serve, args.server_busy_ms, args.gap_ms, options))
        return
    port = free_port()
    child = [sys.executable, "-m", "tools.bench.grpc_flood", "--serve", str(port)]
    child += ["--server-busy-ms", str(args.server_busy_ms), "--gap-ms", str(args.gap_ms)]
    child += [f"--server-option={o}" for o in args.server_option]
    server = subprocess.Popen(child)
    try:
        time.sleep(2.0)
        result = asyncio.run(
            flood(port, args.streams, args.rate, args.per_channel, args.client_busy_ms, args.gap_ms)
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
