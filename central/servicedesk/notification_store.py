"""The notification outbox: rows queued with a ticket's reply, claimed and settled by the dispatcher."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from central.db import models
from central.servicedesk import common
from central.store import Store

NOTIFICATIONS = models.Base.metadata.tables["notifications"]
ATTEMPTS = models.Base.metadata.tables["notification_attempts"]


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"


class NotificationState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


@dataclass(frozen=True)
class Notification:
    notification_id: str
    ticket_id: str
    customer_id: str
    channel: Channel
    address: str
    subject: str
    body: str
    state: NotificationState
    attempts: int
    created_at: float
    next_attempt_at: float
    done_at: float | None
    last_error: str


async def enqueue(
    conn: AsyncConnection,
    *,
    ticket_id: str,
    customer_id: str,
    channel: Channel,
    address: str,
    subject: str,
    body: str,
    now: float,
) -> str:
    """In the caller's transaction: the reply and its notification commit together, or neither."""
    notification_id = common.new_id("N")
    await conn.execute(
        sa.insert(NOTIFICATIONS).values(
            notification_id=notification_id,
            ticket_id=ticket_id,
            customer_id=customer_id,
            channel=channel.value,
            address=address,
            subject=subject,
            body=body,
            state=NotificationState.PENDING.value,
            attempts=0,
            created_at=now,
            next_attempt_at=now,
            done_at=None,
            last_error="",
        )
    )
    return notification_id


def notification(row: sa.RowMapping) -> Notification:
    return Notification(
        notification_id=row["notification_id"],
        ticket_id=row["ticket_id"],
        customer_id=row["customer_id"],
        channel=Channel(row["channel"]),
        address=row["address"],
        subject=row["subject"],
        body=row["body"],
        state=NotificationState(row["state"]),
        attempts=int(row["attempts"]),
        created_at=float(row["created_at"]),
        next_attempt_at=float(row["next_attempt_at"]),
        done_at=row["done_at"],
        last_error=row["last_error"],
    )


class NotificationStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def due(self, now: float, limit: int) -> list[Notification]:
        """Pending notifications whose next attempt is due, oldest first."""

        async def attempt(conn: AsyncConnection) -> list[Notification]:
            query = (
                sa.select(NOTIFICATIONS)
                .where(
                    NOTIFICATIONS.c.state == NotificationState.PENDING.value,
                    NOTIFICATIONS.c.next_attempt_at <= now,
                )
                .order_by(NOTIFICATIONS.c.next_attempt_at, NOTIFICATIONS.c.notification_id)
                .limit(limit)
            )
            return [notification(r._mapping) for r in (await conn.execute(query)).all()]

        return await self._store.transaction(attempt)

    async def record_attempt(
        self, notification_id: str, at: float, ok: bool, detail: str, *, final: bool, retry_at: float
    ) -> None:
        """One delivery attempt and where it leaves the notification (sent, failed, or pending)."""

        async def attempt(conn: AsyncConnection) -> None:
            count = (
                await conn.execute(
                    sa.select(NOTIFICATIONS.c.attempts).where(
                        NOTIFICATIONS.c.notification_id == notification_id
                    )
                )
            ).scalar_one()
            number = int(count) + 1
            await conn.execute(
                sa.insert(ATTEMPTS).values(
                    notification_id=notification_id, attempt=number, at=at, ok=int(ok), detail=detail[:1000]
                )
            )
            state = (
                NotificationState.SENT
                if ok
                else NotificationState.FAILED
                if final
                else NotificationState.PENDING
            )
            await conn.execute(
                sa.update(NOTIFICATIONS)
                .where(NOTIFICATIONS.c.notification_id == notification_id)
                .values(
                    attempts=number,
                    state=state.value,
                    next_attempt_at=retry_at,
                    done_at=at if state != NotificationState.PENDING else None,
                    last_error="" if ok else detail[:1000],
                )
            )

        await self._store.transaction(attempt, write=True)

    async def of_ticket(self, ticket_id: str) -> list[Notification]:
        async def attempt(conn: AsyncConnection) -> list[Notification]:
            query = (
                sa.select(NOTIFICATIONS)
                .where(NOTIFICATIONS.c.ticket_id == ticket_id)
                .order_by(NOTIFICATIONS.c.created_at, NOTIFICATIONS.c.notification_id)
            )
            return [notification(r._mapping) for r in (await conn.execute(query)).all()]

        return await self._store.transaction(attempt)

    async def get(self, ids: Sequence[str]) -> dict[str, Notification]:
        async def attempt(conn: AsyncConnection) -> dict[str, Notification]:
            query = sa.select(NOTIFICATIONS).where(NOTIFICATIONS.c.notification_id.in_(list(ids)))
            return {r.notification_id: notification(r._mapping) for r in (await conn.execute(query)).all()}

        return await self._store.transaction(attempt)

    async def attempts_of(self, notification_id: str) -> list[tuple[int, float, bool, str]]:
        async def attempt(conn: AsyncConnection) -> list[tuple[int, float, bool, str]]:
            query = (
                sa.select(ATTEMPTS)
                .where(ATTEMPTS.c.notification_id == notification_id)
                .order_by(ATTEMPTS.c.attempt)
            )
            return [
                (int(r.attempt), float(r.at), bool(r.ok), r.detail) for r in (await conn.execute(query)).all()
            ]

        return await self._store.transaction(attempt)
