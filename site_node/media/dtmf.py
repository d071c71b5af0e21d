"""Digits that rtpengine reports (`--dtmf-log-dest`): one JSON datagram when each digit ends.

rtpengine 10.5 has one global destination, so the site node listens on its own UDP port and
routes each report by rtpengine's call id (our SIP Call-ID) to whoever asked for that call.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

# RFC 4733 events 0-15.
EVENTS = "0123456789*#ABCD"
MAX_REPORT_BYTES = 4096

DigitListener = Callable[[str, str], None]  # (rtpengine call id, digit)


class DtmfListener(asyncio.DatagramProtocol):
    def __init__(self, on_digit: DigitListener) -> None:
        self._on_digit = on_digit
        self._transport: asyncio.DatagramTransport | None = None
        self.address = ""
        self.reports = 0
        self.dropped = 0

    async def open(self, host: str = "127.0.0.1") -> str:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, 0))
        self._transport = transport
        port = transport.get_extra_info("sockname")[1]
        self.address = f"{host}:{port}"
        return self.address

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        found = parse_report(data)
        if found is None:
            self.dropped += 1
            return
        self.reports += 1
        self._on_digit(*found)


def parse_report(data: bytes) -> tuple[str, str] | None:
    """(call id, digit) of one report, or None when it is not one we understand."""
    if len(data) > MAX_REPORT_BYTES:
        return None
    try:
        report = json.loads(data)
    except ValueError:
        return None
    if not isinstance(report, dict):
        return None
    call_id = report.get("callid")
    event = report.get("event")
    if not isinstance(call_id, str) or not isinstance(event, int) or not 0 <= event < len(EVENTS):
        return None
    return call_id, EVENTS[event]
