"""Bounds of what another site may send on the peer path: the same as the trunk's.

Without them a peer could make us keep 1 MB call ids, offer ids and attached data for as long as
the call lives. Checked at the adapter edge, before anything reaches the call control.
"""

from __future__ import annotations

from collections.abc import Mapping

from vcc.errors import InvalidArgument
from vcc.v1 import peer_pb2

# As the trunk (site_node/local_switch.py): a call id, attached data; an offer id like a key.
MAX_CALL_ID = 64
MAX_OFFER_ID = 128
MAX_ATTACHED_ITEMS = 64
MAX_ATTACHED_BYTES = 8192
MAX_NUMBER = 32
MAX_NAME = 64
MAX_REASON = 64
# A customer record riding on an offer (its name, address, notes...).
MAX_CUSTOMER_BYTES = 16_384


def _short(key: str, value: str, limit: int, *, required: bool = False) -> None:
    missing = required and not value
    # Ids end up in keys, logs and records: ASCII only.
    bad_id = key.endswith("_id") and not value.isascii()
    if missing or bad_id or len(value) > limit:
        raise InvalidArgument(
            "peer-field-too-large", f"{key}: {'required, ' if required else ''}at most {limit} characters"
        )


def check_attached(key: str, attached: Mapping[str, str]) -> None:
    size = sum(len(k) + len(v) for k, v in attached.items())
    if len(attached) > MAX_ATTACHED_ITEMS or size > MAX_ATTACHED_BYTES:
        raise InvalidArgument(
            "attached-data-too-large", f"{key}: at most {MAX_ATTACHED_ITEMS} entries and 8 KiB"
        )


def check_offer(offer: peer_pb2.RemoteOffer) -> None:
    _short("offer.call_id", offer.call_id, MAX_CALL_ID, required=True)
    _short("offer.offer_id", offer.offer_id, MAX_OFFER_ID, required=True)
    _short("offer.origin_site_id", offer.origin_site_id, MAX_NAME, required=True)
    _short("offer.skill_group", offer.skill_group, MAX_NAME)
    _short("offer.ani", offer.ani, MAX_NUMBER)
    _short("offer.dnis", offer.dnis, MAX_NUMBER)
    _short("offer.agent_code", offer.agent_code, MAX_NAME)
    _short("offer.from_agent_code", offer.from_agent_code, MAX_NAME)
    _short("offer.purpose", offer.purpose, MAX_NAME)
    check_attached("offer.attached_data", offer.attached_data)
    if offer.customer.ByteSize() > MAX_CUSTOMER_BYTES:
        raise InvalidArgument("peer-field-too-large", f"offer.customer: at most {MAX_CUSTOMER_BYTES} bytes")


def check_request(request: peer_pb2.ServeCallRequest) -> None:
    """The origin's later messages on a leg."""
    if request.WhichOneof("message") == "caller_gone":
        _short("caller_gone.reason", request.caller_gone.reason, MAX_REASON)


def check_reply(reply: peer_pb2.ServeCallResponse) -> None:
    """The target's messages on a leg (the origin checks them the same way)."""
    kind = reply.WhichOneof("message")
    if kind == "refused":
        _short("refused.reason", reply.refused.reason, MAX_REASON)
    elif kind == "returned":
        _short("returned.reason", reply.returned.reason, MAX_REASON)
    elif kind == "reserved":
        _short("reserved.agent_code", reply.reserved.agent_code, MAX_NAME)
    elif kind == "transfer_asked":
        t = reply.transfer_asked
        for key, value in (
            ("agent_code", t.agent_code),
            ("from_agent_code", t.from_agent_code),
            ("skill_group", t.skill_group),
            ("site_id", t.site_id),
        ):
            _short(f"transfer_asked.{key}", value, MAX_NAME)
        check_attached("transfer_asked.attached_data", t.attached_data)
