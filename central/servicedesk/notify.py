"""Delivering notifications to customers: senders per channel and the outbox dispatcher.

Each due notification is delivered in its own task, with bounded retries (tenacity); every
attempt and the outcome are stored. A sender that keeps failing or hangs ties up only its own
notifications (and its channel's concurrency), never the other channel's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib
import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from central.servicedesk.customers import mask_phone
from central.servicedesk.notification_store import Channel, Notification, NotificationStore
from central.servicedesk.settings import SmsSettings, SmtpSettings

log = logging.getLogger(__name__)

# Notifications picked up per look at the outbox.
BATCH = 100
# Deliveries in flight per channel (an SMTP server or gateway is not flooded).
PER_CHANNEL = 8
SMS_MAX_CHARS = 500


class DeliveryError(Exception):
    """One attempt failed; the dispatcher may try again."""


class Sender(Protocol):
    async def send(self, notification: Notification) -> str:
        """Deliver it or raise DeliveryError; returns the server's word on it (for the record)."""
        ...


class EmailSender:
    """E-mail over SMTP (aiosmtplib): STARTTLS and login as the settings say."""

    def __init__(self, settings: SmtpSettings) -> None:
        self._s = settings

    async def send(self, notification: Notification) -> str:
        message = EmailMessage()
        message["From"] = self._s.sender
        message["To"] = notification.address
        message["Subject"] = notification.subject
        message["X-Vcc-Notification-Id"] = notification.notification_id
        message.set_content(notification.body)
        password = self._s.password.get_secret_value()
        try:
            _errors, reply = await aiosmtplib.send(
                message,
                hostname=self._s.host,
                port=self._s.port,
                username=self._s.username or None,
                password=password or None,
                start_tls=self._s.starttls and not self._s.use_tls,
                use_tls=self._s.use_tls,
                timeout=self._s.timeout_s,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"smtp: {exc}") from exc
        return f"smtp: {reply}"


class HttpSmsSender:
    """SMS through the operator's HTTP gateway: POST {"to", "text", "id"} with a bearer token;
    any 2xx is accepted, anything else (or no answer in time) is a failed attempt."""

    def __init__(self, settings: SmsSettings, client: httpx.AsyncClient | None = None) -> None:
        self._s = settings
        self._client = client or httpx.AsyncClient(timeout=settings.timeout_s)

    async def send(self, notification: Notification) -> str:
        headers = {}
        token = self._s.token.get_secret_value()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        text = f"{notification.subject}\n{notification.body}"[:SMS_MAX_CHARS]
        try:
            response = await self._client.post(
                self._s.gateway_url,
                json={"to": notification.address, "text": text, "id": notification.notification_id},
                headers=headers,
            )
        except httpx.HTTPError as exc:
            raise DeliveryError(f"sms gateway: {type(exc).__name__} {exc}") from exc
        if not response.is_success:
            raise DeliveryError(f"sms gateway: HTTP {response.status_code} {response.text[:200]}")
        return f"sms gateway: HTTP {response.status_code}"

    async def close(self) -> None:
        await self._client.aclose()


class Dispatcher:
    def __init__(
        self,
        notifications: NotificationStore,
        senders: Mapping[Channel, Sender],
        *,
        max_attempts: int = 5,
        retry_base_s: float = 1.0,
        retry_max_s: float = 60.0,
        attempt_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = notifications
        self._senders = dict(senders)
        self._max_attempts = max_attempts
        self._retry_base_s = retry_base_s
        self._retry_max_s = retry_max_s
        self._attempt_timeout_s = attempt_timeout_s
        self._clock = clock
        self._limits = {channel: asyncio.Semaphore(PER_CHANNEL) for channel in Channel}
        self._in_flight: dict[str, asyncio.Task[None]] = {}

    async def kick(self) -> int:
        """Start delivering every due notification not already in flight; returns how many started."""
        started = 0
        for n in await self._store.due(self._clock(), BATCH):
            if n.notification_id in self._in_flight or n.channel not in self._senders:
                # No sender for its channel (not configured): it waits, pending, for one.
                continue
            task = asyncio.create_task(self._deliver(n), name=f"notify-{n.notification_id}")
            self._in_flight[n.notification_id] = task
            task.add_done_callback(self._forget)
            started += 1
        return started

    def _forget(self, task: asyncio.Task[None]) -> None:
        for key, running in list(self._in_flight.items()):
            if running is task:
                del self._in_flight[key]

    async def drain(self) -> None:
        """Until every delivery in flight has its outcome."""
        while self._in_flight:
            await asyncio.gather(*self._in_flight.values(), return_exceptions=True)

    async def run_once(self) -> None:
        await self.kick()
        await self.drain()

    async def run(self, poll_s: float) -> None:
        try:
            while True:
                try:
                    await self.kick()
                except Exception:
                    log.exception("notification outbox: cannot read the due notifications")
                await asyncio.sleep(poll_s)
        finally:
            for task in list(self._in_flight.values()):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*self._in_flight.values(), return_exceptions=True)

    async def _deliver(self, n: Notification) -> None:
        sender = self._senders[n.channel]
        remaining = max(1, self._max_attempts - n.attempts)
        number = n.attempts
        try:
            async with self._limits[n.channel]:
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(remaining),
                    wait=wait_exponential(multiplier=self._retry_base_s, max=self._retry_max_s),
                    retry=retry_if_exception_type(DeliveryError),
                    reraise=True,
                ):
                    with attempt:
                        number += 1
                        await self._attempt(n, sender, number)
        except DeliveryError:
            log.warning(
                "notification %s to %s failed after %d attempts", n.notification_id, _shown(n), number
            )
        except Exception:
            log.exception("notification %s: delivery broke off", n.notification_id)

    async def _attempt(self, n: Notification, sender: Sender, number: int) -> None:
        final = number >= self._max_attempts
        try:
            async with asyncio.timeout(self._attempt_timeout_s):
                detail = await sender.send(n)
        except TimeoutError:
            await self._record(n, number, False, f"no answer in {self._attempt_timeout_s:g} s", final)
            raise DeliveryError("timeout") from None
        except DeliveryError as exc:
            await self._record(n, number, False, str(exc), final)
            raise
        await self._record(n, number, True, detail, True)
        log.info("notification %s sent to %s (attempt %d)", n.notification_id, _shown(n), number)

    async def _record(self, n: Notification, number: int, ok: bool, detail: str, final: bool) -> None:
        now = self._clock()
        retry_at = now + min(self._retry_max_s, self._retry_base_s * 2 ** (number - 1))
        await self._store.record_attempt(n.notification_id, now, ok, detail, final=final, retry_at=retry_at)


def _shown(n: Notification) -> str:
    if n.channel == Channel.SMS:
        return f"sms {mask_phone(n.address)}"
    return f"email {n.address.split('@')[0][:1]}***@{n.address.split('@')[-1]}"
