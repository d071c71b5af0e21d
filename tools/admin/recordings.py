"""`vcc recordings list|fetch`: central's index of call recordings, and a recording's file fetched
from the site that keeps it (its checksum checked against the index)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format

from vcc import rpc
from vcc.config import ProvinceConfig
from vcc.tls import central_server, site_server
from vcc.v1 import recordings_pb2, recordings_pb2_grpc


class FetchError(Exception):
    """The file could not be had, or it is not the one the index describes."""


@dataclass(frozen=True)
class Filters:
    call_id: str = ""
    agent_code: str = ""
    caller_number: str = ""
    since: float | None = None
    until: float | None = None
    limit: int = 100


async def search(
    config: ProvinceConfig, filters: Filters, deadline_s: float
) -> list[recordings_pb2.Recording]:
    request = recordings_pb2.ListRecordingsRequest(
        call_id=filters.call_id,
        agent_code=filters.agent_code,
        caller_number=filters.caller_number,
        page_size=filters.limit,
    )
    if filters.since is not None:
        request.since.CopyFrom(rpc.timestamp(filters.since))
    if filters.until is not None:
        request.until.CopyFrom(rpc.timestamp(filters.until))
    async with rpc.channel(config.central.listen, expect=central_server()) as ch:
        reply = await recordings_pb2_grpc.RecordingIndexServiceStub(ch).ListRecordings(
            request, timeout=deadline_s
        )
    return list(reply.recordings)


async def fetch(
    config: ProvinceConfig, call_id: str, out: Path, deadline_s: float
) -> recordings_pb2.Recording:
    """The call's recording written to the file `out`."""
    found = await search(config, Filters(call_id=call_id, limit=10), deadline_s)
    if not found:
        raise FetchError(f"no recording of call {call_id} in central's index")
    entry = found[0]
    sites = {s.id: s for s in config.sites}
    if entry.site_id not in sites:
        raise FetchError(f"the recording is at site {entry.site_id!r}, which is not in this config")
    part = out.with_name(out.name + ".part")
    digest = hashlib.sha256()
    # The site that keeps it must answer there, not any certificate of the province.
    async with rpc.channel(sites[entry.site_id].listen, expect=site_server(entry.site_id)) as ch:
        stub = recordings_pb2_grpc.SiteRecordingServiceStub(ch)
        with part.open("wb") as f:
            async for chunk in stub.FetchRecording(
                recordings_pb2.FetchRecordingRequest(call_id=call_id), timeout=deadline_s * 10
            ):
                digest.update(chunk.data)
                f.write(chunk.data)
    if digest.hexdigest() != entry.sha256:
        part.unlink(missing_ok=True)
        raise FetchError(f"the file from {entry.site_id} does not match the index's checksum")
    part.replace(out)
    return entry


def lines(recordings: list[recordings_pb2.Recording], as_json: bool) -> list[str]:
    if as_json:
        return [
            json.dumps(json_format.MessageToDict(r, preserving_proto_field_name=True), ensure_ascii=False)
            for r in recordings
        ]
    out = []
    for r in recordings:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rpc.unix_s(r.started_at)))
        agents = ",".join(r.agent_codes) or "-"
        out.append(
            f"{at}  {r.site_id:<7} {r.call_id:<34} {r.caller_number or '-':<14} {agents:<12} "
            f"{r.duration_s:7.1f}s  {r.file}"
        )
    return out
