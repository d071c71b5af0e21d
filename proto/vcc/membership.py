"""The etcd layout of a province: who writes which key, and how values are encoded.

A site keeps `<prefix>/<province>/sites/<site_id>` alive under its lease; the value is its
SiteSummary as protobuf JSON (readable with `etcdctl get`). Central watches the prefix.
The central replica that leads keeps `<prefix>/<province>/central/leader` (see below).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from google.protobuf import json_format

from vcc.v1 import site_admin_pb2


def sites_prefix(prefix: str, province_id: str) -> str:
    return f"{prefix.rstrip('/')}/{province_id}/sites/"


def site_key(prefix: str, province_id: str, site_id: str) -> str:
    return sites_prefix(prefix, province_id) + site_id


def encode_summary(summary: site_admin_pb2.SiteSummary) -> bytes:
    return json_format.MessageToJson(summary, indent=None, preserving_proto_field_name=True).encode()


def decode_summary(raw: bytes) -> site_admin_pb2.SiteSummary:
    summary = site_admin_pb2.SiteSummary()
    json_format.Parse(raw.decode(), summary, ignore_unknown_fields=True)
    return summary


# -- the central leader ------------------------------------------------------------------------------
# The replica that leads keeps `<prefix>/<province>/central/leader` alive under its lease; the value is
# LeaderInfo as JSON. The key's create revision is the leader's epoch (its fencing token): a later
# term always has a higher one.


@dataclass(frozen=True)
class LeaderInfo:
    replica_id: str
    address: str
    epoch: int


def central_leader_key(prefix: str, province_id: str) -> str:
    return f"{prefix.rstrip('/')}/{province_id}/central/leader"


def encode_leader(replica_id: str, address: str, epoch: int = 0) -> bytes:
    """The value a replica writes when it campaigns (epoch 0: not known before the key exists)."""
    return json.dumps({"replica_id": replica_id, "address": address, "epoch": epoch}).encode()


def decode_leader(raw: bytes, create_revision: int) -> LeaderInfo:
    """The leader named by the key; the epoch is the key's create revision (what etcd vouches for)."""
    data = json.loads(raw.decode())
    if not isinstance(data, dict):
        raise ValueError("the leader value is not a JSON object")
    return LeaderInfo(str(data.get("replica_id", "")), str(data.get("address", "")), int(create_revision))
