"""The data a flow may look up at central, by name: what each needs and what it answers.

Central answers each name from its tables; a flow names one and passes the arguments, and the
answer's fields become the caller variables `<into>.<field>`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LookupSpec:
    args: tuple[str, ...]
    fields: tuple[str, ...]
    what: str


LOOKUPS: dict[str, LookupSpec] = {
    "customer": LookupSpec(("phone",), ("level", "name", "city"), "a customer's record"),
    "verify_pin": LookupSpec(("card", "pin"), ("verified",), "whether a card's PIN is right"),
    "balance": LookupSpec(("card",), ("amount", "currency"), "a card's balance"),
    "parcel_state": LookupSpec(("tracking_number",), ("state", "city"), "where a parcel is"),
    "open_tickets": LookupSpec(("phone",), ("count",), "a caller's open complaint tickets"),
}
