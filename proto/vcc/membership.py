"""The etcd layout of a province: who writes which key, and how values are encoded.

A site keeps `<prefix>/<province>/sites/<site_id>` alive under its lease; the value is its
SiteSummary as protobuf JSON (readable with `etcdctl get`). Central watches the prefix.
"""

from __future__ import annotations

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
