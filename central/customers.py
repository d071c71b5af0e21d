"""Shared customer records (screen pop), and the deterministic demo customers (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

LEVELS = ("gold", "silver", "normal")
# Demo phones are 1380000 followed by four digits, so at most this many.
MAX_DEMO_CUSTOMERS = 10_000


@dataclass(frozen=True)
class Customer:
    customer_id: str
    phone: str
    name: str
    level: str = "normal"
    city: str = ""
    notes: str = ""


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
        )
        for i in range(count)
    ]
