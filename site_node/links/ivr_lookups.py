"""A flow's data look-ups at central (IvrService.Lookup), on the channel the screen pops use.

The flow node's own timeout is the flow's deadline (the call control's timer); the RPC is given a
little longer, so that an answer that comes late still arrives and is seen to take the timeout's
path rather than vanish. Any failure answers None: the flow goes on at `on_timeout`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import grpc

from site_node.links.customers import CentralCustomers
from vcc.v1 import ivr_pb2, ivr_pb2_grpc

log = logging.getLogger(__name__)

# Beyond the flow's own timeout: how long a late answer is still waited for (to be discarded).
LATE_GRACE_S = 2.0


class CentralLookups:
    def __init__(self, central: CentralCustomers) -> None:
        self._central = central

    async def lookup(self, name: str, args: Mapping[str, str], timeout_s: float) -> dict[str, str] | None:
        """The answer's fields ({} when central found nothing on record); None when it failed."""
        try:
            stub = ivr_pb2_grpc.IvrServiceStub(self._central.channel())
            reply = await stub.Lookup(
                ivr_pb2.LookupRequest(name=name, args=dict(args)), timeout=timeout_s + LATE_GRACE_S
            )
        except grpc.aio.AioRpcError as exc:
            log.info("IVR look-up %s failed: %s %s", name, exc.code().name, exc.details())
            return None
        return dict(reply.fields) if reply.found else {}
