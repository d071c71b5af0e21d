"""Real servers for the service desk's notification tests: SMTP (aiosmtpd) and an SMS gateway.

Both listen on 127.0.0.1:0. The SMTP server runs in the test's event loop (aiosmtpd's SMTP is an
asyncio protocol); the gateway is a small threaded HTTP server that records what it is sent and
answers as the test tells it (accept, refuse with 503, or hang).
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from email import policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from central.servicedesk.settings import SmsSettings, SmtpSettings


class Inbox:
    """aiosmtpd handler: keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        message = email.message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


@contextlib.asynccontextmanager
async def smtp_server() -> AsyncIterator[tuple[Inbox, SmtpSettings]]:
    inbox = Inbox()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(inbox, hostname="smtp.test"), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield (
            inbox,
            SmtpSettings(host="127.0.0.1", port=port, starttls=False, sender="desk@vcc.test", timeout_s=5),
        )
    finally:
        server.close()
        await server.wait_closed()


class Gateway:
    """What the SMS gateway was sent, and how it answers (`mode`: "ok", "fail", "hang")."""

    def __init__(self) -> None:
        self.mode = "ok"
        # "hang": requests wait for this, then are refused (the test decides when).
        self.release = threading.Event()
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()


@contextlib.contextmanager
def sms_gateway() -> Iterator[tuple[Gateway, Callable[[float], SmsSettings]]]:
    gateway = Gateway()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with gateway.lock:
                gateway.received.append({"body": body, "auth": self.headers.get("Authorization", "")})
                mode = gateway.mode
            if mode == "hang":
                gateway.release.wait(30)
            status = 200 if mode == "ok" else 503
            payload = b'{"status":"queued"}' if status == 200 else b'{"error":"operator busy"}'
            with contextlib.suppress(OSError):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/sms"
    try:
        yield gateway, lambda timeout_s: SmsSettings(gateway_url=url, token="t0ken", timeout_s=timeout_s)
    finally:
        gateway.release.set()
        server.shutdown()
        server.server_close()


async def eventually(check: Callable[[], Any], timeout_s: float = 10.0) -> None:
    """Until check() is truthy (awaited when it returns an awaitable)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class Clock:
    """A clock the test moves."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
