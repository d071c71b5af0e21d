"""`vcc call`: one scripted test call over a site's gRPC trunk (site administrators testing a flow).

The caller dials a number, hears the prompts (ids and texts, in order), presses one key group at
each prompt that asks for keys ("2 1 #": "2" at the first, "1" at the second, "#" at the third),
stays silent once the groups are spent, and hangs up `wait_s` after the call reached a queue, an
agent or a voicemail box (or when it ended). What each key did comes from the call's record at
central (the site's DIGITS events), fetched once the call is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from vcc import rpc
from vcc.tls import TRUNK, central_server
from vcc.v1 import central_pb2, central_pb2_grpc, common_pb2, trunk_pb2, trunk_pb2_grpc

# A call that hears nothing for this long is given up (hung up) and says so.
SILENT_LIMIT_S = 30.0
RECORD_WAIT_S = 15.0


async def scripted_call(
    site_address: str,
    number: str,
    digit_groups: Sequence[str],
    *,
    wait_s: float = 0.0,
    ani: str = "13800000000",
    central_address: str | None = None,
    hang_up_after_s: float | None = None,
    gate: asyncio.Event | None = None,
    channel: grpc.aio.Channel | None = None,
) -> dict[str, Any]:
    """Place one call and report it: {"call_id", "heard": [...], "steps": [...], "ended": {...},
    "effects": [...] (from central's record, when `central_address` is given)}. `gate`: the
    first keys wait for it (a test holding callers in a menu while it changes the flow); `channel`:
    a trunk channel to share (many test calls at once), else one of its own."""
    requests: asyncio.Queue[trunk_pb2.PlaceCallRequest | None] = asyncio.Queue()
    requests.put_nowait(
        trunk_pb2.PlaceCallRequest(
            offer=trunk_pb2.CallOffer(idempotency_key=uuid.uuid4().hex, ani=ani, dnis=number)
        )
    )

    async def outgoing() -> AsyncIterator[trunk_pb2.PlaceCallRequest]:
        while (request := await requests.get()) is not None:
            yield request

    groups = [g for g in digit_groups if g]
    report: dict[str, Any] = {"number": number, "call_id": "", "heard": [], "steps": [], "ended": None}
    started = time.monotonic()
    hang_up_at: float | None = None if hang_up_after_s is None else started + hang_up_after_s
    hung_up = False

    def hang_up() -> None:
        nonlocal hung_up
        if not hung_up:
            hung_up = True
            report["steps"].append({"at": round(time.monotonic() - started, 3), "hang_up": True})
            requests.put_nowait(trunk_pb2.PlaceCallRequest(hang_up=trunk_pb2.CallerHangUp()))

    async with contextlib.AsyncExitStack() as own:
        if channel is None:
            channel = await own.enter_async_context(rpc.channel(site_address, persona=TRUNK))
        stream = trunk_pb2_grpc.TrunkIngressServiceStub(channel).PlaceCall(outgoing())
        # Read apart: a timed-out wait must not cancel the call's stream.
        incoming: asyncio.Queue[object] = asyncio.Queue()

        async def read() -> None:
            try:
                async for message in stream:
                    incoming.put_nowait(message)
            except grpc.aio.AioRpcError as exc:
                incoming.put_nowait(exc)
            incoming.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                timeout = SILENT_LIMIT_S
                if hang_up_at is not None and not hung_up:
                    timeout = max(0.0, hang_up_at - time.monotonic())
                try:
                    msg = await asyncio.wait_for(incoming.get(), timeout)
                except TimeoutError:
                    if hang_up_at is not None and not hung_up:
                        hang_up()
                        continue
                    report["ended"] = {"kind": "no-answer", "reason": f"nothing heard for {timeout:.0f} s"}
                    hang_up()
                    break
                if isinstance(msg, grpc.aio.AioRpcError):
                    report["ended"] = {"refused": msg.code().name, "reason": msg.details() or ""}
                    break
                if not isinstance(msg, trunk_pb2.PlaceCallResponse):
                    break  # the stream ended
                at = round(time.monotonic() - started, 3)
                report["call_id"] = report["call_id"] or msg.call_id
                kind = msg.WhichOneof("progress")
                if kind == "prompt":
                    p = msg.prompt
                    if report.get("agent") and hang_up_after_s is None:
                        # Sent to the IVR by the agent (a PIN check): the caller stays till it is over.
                        hang_up_at = None
                    if p.text or (p.prompt and not p.collect):
                        heard: dict[str, object] = {"prompt": p.prompt, "text": p.text}
                        if p.flow_id:
                            heard.update(flow=p.flow_id, version=p.flow_version)
                        report["heard"].append(heard)
                        report["steps"].append({"at": at, "heard": p.prompt, "text": p.text})
                    asks = p.collect or not p.text
                    if asks and groups and not hung_up:
                        if gate is not None:
                            await gate.wait()
                            gate = None
                        keys = groups.pop(0)
                        report["steps"].append({"at": at, "keys": keys})
                        requests.put_nowait(
                            trunk_pb2.PlaceCallRequest(digits=trunk_pb2.CallerDigits(digits=keys))
                        )
                elif kind == "queued":
                    q = msg.queued
                    report["steps"].append(
                        {"at": at, "queued": q.skill_group, "position": q.position,
                         "expected_wait_s": round(q.expected_wait_s, 1)}
                    )  # fmt: skip
                    report["queue"] = q.skill_group
                    if hang_up_at is None:
                        hang_up_at = time.monotonic() + wait_s
                elif kind in ("ringing", "connected"):
                    who = getattr(msg, kind)
                    report["steps"].append({"at": at, kind: who.agent_code, "site": who.site_id})
                    if kind == "connected":
                        report["agent"] = {"agent_code": who.agent_code, "site_id": who.site_id}
                        hang_up_at = time.monotonic() + wait_s
                elif kind == "ended":
                    e = msg.ended
                    outcome = common_pb2.CallOutcome.Name(e.outcome).removeprefix("CALL_OUTCOME_").lower()
                    report["ended"] = {"outcome": outcome, "reason": e.reason}
                    report["steps"].append({"at": at, "ended": outcome, "reason": e.reason})
                    break
                elif kind == "voicemail":
                    report["voicemail"] = msg.voicemail.message_id
                    report["steps"].append({"at": at, "voicemail": msg.voicemail.message_id})
                elif kind is not None:
                    report["steps"].append({"at": at, kind: True})
                    if kind == "retrieved" and hang_up_at is None:
                        hang_up_at = time.monotonic() + wait_s
        finally:
            requests.put_nowait(None)
            stream.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    if central_address is not None and report["call_id"]:
        report["effects"], report["record"] = await _record_effects(central_address, report["call_id"])
    return report


async def _record_effects(
    central_address: str, call_id: str
) -> tuple[list[dict[str, str]], dict[str, Any] | None]:
    """Each key's effect and the flow's end, from the call's record at central (once it ended)."""
    deadline = time.monotonic() + RECORD_WAIT_S
    async with rpc.channel(central_address, expect=central_server()) as channel:
        stub = central_pb2_grpc.CentralServiceStub(channel)
        record: central_pb2.CallRecord | None = None
        while time.monotonic() < deadline:
            try:
                reply = await stub.GetCallRecord(central_pb2.GetCallRecordRequest(call_id=call_id), timeout=5)
                if reply.record.state == common_pb2.CALL_STATE_ENDED:
                    record = reply.record
                    break
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
            await asyncio.sleep(0.2)
    if record is None:
        return [], None
    effects: list[dict[str, str]] = []
    for event in record.events:
        kind = common_pb2.CallEventKind.Name(event.kind).removeprefix("CALL_EVENT_KIND_")
        if kind in ("DIGITS", "IVR_ENDED", "CALLBACK", "VOICEMAIL"):
            effects.append({"event": kind, **dict(event.data)})
    summary = {
        "outcome": common_pb2.CallOutcome.Name(record.outcome).removeprefix("CALL_OUTCOME_").lower(),
        "skill_group": record.skill_group,
        "served_site_id": record.served_site_id,
        "agent_code": record.agent_code,
        "events": len(record.events),
    }
    return effects, summary


def text_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"call {report['call_id']} to {report['number']}"]
    for step in report["steps"]:
        if "heard" in step:
            lines.append(f"  heard   {step['heard']}: {step['text']}")
        elif "keys" in step:
            lines.append(f"  pressed {step['keys']}")
        elif "queued" in step:
            lines.append(f"  queued  {step['queued']} (position {step['position']})")
        elif "connected" in step:
            lines.append(f"  agent   {step['connected']} at {step['site']}")
        elif "hang_up" in step:
            lines.append("  hung up")
    for effect in report.get("effects", []):
        if effect["event"] == "DIGITS":
            lines.append(
                f"  key {effect.get('digits', '')} at {effect.get('node', '')}: {effect.get('effect', '')}"
            )
        else:
            details = ", ".join(f"{k} {v}" for k, v in effect.items() if k != "event")
            lines.append(f"  {effect['event'].lower()}: {details}")
    ended = report["ended"] or {}
    lines.append(f"ended: {ended.get('outcome', ended.get('kind', '?'))} ({ended.get('reason', '')})")
    return lines
