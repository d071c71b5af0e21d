"""Customers at central: create, optimistic edit, search, import (SQL; rules in .customers)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from central.customers import Customer, customer_from_row, customer_row
from central.db import models
from central.servicedesk import common
from central.servicedesk.customers import Rejected, check_customer, mask_phone, normalized
from central.store import Store
from vcc.errors import AlreadyExists, FailedPrecondition, NotFound, VccError

log = logging.getLogger(__name__)

CUSTOMERS = models.Base.metadata.tables["customers"]
PHONES = models.Base.metadata.tables["customer_phones"]
MAX_IMPORT_ROWS = 1000


@dataclass(frozen=True)
class ImportResult:
    created: int
    updated: int
    rejected: list[Rejected]


class StaleVersion(FailedPrecondition):
    def __init__(self, customer_id: str, expected: int, stored: int) -> None:
        super().__init__(
            "stale-version",
            f"customer {customer_id} is at version {stored}, the edit was made on version {expected}: "
            "read it again and re-apply the edit",
        )


class CustomerStore:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    async def create(self, customer: Customer, idempotency_key: str = "") -> Customer:
        c = normalized(customer)
        check_customer(c, new=True)
        common.check_idempotency_key(idempotency_key)
        digest = common.request_hash(
            {k: v for k, v in asdict(c).items() if k not in ("version", "updated_at")}
        )
        now = self._clock()

        async def attempt(conn: AsyncConnection) -> str:
            earlier = await common.remembered(conn, "customer", idempotency_key, digest)
            if earlier is not None:
                return earlier
            created = replace(c, customer_id=c.customer_id or common.new_id("C"), version=1, updated_at=now)
            await _insert(conn, created)
            await common.remember(conn, "customer", idempotency_key, digest, created.customer_id, now=now)
            return created.customer_id

        customer_id = await self._store.transaction(attempt, write=True)
        log.info("customer %s created (%s)", customer_id, ", ".join(mask_phone(p) for p in c.numbers))
        return await self.get(customer_id)

    async def get(self, customer_id: str) -> Customer:
        async def attempt(conn: AsyncConnection) -> Customer | None:
            return (await _load(conn, [customer_id])).get(customer_id)

        found = await self._store.transaction(attempt)
        if found is None:
            raise NotFound("customer-not-found", f"no customer {customer_id!r}")
        return found

    async def update(self, customer: Customer, expected_version: int) -> Customer:
        """Replace the editable fields if the record is still at `expected_version`."""
        c = normalized(customer)
        check_customer(c, new=False)
        now = self._clock()

        async def attempt(conn: AsyncConnection) -> None:
            row = customer_row(replace(c, version=expected_version + 1, updated_at=now))
            del row["customer_id"]
            # The version check and the write are one statement: of two edits made on the same
            # version, exactly one matches.
            result = await conn.execute(
                sa.update(CUSTOMERS)
                .where(CUSTOMERS.c.customer_id == c.customer_id, CUSTOMERS.c.version == expected_version)
                .values(**row)
            )
            if result.rowcount == 0:
                stored = (
                    await conn.execute(
                        sa.select(CUSTOMERS.c.version).where(CUSTOMERS.c.customer_id == c.customer_id)
                    )
                ).scalar()
                if stored is None:
                    raise NotFound("customer-not-found", f"no customer {c.customer_id!r}")
                raise StaleVersion(c.customer_id, expected_version, int(stored))
            await _replace_phones(conn, c)

        await self._store.transaction(attempt, write=True)
        log.info("customer %s edited to version %d", c.customer_id, expected_version + 1)
        return await self.get(c.customer_id)

    async def search(
        self,
        *,
        phone: str = "",
        name: str = "",
        account: str = "",
        address: str = "",
        page_size: int = common.DEFAULT_PAGE_SIZE,
        page_token: str = "",
    ) -> tuple[list[Customer], str]:
        after = common.decode_token("customers", page_token, (str,))[0] if page_token else None

        async def attempt(conn: AsyncConnection) -> tuple[list[Customer], str]:
            query = sa.select(CUSTOMERS.c.customer_id).order_by(CUSTOMERS.c.customer_id).limit(page_size + 1)
            if phone:
                # A prefix: the agent types the beginning of a number (the primary key's range).
                owners = sa.select(PHONES.c.customer_id).where(
                    PHONES.c.phone >= phone, PHONES.c.phone < phone + "\x7f"
                )
                query = query.where(CUSTOMERS.c.customer_id.in_(owners))
            if name:
                query = query.where(CUSTOMERS.c.name.like(common.like_pattern(name), escape="\\"))
            if account:
                query = query.where(CUSTOMERS.c.account == account)
            if address:
                query = query.where(CUSTOMERS.c.address.like(common.like_pattern(address), escape="\\"))
            if after is not None:
                query = query.where(CUSTOMERS.c.customer_id > after)
            ids = list((await conn.execute(query)).scalars().all())
            page = ids[:page_size]
            found = await _load(conn, page)
            token = common.encode_token("customers", [page[-1]]) if len(ids) > page_size else ""
            return [found[i] for i in page], token

        return await self._store.transaction(attempt)

    async def import_rows(self, rows: Sequence[tuple[int, Customer]]) -> ImportResult:
        """Create new customers and update known ones (by id); each row stands alone."""
        created = updated = 0
        rejected: list[Rejected] = []
        for line, customer in rows[:MAX_IMPORT_ROWS]:
            c = normalized(customer)
            try:
                check_customer(c, new=True)
                if c.customer_id and await self._exists(c.customer_id):
                    current = await self.get(c.customer_id)
                    await self.update(replace(c, customer_id=current.customer_id), current.version)
                    updated += 1
                else:
                    await self.create(c)
                    created += 1
            except VccError as exc:
                rejected.append(Rejected(line, exc.error_id, exc.message))
        rejected.extend(
            Rejected(line, "too-many-rows", f"at most {MAX_IMPORT_ROWS} rows per batch")
            for line, _ in rows[MAX_IMPORT_ROWS:]
        )
        return ImportResult(created, updated, rejected)

    async def _exists(self, customer_id: str) -> bool:
        async def attempt(conn: AsyncConnection) -> bool:
            query = sa.select(CUSTOMERS.c.customer_id).where(CUSTOMERS.c.customer_id == customer_id)
            return (await conn.execute(query)).first() is not None

        return await self._store.transaction(attempt)


async def _insert(conn: AsyncConnection, c: Customer) -> None:
    exists = await conn.execute(
        sa.select(CUSTOMERS.c.customer_id).where(CUSTOMERS.c.customer_id == c.customer_id)
    )
    if exists.first() is not None:
        raise AlreadyExists("customer-exists", f"customer_id: {c.customer_id!r} exists")
    await _check_phones_free(conn, c)
    await conn.execute(sa.insert(CUSTOMERS).values(**customer_row(c)))
    await conn.execute(
        sa.insert(PHONES),
        [{"phone": p, "customer_id": c.customer_id, "position": i} for i, p in enumerate(c.numbers)],
    )


async def _replace_phones(conn: AsyncConnection, c: Customer) -> None:
    await _check_phones_free(conn, c)
    await conn.execute(sa.delete(PHONES).where(PHONES.c.customer_id == c.customer_id))
    await conn.execute(
        sa.insert(PHONES),
        [{"phone": p, "customer_id": c.customer_id, "position": i} for i, p in enumerate(c.numbers)],
    )


async def _check_phones_free(conn: AsyncConnection, c: Customer) -> None:
    """A number belongs to one customer: the screen pop must find exactly one."""
    taken = await conn.execute(
        sa.select(PHONES.c.phone).where(PHONES.c.phone.in_(c.numbers), PHONES.c.customer_id != c.customer_id)
    )
    first = taken.scalars().first()
    if first is not None:
        raise AlreadyExists("phone-taken", f"phones: {mask_phone(first)} belongs to another customer")


async def _load(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, Customer]:
    if not ids:
        return {}
    rows = (await conn.execute(sa.select(CUSTOMERS).where(CUSTOMERS.c.customer_id.in_(ids)))).all()
    phones: dict[str, list[str]] = {}
    query = (
        sa.select(PHONES)
        .where(PHONES.c.customer_id.in_(ids))
        .order_by(PHONES.c.customer_id, PHONES.c.position)
    )
    for p in (await conn.execute(query)).all():
        phones.setdefault(p.customer_id, []).append(p.phone)
    return {r.customer_id: customer_from_row(r._mapping, phones.get(r.customer_id, [])) for r in rows}
