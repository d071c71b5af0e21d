"""Other cities' agents this site's config does not name: an agent an administrator added at
runtime (site_node/roster.py) is in its own site's presence on the state stream, so central's
directory (`CentralService.ListAgents`) lists it; every LEARN_S this site reads that directory and
adds such agents to its own (`Directory.learn`), so a transfer, a consultation or a message from
here reaches them, and the desk's directory shows them. A known agent is never moved, none is
claimed for this site, and nothing is forgotten while the site runs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc

from site_node.callcontrol.directory import Directory
from vcc.v1 import central_pb2, central_pb2_grpc

log = logging.getLogger(__name__)

LEARN_S = 3.0
DEADLINE_S = 3.0


class ProvinceAgents:
    def __init__(
        self, directory: Directory, channel: Callable[[], grpc.aio.Channel], *, every_s: float = LEARN_S
    ) -> None:
        self._directory = directory
        self._channel = channel
        self._every_s = every_s
        # site id -> {code: name} of the agents learned (the desk's directory shows them).
        self.learned: dict[str, dict[str, str]] = {}

    async def learn_once(self) -> int:
        """One read of central's directory; how many agents were new here."""
        reply = await central_pb2_grpc.CentralServiceStub(self._channel()).ListAgents(
            central_pb2.ListAgentsRequest(), timeout=DEADLINE_S
        )
        new = 0
        for entry in reply.agents:
            if self._directory.learn(entry.agent_code, entry.site_id):
                self.learned.setdefault(entry.site_id, {})[entry.agent_code] = entry.name or entry.agent_code
                log.info("agent %s of %s learned from central's directory", entry.agent_code, entry.site_id)
                new += 1
        return new

    async def run(self) -> None:
        while True:
            try:
                await self.learn_once()
            except grpc.aio.AioRpcError as exc:
                # Central away or a follower: the next round asks again (the leader's channel).
                log.debug("province directory not read: %s", exc.code())
            await asyncio.sleep(self._every_s)
