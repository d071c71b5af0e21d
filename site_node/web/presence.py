"""The province's directory with presence, for transfer and consult targets: every agent of every
city with its state, every skill group with its ready agents. This city from its own call
control; the others from their SiteAdminService status (asked every POLL_S while a desk or
console is open; a city that does not answer is shown as unreachable, its agents unknown)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from site_node.callcontrol import Switchboard
from vcc.config import ProvinceConfig
from vcc.rpc import channel
from vcc.tls import site_server
from vcc.v1 import site_admin_pb2, site_admin_pb2_grpc

log = logging.getLogger(__name__)
POLL_S = 2.0
RPC_TIMEOUT_S = 1.5


class Presence:
    def __init__(
        self,
        province: ProvinceConfig,
        sb: Switchboard,
        wanted: Callable[[], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.province = province
        self.sb = sb
        self._wanted = wanted
        self._clock = clock
        self._peers = {s.id: s.listen for s in province.sites if s.id != sb.site_id}
        self._summaries: dict[str, tuple[float, site_admin_pb2.SiteSummary | None]] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="desk-presence")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for ch in self._channels.values():
            await ch.close()

    async def _run(self) -> None:
        while True:
            if self._wanted():
                await asyncio.gather(*(self._poll(site_id) for site_id in self._peers))
            await asyncio.sleep(POLL_S)

    def channel(self, site_id: str) -> grpc.aio.Channel:
        """The channel to another site of the province (shared by presence and messages)."""
        ch = self._channels.get(site_id)
        if ch is None:
            ch = self._channels[site_id] = channel(self._peers[site_id], expect=site_server(site_id))
        return ch

    async def _poll(self, site_id: str) -> None:
        ch = self.channel(site_id)
        try:
            reply = await site_admin_pb2_grpc.SiteAdminServiceStub(ch).GetSiteStatus(
                site_admin_pb2.GetSiteStatusRequest(), timeout=RPC_TIMEOUT_S
            )
            self._summaries[site_id] = (self._clock(), reply.summary)
        except grpc.aio.AioRpcError as exc:
            log.debug("presence of %s unavailable: %s", site_id, exc.code())
            self._summaries[site_id] = (self._clock(), None)

    def directory(self) -> list[dict[str, Any]]:
        out = []
        for s in self.province.sites:
            groups = [{"id": g.id, "name": g.name or g.id} for g in s.skill_groups]
            if s.id == self.sb.site_id:
                states = {code: str(a.state) for code, a in self.sb.agents.items()}
                ready = {g["id"]: self.sb.acd.ready_count(g["id"]) for g in groups}
                up, age = True, 0.0
            else:
                at, summary = self._summaries.get(s.id, (0.0, None))
                up = summary is not None
                age = round(self._clock() - at, 1) if at else None  # type: ignore[assignment]
                states = dict(summary.agent_states) if summary is not None else {}
                ready = {g.skill_group: g.agents_ready for g in summary.skill_groups} if summary else {}
            agents = [
                {"code": a.code, "name": a.name, "state": states.get(a.code, "UNKNOWN"), "role": a.role}
                for a in s.agents
            ]
            # Agents added at runtime (here by our administrator, there learned from central's
            # directory): not in the config, but reachable.
            named = {a.code for a in s.agents}
            added = {c for c, at in self.sb.directory.agent_sites.items() if at == s.id} - named
            agents += [
                {"code": c, "name": c, "state": states.get(c, "UNKNOWN"), "role": "agent"}
                for c in sorted(added)
            ]
            out.append(
                {
                    "site_id": s.id,
                    "name": s.name,
                    "up": up,
                    "age_s": age,
                    "agents": agents,
                    "skill_groups": [{**g, "ready": ready.get(g["id"], 0)} for g in groups],
                }
            )
        return out
