"""IVR flows and catalog revisions in the central database (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from central.flows import FlowStore
from central.store import Store
from tests.ivr.flows import as_yaml, small
from vcc.errors import AlreadyExists, FailedPrecondition
from vcc.ivr.catalog import ServiceCatalog
from vcc.ivr.validate import load_flow


def catalog(flow: str = "small") -> ServiceCatalog:
    return ServiceCatalog.model_validate(
        {
            "services": [
                {
                    "id": "post",
                    "name": {"zh": "邮政"},
                    "numbers": ["185"],
                    "flow": flow,
                    "cities": ["gz"],
                    "skill_groups": ["general"],
                }
            ]
        }
    )


async def test_flow_versions(store: Store) -> None:
    flows = FlowStore(store, lambda: 1000.0)
    data = small()
    text = as_yaml(data)
    stored, created = await flows.add_flow(load_flow(text), text)
    assert created and (stored.flow_id, stored.version, stored.nodes, stored.pushed_at) == (
        "small",
        1,
        4,
        1000.0,
    )
    # Same content, other layout: the same version, not a new one.
    assert (await flows.add_flow(load_flow(text), text + "\n# a comment\n"))[1] is False
    data["description"] = "changed"
    with pytest.raises(AlreadyExists):
        await flows.add_flow(load_flow(as_yaml(data)), as_yaml(data))
    data["version"] = 3
    await flows.add_flow(load_flow(as_yaml(data)), as_yaml(data))
    data["version"] = 2
    with pytest.raises(FailedPrecondition):
        await flows.add_flow(load_flow(as_yaml(data)), as_yaml(data))
    assert [f.version for f in await flows.flows()] == [3, 1]
    newest = await flows.flow("small")
    assert newest is not None and newest.version == 3 and newest.description == "changed"
    first = await flows.flow("small", 1)
    assert first is not None and first.document == text
    assert await flows.flow("small", 2) is None
    assert await flows.newest_versions() == {"small": 3}


async def test_catalog_revisions(store: Store) -> None:
    flows = FlowStore(store, lambda: 1000.0)
    assert await flows.catalog() is None
    first, created = await flows.add_catalog(catalog(), "a")
    assert (first.revision, created) == (1, True)
    assert (await flows.add_catalog(catalog(), "b"))[1] is False
    second, created = await flows.add_catalog(catalog("other"), "c")
    assert (second.revision, created) == (2, True)
    current = await flows.catalog()
    assert current is not None and (current.revision, current.document) == (2, "c")
