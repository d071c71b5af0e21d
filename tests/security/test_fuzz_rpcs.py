"""Every RPC of every server, with random messages, from every kind of
certificate (hypothesis): a kind the table does not allow always gets PERMISSION_DENIED and
changes nothing; an allowed one gets only documented status codes, never a crash (UNKNOWN or
INTERNAL), and a request its handler refuses changes nothing central keeps; a site or desktop at
the service desk without a person's assertion is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import descriptor, message, message_factory
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from central.servicedesk.grpc_api import SERVICE_NAMES as DESK_SERVICES
from site_node.app import SiteNode
from tests.security.conftest import Certs
from tests.security.test_central_identity import Central, serve_central
from tools.province.etcd_server import EtcdServer
from tools.province.generate import DEFAULT_PASSWORD, SiteSpec, generate_province, hash_password
from tools.province.netutil import free_port
from vcc import rpc
from vcc.authz import METHOD_KINDS
from vcc.config import parse_province
from vcc.tls import channel_credentials
from vcc.v1 import (
    audit_pb2,
    central_pb2,
    cti_pb2,
    dialout_pb2,
    ivr_pb2,
    peer_pb2,
    recordings_pb2,
    servicedesk_pb2,
    site_admin_pb2,
    trunk_pb2,
    voicemail_pb2,
)

Code = grpc.StatusCode
STEMS = {
    "site": "site-gz",
    "central": "central-1",
    "tool": "tool-cli",
    "desktop": "desktop-robots",
    "trunk": "trunk-gateway",
}
# What a vcc server may answer (errors are VccErrors mapped at the edge; UNAVAILABLE: not leader,
# no router; DEADLINE_EXCEEDED: a stream that waits for more). Never UNKNOWN or INTERNAL: a crash.
DOCUMENTED = {
    Code.OK,
    Code.INVALID_ARGUMENT,
    Code.NOT_FOUND,
    Code.ALREADY_EXISTS,
    Code.FAILED_PRECONDITION,
    Code.UNAUTHENTICATED,
    Code.PERMISSION_DENIED,
    Code.RESOURCE_EXHAUSTED,
    Code.UNAVAILABLE,
    Code.DEADLINE_EXCEEDED,
    Code.CANCELLED,
    # grpc's health servicer does not implement List (newer than it).
    Code.UNIMPLEMENTED,
}
CENTRAL_SERVICES = (
    "vcc.v1.CentralService",
    "vcc.v1.AuditService",
    "vcc.v1.RecordingIndexService",
    "vcc.v1.IvrService",
    *DESK_SERVICES,
)
# Every service (central's IvrService without etcd's publisher: a push stays in the database).
MODULES = (
    ivr_pb2,
    central_pb2,
    audit_pb2,
    cti_pb2,
    peer_pb2,
    site_admin_pb2,
    trunk_pb2,
    servicedesk_pb2,
    recordings_pb2,
    voicemail_pb2,
    dialout_pb2,
    health_pb2,
    reflection_pb2,
)


def methods() -> dict[str, descriptor.MethodDescriptor]:
    out = {}
    for module in MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                out[f"/{service.full_name}/{m.name}"] = m
    return out


METHODS = methods()


def random_message(desc: descriptor.Descriptor, draw: Any, depth: int = 0) -> message.Message:
    """A message of `desc` with random scalars, and random sub-messages two levels deep."""
    msg = message_factory.GetMessageClass(desc)()
    for field in desc.fields:
        if draw(st.booleans()):
            continue
        if field.type == field.TYPE_MESSAGE:
            if depth < 2 and not field.message_type.GetOptions().map_entry and not field.is_repeated:
                getattr(msg, field.name).CopyFrom(random_message(field.message_type, draw, depth + 1))
            continue
        if field.is_repeated:
            continue
        if field.type == field.TYPE_STRING:
            value: Any = draw(
                st.text(max_size=40) | st.sampled_from(["gz", "sz", "1001", "10000", "13800000001"])
            )
        elif field.type == field.TYPE_BOOL:
            value = draw(st.booleans())
        elif field.type in (field.TYPE_DOUBLE, field.TYPE_FLOAT):
            value = draw(st.floats(allow_nan=False, allow_infinity=False, width=32))
        elif field.type == field.TYPE_ENUM:
            value = draw(st.sampled_from([v.number for v in field.enum_type.values]))
        elif field.type in (field.TYPE_UINT32, field.TYPE_UINT64, field.TYPE_FIXED32, field.TYPE_FIXED64):
            value = draw(st.integers(0, 2**31))
        elif field.type == field.TYPE_BYTES:
            value = draw(st.binary(max_size=40))
        else:
            value = draw(st.integers(-(2**31), 2**31 - 1))
        setattr(msg, field.name, value)
    return msg


def call_streaming(channel: grpc.Channel, method: str, request: message.Message) -> grpc.StatusCode:
    """A client-streaming call, on the blocking API: grpc.aio reports INTERNAL for a call whose
    request is written as the server ends it (a refusal, on a busy machine), in place of the
    server's status (grpc/grpc#36066); the blocking API reports the server's."""
    out_cls = message_factory.GetMessageClass(METHODS[method].output_type)
    try:
        for _ in channel.stream_stream(
            method,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=out_cls.FromString,
        )(iter([request]), timeout=2):
            pass
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return Code.OK


async def call(channel: grpc.aio.Channel, method: str, request: message.Message) -> grpc.StatusCode:
    desc = METHODS[method]
    out_cls = message_factory.GetMessageClass(desc.output_type)
    assert not desc.client_streaming, "client-streaming calls: call_streaming"
    try:
        if desc.server_streaming:
            stream = channel.unary_stream(
                method,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=out_cls.FromString,
            )(request, timeout=0.5)
            async for _ in stream:
                pass
        else:
            await channel.unary_unary(
                method,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=out_cls.FromString,
            )(request, timeout=2)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return Code.OK


@dataclass
class Servers:
    central: Central
    site: SiteNode


@pytest.fixture
async def servers(tmp_path: Path, etcd_server: EtcdServer, certs: Certs) -> AsyncIterator[Servers]:
    config = generate_province(
        [
            SiteSpec("gz", "GZ", trunk_channels=2, agents={"general": 1}),
            SiteSpec("sz", "SZ", 2, {"general": 1}),
        ],
        etcd_endpoint=etcd_server.endpoint,
        central_listen=f"127.0.0.1:{free_port()}",
        database_url="sqlite+aiosqlite:///unused.db",
        password_hash=hash_password(DEFAULT_PASSWORD),
        outbox_dir=tmp_path,
    )
    site = SiteNode(parse_province(config), "gz", certs.files("site-gz"))
    await site.start()
    try:
        async for central in serve_central(tmp_path, certs.files("central-1")):
            yield Servers(central, site)
    finally:
        await site.stop()


@pytest.mark.timeout(300)
async def test_every_rpc_from_every_kind(servers: Servers, certs: Certs) -> None:
    channels = {
        (kind, where): rpc.channel(
            servers.central.address if where == "central" else servers.site.address, tls=certs.files(stem)
        )
        for kind, stem in STEMS.items()
        for where in ("central", "site")
    }
    blocking = {
        (kind, where): grpc.secure_channel(
            servers.central.address if where == "central" else servers.site.address,
            channel_credentials(certs.files(stem)),
            options=rpc.CHANNEL_OPTIONS,
        )
        for kind, stem in STEMS.items()
        for where in ("central", "site")
    }
    seen: list[tuple[str, str, grpc.StatusCode]] = []

    def fuzz(method: str, kind: str) -> None:
        # A few random messages for each (method, kind): every pair is tried, none is left to luck.
        # A refused kind is refused before its message is read: one is enough.
        examples = 4 if kind in METHOD_KINDS[method] else 1

        @settings(
            max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
        )
        @given(st.data())
        def one(data: st.DataObject) -> None:
            request = random_message(METHODS[method].input_type, data.draw)
            service = method.split("/")[1]
            where = "central" if service in CENTRAL_SERVICES else "site"
            before = asyncio.run_coroutine_threadsafe(state(servers), loop).result()
            if METHODS[method].client_streaming:
                code = call_streaming(blocking[(kind, where)], method, request)
            else:
                code = asyncio.run_coroutine_threadsafe(
                    call(channels[(kind, where)], method, request), loop
                ).result()
            seen.append((method, kind, code))
            after = asyncio.run_coroutine_threadsafe(state(servers), loop).result()
            if kind not in METHOD_KINDS[method]:
                assert code == Code.PERMISSION_DENIED, (method, kind, code)
                assert after == before
            else:
                assert code in DOCUMENTED, (method, kind, code, request)
                # Every method is served (only grpc's health servicer lacks List).
                assert code != Code.UNIMPLEMENTED or method.endswith("Health/List"), method
                if code in REFUSALS:
                    # A refused request of an allowed caller changes nothing central keeps (the
                    # site's calls and logins also move by themselves: timers, gone desks).
                    assert after.central == before.central, (method, kind, code, request)
            if kind in ("site", "desktop") and method.split("/")[1] in DESK_SERVICES:
                # No person vouched for (no assertion): refused, whatever the message.
                assert code == Code.PERMISSION_DENIED, (method, kind, code)

        one()

    loop = asyncio.get_running_loop()
    for method in sorted(METHODS):
        for kind in sorted(STEMS):
            await asyncio.to_thread(fuzz, method, kind)
    for ch in channels.values():
        await ch.close()
    for sync_channel in blocking.values():
        sync_channel.close()
    # Every method was tried, allowed and refused.
    assert {m for m, _, _ in seen} == set(METHODS)


@dataclass(frozen=True)
class State:
    # Central's call events and the service desk's and recording index's rows.
    central: tuple[int, ...]
    # The site's calls and logged-in agents.
    site: tuple[int, int]


DESK_TABLES = (
    "customers",
    "tickets",
    "ticket_entries",
    "kb_articles",
    "recordings",
    "ivr_flows",
    "ivr_service_catalogs",
)
# Codes of a request refused by its handler (not OK, not a time-out or a stream ended early).
REFUSALS = {
    Code.INVALID_ARGUMENT,
    Code.NOT_FOUND,
    Code.ALREADY_EXISTS,
    Code.FAILED_PRECONDITION,
    Code.UNAUTHENTICATED,
    Code.PERMISSION_DENIED,
}


async def state(servers: Servers) -> State:
    sb = servers.site.switchboard
    logged_in = sum(1 for a in sb.agents.values() if a.state.name != "LOGGED_OUT")
    async with servers.central.engine.connect() as conn:
        rows = [
            int((await conn.execute(sa.text(f"select count(*) from {table}"))).scalar_one())
            for table in DESK_TABLES
        ]
    return State((await servers.central.stored_events(), *rows), (len(sb.calls), logged_in))
