"""Every method of every service a vcc server runs is in the one authorization table."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

import vcc.v1
from vcc.authz import METHOD_KINDS
from vcc.tls import KINDS


def served_methods() -> set[str]:
    """Every method of every service in proto/vcc/v1 (found by listing the package, so a new
    proto file cannot be forgotten), plus health and reflection."""
    modules: list[Any] = [health_pb2, reflection_pb2]
    for info in pkgutil.iter_modules(vcc.v1.__path__):
        if info.name.endswith("_pb2"):
            modules.append(importlib.import_module(f"vcc.v1.{info.name}"))
    methods = set()
    for module in modules:
        for service in module.DESCRIPTOR.services_by_name.values():
            methods |= {f"/{service.full_name}/{m.name}" for m in service.methods}
    return methods


def test_every_method_of_every_service_is_in_the_table() -> None:
    methods = served_methods()
    missing = sorted(methods - set(METHOD_KINDS))
    assert not missing, f"methods without an authorization rule (everyone refused): {missing}"
    # And nothing in the table that no service has (a renamed method would silently lose its rule).
    assert sorted(set(METHOD_KINDS) - methods) == []


def test_the_table_names_only_known_kinds_and_never_everyone_for_writes() -> None:
    for method, kinds in METHOD_KINDS.items():
        assert kinds and kinds <= set(KINDS), method
    assert METHOD_KINDS["/vcc.v1.CentralService/IngestCallEvents"] == {"site"}
    assert METHOD_KINDS["/vcc.v1.CentralService/StreamSiteState"] == {"site"}
    assert METHOD_KINDS["/vcc.v1.SitePeerService/ServeCall"] == {"site"}
    assert METHOD_KINDS["/vcc.v1.TrunkIngressService/PlaceCall"] == {"trunk"}
    assert METHOD_KINDS["/vcc.v1.TrunkIngressService/Signalling"] == {"trunk"}


def test_docs_role_table() -> None:
    """docs/SECURITY.md shows the table as it is."""
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "SECURITY.md").read_text(encoding="utf-8")
    rows = {}
    for line in doc.splitlines():
        if line.startswith("| `/"):
            method, kinds = (cell.strip() for cell in line.strip("|").split("|"))
            rows[method.strip("`")] = frozenset(k.strip() for k in kinds.split(","))
    assert rows == dict(METHOD_KINDS)


def test_docs_people_table() -> None:
    """docs/SECURITY.md shows the people's table (vcc.people) as it is."""
    from pathlib import Path

    from vcc.people import PERSON_ACTIONS

    doc = (Path(__file__).parents[2] / "docs" / "SECURITY.md").read_text(encoding="utf-8")
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`") and "." in cells[0] and not cells[0].startswith("`/"):
            rows[cells[0].strip("`")] = frozenset(r.strip() for r in cells[1].split(","))
    assert rows == dict(PERSON_ACTIONS)


def test_docs_person_methods_table() -> None:
    """docs/SECURITY.md shows which person's role may call which service desk method, as it is;
    every desk method a site or desktop may call is in the table (else a person is refused it)."""
    import re
    from pathlib import Path

    from vcc.people import METHOD_PERSON_ROLES, PERSON_SERVICES

    doc = (Path(__file__).parents[2] / "docs" / "SECURITY.md").read_text(encoding="utf-8")
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and re.fullmatch(r"`\w+Service/\w+`", cells[0]):
            rows[f"/vcc.v1.{cells[0].strip('`')}"] = frozenset(r.strip() for r in cells[1].split(","))
    assert rows == dict(METHOD_PERSON_ROLES)
    for method, kinds in METHOD_KINDS.items():
        if method.lstrip("/").split("/")[0] in PERSON_SERVICES and kinds & {"site", "desktop"}:
            assert method in METHOD_PERSON_ROLES, method


def test_people_roles_deny_by_default() -> None:
    from vcc import people
    from vcc.errors import PermissionDenied

    assert people.may(people.ADMINISTER, "administrator")
    for role in ("agent", "group_leader", "operations", "", "root"):
        assert not people.may(people.ADMINISTER, role)
    assert not people.may(people.DASHBOARD, "group_leader") and not people.may(people.SUPERVISE, "operations")
    assert not people.may("no.such.action", "administrator")
    with pytest.raises(PermissionDenied, match="no"):
        people.require(people.SUPERVISE, "agent", "not-a-supervisor", "no")
