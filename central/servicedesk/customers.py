"""Customer rules (pure): what a valid record is, phone masking for logs, the CSV import format."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, replace

from central.customers import LEVELS, Customer
from vcc.errors import InvalidArgument

PHONE = re.compile(r"[0-9]{3,20}")
CUSTOMER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Deliberately loose: the SMTP server is the judge; this only catches typing slips.
EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s.]{1,63}")
MAX_PHONES = 5
MAX_NAME = 100
MAX_ADDRESS = 200
MAX_NOTES = 2000
MAX_CITY = 50
CSV_COLUMNS = ("customer_id", "name", "phones", "account", "address", "email", "level", "city", "notes")
# Numbers inside one CSV cell: "13800000001;020-1234" style separators.
_PHONE_SPLIT = re.compile(r"[;,\s/]+")


def mask_phone(phone: str) -> str:
    """A number as logs show it: enough to tell calls apart, not enough to dial (138****0123)."""
    if len(phone) >= 8:
        return f"{phone[:3]}{'*' * (len(phone) - 7)}{phone[-4:]}"
    return "*" * max(0, len(phone) - 2) + phone[-2:]


def normalized(c: Customer) -> Customer:
    """Trimmed fields; `phone` is the first of `phones` (or `phones` is just `phone`)."""
    phones = tuple(p.strip() for p in c.numbers if p.strip())
    return replace(
        c,
        customer_id=c.customer_id.strip(),
        name=c.name.strip(),
        account=c.account.strip(),
        address=c.address.strip(),
        email=c.email.strip(),
        level=c.level.strip() or "normal",
        city=c.city.strip(),
        phones=phones,
        phone=phones[0] if phones else "",
    )


def check_customer(c: Customer, *, new: bool) -> None:
    """InvalidArgument naming the first bad field; `new`: the id may still be empty (generated)."""
    if c.customer_id or not new:
        _field(
            bool(CUSTOMER_ID.fullmatch(c.customer_id)),
            "bad-customer-id",
            "customer_id: 1-64 of A-Z a-z 0-9 _ . : -",
        )
    _field(0 < len(c.name) <= MAX_NAME, "bad-name", f"name: 1 to {MAX_NAME} characters")
    phones = c.numbers
    _field(0 < len(phones) <= MAX_PHONES, "bad-phones", f"phones: 1 to {MAX_PHONES} numbers")
    for p in phones:
        _field(bool(PHONE.fullmatch(p)), "bad-phone", f"phones: {mask_phone(p)!r} is not 3 to 20 digits")
    _field(len(set(phones)) == len(phones), "duplicate-phone", "phones: a number appears twice")
    _field(
        not c.account or bool(ACCOUNT.fullmatch(c.account)),
        "bad-account",
        "account: 1-64 of A-Z a-z 0-9 _ . -",
    )
    _field(len(c.address) <= MAX_ADDRESS, "bad-address", f"address: at most {MAX_ADDRESS} characters")
    _field(not c.email or bool(EMAIL.fullmatch(c.email)), "bad-email", "email: not an e-mail address")
    _field(c.level in LEVELS, "bad-level", f"level: one of {', '.join(LEVELS)}")
    _field(len(c.city) <= MAX_CITY, "bad-city", f"city: at most {MAX_CITY} characters")
    _field(len(c.notes) <= MAX_NOTES, "bad-notes", f"notes: at most {MAX_NOTES} characters")


def _field(ok: bool, error_id: str, message: str) -> None:
    if not ok:
        raise InvalidArgument(error_id, message)


@dataclass(frozen=True)
class Rejected:
    """A row of an import that was not taken, and why (line numbers count the header as 1)."""

    line: int
    error_id: str
    reason: str


def parse_csv(text: str) -> tuple[list[tuple[int, Customer]], list[Rejected]]:
    """Rows of a customers CSV (header CSV_COLUMNS, any order, extra columns refused).

    Only the shape is checked here; each row's fields are checked by the server, which reports
    its own rejects.
    """
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in reader.fieldnames or []]
    missing = {"name", "phones"} - set(header)
    unknown = set(header) - set(CSV_COLUMNS)
    if missing or unknown:
        problem = f"missing {sorted(missing)}" if missing else f"unknown {sorted(unknown)}"
        return [], [
            Rejected(1, "bad-header", f"header: columns {problem}; expected {', '.join(CSV_COLUMNS)}")
        ]
    reader.fieldnames = header
    rows: list[tuple[int, Customer]] = []
    rejected: list[Rejected] = []
    for row in reader:
        line = reader.line_num
        if None in row:
            rejected.append(Rejected(line, "bad-row", "more cells than columns"))
            continue
        cells = {k: (v or "").strip() for k, v in row.items()}
        phones = tuple(p for p in _PHONE_SPLIT.split(cells.get("phones", "")) if p)
        rows.append(
            (
                line,
                Customer(
                    customer_id=cells.get("customer_id", ""),
                    phone=phones[0] if phones else "",
                    phones=phones,
                    name=cells.get("name", ""),
                    account=cells.get("account", ""),
                    address=cells.get("address", ""),
                    email=cells.get("email", ""),
                    level=cells.get("level", "") or "normal",
                    city=cells.get("city", ""),
                    notes=cells.get("notes", ""),
                ),
            )
        )
    return rows, rejected
