"""The service desk's composition: its stores, senders and background loops, wired once.

central.app builds one ServiceDesk, adds its servicers to central's gRPC server, and runs its
background work (the notification dispatcher, overdue escalation) only while it leads, so a
notification is not sent twice by two replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Mapping

import grpc

from central.customer_pins import CustomerPins
from central.servicedesk.customer_store import CustomerStore
from central.servicedesk.grpc_api import CustomerService, HistoryService, KnowledgeService, TicketService
from central.servicedesk.history_store import HistoryStore
from central.servicedesk.kb_store import KnowledgeStore
from central.servicedesk.notification_store import Channel, NotificationStore
from central.servicedesk.notify import Dispatcher, EmailSender, HttpSmsSender, Sender
from central.servicedesk.settings import DeskSettings, SmsSettings, SmtpSettings
from central.servicedesk.ticket_queries import TicketQueries
from central.servicedesk.ticket_store import TicketStore
from central.store import Store
from vcc.v1 import servicedesk_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


def senders_from(smtp: SmtpSettings, sms: SmsSettings) -> dict[Channel, Sender]:
    """The senders the settings configure (a channel without one keeps its notifications pending)."""
    senders: dict[Channel, Sender] = {}
    if smtp.host:
        senders[Channel.EMAIL] = EmailSender(smtp)
    if sms.gateway_url:
        senders[Channel.SMS] = HttpSmsSender(sms)
    return senders


class ServiceDesk:
    def __init__(
        self,
        store: Store,
        site_ids: Collection[str],
        settings: DeskSettings | None = None,
        senders: Mapping[Channel, Sender] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings or DeskSettings()
        self._clock = clock
        self.customers = CustomerStore(store, clock)
        self.tickets = TicketStore(store, site_ids, self.settings.due_s(), clock)
        self.ticket_queries = TicketQueries(store, clock)
        self.notifications = NotificationStore(store)
        self.knowledge = KnowledgeStore(store, clock)
        self.history = HistoryStore(store, self.customers)
        self.senders = dict(senders) if senders is not None else senders_from(SmtpSettings(), SmsSettings())
        self.dispatcher = Dispatcher(
            self.notifications,
            self.senders,
            max_attempts=self.settings.max_attempts,
            retry_base_s=self.settings.retry_base_s,
            retry_max_s=self.settings.retry_max_s,
            attempt_timeout_s=self.settings.attempt_timeout_s,
            clock=clock,
        )
        self._tasks: list[asyncio.Task[None]] = []

    def add_to(self, server: grpc.aio.Server, pins: CustomerPins | None = None) -> None:
        pb_grpc.add_CustomerServiceServicer_to_server(CustomerService(self.customers, pins), server)
        pb_grpc.add_TicketServiceServicer_to_server(
            TicketService(self.tickets, self.ticket_queries, self.notifications), server
        )
        pb_grpc.add_KnowledgeServiceServicer_to_server(KnowledgeService(self.knowledge), server)
        pb_grpc.add_HistoryServiceServicer_to_server(HistoryService(self.history), server)

    def start_background(self) -> None:
        if self._tasks:
            return
        log.info("service desk: notification senders for %s", ", ".join(sorted(self.senders)) or "no channel")
        self._tasks = [
            asyncio.create_task(self.dispatcher.run(self.settings.poll_s), name="desk-notifications"),
            asyncio.create_task(self._escalate_forever(), name="desk-escalation"),
        ]

    async def stop_background(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _escalate_forever(self) -> None:
        while True:
            try:
                escalated = await self.tickets.escalate_overdue(self._clock())
                if escalated:
                    log.info("service desk: %d overdue tickets escalated", len(escalated))
            except Exception:
                log.exception("service desk: overdue escalation failed; trying again later")
            await asyncio.sleep(self.settings.escalate_every_s)
