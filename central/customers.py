"""Shared customer records (screen pop), and the deterministic demo customers (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LEVELS = ("gold", "silver", "normal")
# Demo phones are 1380000 followed by four digits, so at most this many.
MAX_DEMO_CUSTOMERS = 10_000


@dataclass(frozen=True)
class Customer:
    customer_id: str
    # The primary number: the first of `phones` (the screen pop's look-up finds any of them).
    phone: str
    name: str
    level: str = "normal"
    city: str = ""
    notes: str = ""
    account: str = ""
    address: str = ""
    email: str = ""
    # Every number of the customer, primary first; empty means just `phone`.
    phones: tuple[str, ...] = ()
    # Optimistic edits: an edit names the version it read; 0 before the first store.
    version: int = 0
    updated_at: float = 0.0

    @property
    def numbers(self) -> tuple[str, ...]:
        return self.phones or ((self.phone,) if self.phone else ())


def demo_phone(i: int) -> str:
    """The caller number of demo customer i; the traffic generator dials from the same numbers."""
    return f"1380000{i:04d}"


def demo_customers(count: int, cities: Sequence[str]) -> list[Customer]:
    """`count` customers, the same every time: phones demo_phone(0..count-1), levels and cities cycling."""
    if not 0 <= count <= MAX_DEMO_CUSTOMERS:
        raise ValueError(f"demo customers: count must be 0..{MAX_DEMO_CUSTOMERS}, not {count}")
    places = list(cities) or [""]
    return [
        Customer(
            customer_id=f"demo-{i:04d}",
            phone=demo_phone(i),
            name=f"客户 {i:04d} / Customer {i:04d}",
            level=LEVELS[i % len(LEVELS)],
            city=places[i % len(places)],
            notes="demo customer",
            account=f"A{i:06d}",
            version=1,
        )
        for i in range(count)
    ]


def customer_row(c: Customer) -> dict[str, object]:
    """The `customers` row of a record (its numbers go to `customer_phones`)."""
    return {
        "customer_id": c.customer_id,
        "phone": c.numbers[0] if c.numbers else "",
        "name": c.name,
        "level": c.level,
        "city": c.city,
        "notes": c.notes,
        "account": c.account,
        "address": c.address,
        "email": c.email,
        "version": c.version,
        "updated_at": c.updated_at,
    }


def customer_from_row(row: Mapping[Any, Any], phones: Sequence[str]) -> Customer:
    return Customer(
        customer_id=row["customer_id"],
        phone=row["phone"],
        name=row["name"],
        level=row["level"],
        city=row["city"],
        notes=row["notes"],
        account=row["account"],
        address=row["address"],
        email=row["email"],
        phones=tuple(phones) or (row["phone"],),
        version=int(row["version"]),
        updated_at=float(row["updated_at"]),
    )
