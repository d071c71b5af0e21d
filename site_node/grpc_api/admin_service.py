"""gRPC adapter for operators: the site's live status."""

from __future__ import annotations

from typing import Any

import grpc

from site_node.runtime import SiteRuntime
from vcc.rpc import maps_errors
from vcc.v1 import site_admin_pb2, site_admin_pb2_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]


class SiteAdmin(site_admin_pb2_grpc.SiteAdminServiceServicer):
    def __init__(self, runtime: SiteRuntime, describe: Any) -> None:
        self.rt = runtime
        self._describe = describe

    @maps_errors
    async def GetSiteStatus(
        self, request: site_admin_pb2.GetSiteStatusRequest, context: Ctx
    ) -> site_admin_pb2.GetSiteStatusResponse:
        return site_admin_pb2.GetSiteStatusResponse(summary=self._describe())
