"""`vcc audit`: central's audit log in the terminal (or as JSON lines)."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime

from google.protobuf import json_format

from vcc import rpc
from vcc.config import ProvinceConfig
from vcc.tls import central_server
from vcc.v1 import audit_pb2, audit_pb2_grpc

# ASCII digits only (`\d` also takes full-width ones), and no trailing newline (`$` allows one).
_DURATION = re.compile(r"^([0-9]+)([smhd])\Z")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float) -> float:
    """`15m`, `2h`, `1d` (ago), or an ISO date/time (UTC unless it says otherwise)."""
    m = _DURATION.match(text)
    if m:
        return now - int(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since: 15m, 2h, 1d or an ISO time, not {text!r}") from None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


async def fetch(
    config: ProvinceConfig, *, since: float | None, who: str, limit: int, deadline_s: float
) -> list[audit_pb2.AuditEntry]:
    request = audit_pb2.ListAuditRequest(who=who, page_size=limit)
    if since is not None:
        request.since.CopyFrom(rpc.timestamp(since))
    async with rpc.channel(config.central.listen, expect=central_server()) as ch:
        reply = await audit_pb2_grpc.AuditServiceStub(ch).ListAudit(request, timeout=deadline_s)
    return list(reply.entries)


def lines(entries: list[audit_pb2.AuditEntry], as_json: bool) -> list[str]:
    if as_json:
        return [
            json.dumps(json_format.MessageToDict(e, preserving_proto_field_name=True), ensure_ascii=False)
            for e in entries
        ]
    out = []
    for e in entries:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rpc.unix_s(e.at)))
        detail = " ".join(f"{k}={v}" for k, v in sorted(e.detail.items()))
        site = e.site_id or "central"
        out.append(
            f"{at}  {site:<7} {e.outcome:<7} {e.actor:<16} {e.action:<18} {e.target}  {e.source}  {detail}"
        )
    return out
