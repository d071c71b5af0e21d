"""The channel of one of a site's links to central's leading replica, shared by every link.

Dialled on first use and again whenever another replica leads (the link asks for the leader's
address each time); the replaced channel closes in the background, its close owned (kept until
done, awaited at `close()`) and bounded (`vcc.rpc.close_channel`), so neither a re-dial nor the
site's stop waits on a dead replica.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc

from vcc import rpc
from vcc.tls import central_server


def dial_central(address: str) -> grpc.aio.Channel:
    return rpc.channel(address, expect=central_server())


class LeaderChannel:
    def __init__(
        self, dial: Callable[[str], grpc.aio.Channel] = dial_central, close_s: float = rpc.CLOSE_S
    ) -> None:
        self._dial = dial
        self._close_s = close_s
        self._channel: grpc.aio.Channel | None = None
        self.dialled: str | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def to(self, address: str) -> grpc.aio.Channel:
        """The channel to `address`, the replica leading now (dialled again if it moved)."""
        if self._channel is None or address != self.dialled:
            self.drop()
            self._channel, self.dialled = self._dial(address), address
        return self._channel

    def drop(self) -> None:
        """Close the channel in the background (the next `to()` dials again)."""
        old, self._channel, self.dialled = self._channel, None, None
        if old is not None:
            task = asyncio.get_running_loop().create_task(
                rpc.close_channel(old, self._close_s), name="central-channel-close"
            )
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    @property
    def closing(self) -> int:
        """Replaced channels whose close has not finished yet."""
        return len(self._closing)

    async def close(self) -> None:
        """Close the channel and wait for every close begun (each within its bound)."""
        self.drop()
        await asyncio.gather(*self._closing, return_exceptions=True)
