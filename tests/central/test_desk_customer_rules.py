"""Customer rules (pure): validation, masking, the CSV import's shape."""

from __future__ import annotations

import pytest

from central.customers import Customer
from central.servicedesk.customers import Rejected, check_customer, mask_phone, normalized, parse_csv
from vcc.errors import InvalidArgument


def test_mask_phone() -> None:
    assert mask_phone("13800000123") == "138****0123"
    assert mask_phone("02012345678") == "020****5678"
    assert mask_phone("12345") == "***45"


def good(**changes: object) -> Customer:
    base: dict[str, object] = {"customer_id": "c1", "phone": "", "name": "张三", "phones": ("13800000001",)}
    base.update(changes)
    return normalized(Customer(**base))  # type: ignore[arg-type]


def test_normalized_primary_is_first_number() -> None:
    c = good(phones=(" 13800000001 ", "02088886666"))
    assert (c.phone, c.phones) == ("13800000001", ("13800000001", "02088886666"))


@pytest.mark.parametrize(
    ("changes", "error_id"),
    [
        ({"name": ""}, "bad-name"),
        ({"phones": ()}, "bad-phones"),
        ({"phones": ("12ab",)}, "bad-phone"),
        ({"phones": ("13800000001", "13800000001")}, "duplicate-phone"),
        ({"email": "not-an-address"}, "bad-email"),
        ({"level": "platinum"}, "bad-level"),
        ({"account": "a b"}, "bad-account"),
        ({"customer_id": "bad id"}, "bad-customer-id"),
        ({"address": "x" * 201}, "bad-address"),
    ],
)
def test_bad_customers(changes: dict[str, object], error_id: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_customer(good(**changes), new=True)
    assert info.value.error_id == error_id


def test_csv_rows_and_shape_rejects() -> None:
    text = (
        "customer_id,name,phones,email,address\n"
        "k1,李四,13900000001;02012345678,li@example.com,广州市天河路1号\n"
        "k2,王五,13900000002,,\n"
        "k3,too,many,cells,here,extra\n"
    )
    rows, rejected = parse_csv(text)
    assert [(line, c.customer_id, c.phones) for line, c in rows] == [
        (2, "k1", ("13900000001", "02012345678")),
        (3, "k2", ("13900000002",)),
    ]
    assert rejected == [Rejected(4, "bad-row", "more cells than columns")]


def test_csv_bad_header() -> None:
    rows, rejected = parse_csv("id,nom\n1,x\n")
    assert rows == [] and rejected[0].error_id == "bad-header"


def test_bad_settings_in_the_environment_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from central.servicedesk.settings import check_environment
    from vcc.config import ConfigError

    check_environment()
    monkeypatch.setenv("VCC_DESK_MAX_ATTEMPTS", "0")
    with pytest.raises(ConfigError, match="VCC_DESK_MAX_ATTEMPTS"):
        check_environment()
