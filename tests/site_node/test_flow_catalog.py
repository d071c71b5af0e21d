"""The site's copy of the flows and the catalog, fed key by key as etcd would."""

from __future__ import annotations

import yaml

from site_node.links.flow_catalog import FlowCatalog
from tests.ivr.flows import FLOWS, as_yaml, example, small
from vcc.ivr.catalog import parse_catalog
from vcc.ivr.keys import canonical_catalog, canonical_flow, catalog_key, flow_key
from vcc.ivr.validate import load_flow

PREFIX, PROVINCE = "/vcc", "gd"


def put_flow(catalog: FlowCatalog, data: dict[str, object], version: int | None = None) -> str | None:
    flow = load_flow(as_yaml(data))
    key = flow_key(PREFIX, PROVINCE, flow.id, version or flow.version)
    return catalog.put(key, canonical_flow(flow).encode(), PREFIX, PROVINCE)


def test_the_newest_version_is_current_and_older_ones_stay() -> None:
    catalog = FlowCatalog("gz")
    data = small()
    assert put_flow(catalog, data) == "flow small version 1"
    data["version"] = 3
    put_flow(catalog, data)
    data["version"] = 2
    put_flow(catalog, data)
    current = catalog.current("small")
    assert current is not None and current.version == 3
    assert catalog.versions() == {"small": [1, 2, 3]}
    # The same key again (a republish) changes nothing.
    assert put_flow(catalog, data) is None
    assert (
        catalog.delete(flow_key(PREFIX, PROVINCE, "small", 3), PREFIX, PROVINCE)
        == "flow small version 3 withdrawn"
    )
    current = catalog.current("small")
    assert current is not None and current.version == 2


def test_bad_values_and_foreign_keys_are_ignored() -> None:
    catalog = FlowCatalog("gz")
    assert catalog.put(flow_key(PREFIX, PROVINCE, "small", 1), b"{not json", PREFIX, PROVINCE) is None
    # A key that says version 2 but holds version 1.
    assert put_flow(catalog, small(), version=2) is None
    assert catalog.put("/vcc/gd/sites/gz", b"{}", PREFIX, PROVINCE) is None
    assert catalog.put(catalog_key(PREFIX, PROVINCE), b"[]", PREFIX, PROVINCE) is None
    assert catalog.versions() == {} and catalog.catalog is None


def test_a_dialled_number_reaches_the_service_offered_in_this_city() -> None:
    text = (FLOWS / "catalog.yaml").read_text(encoding="utf-8")
    services = parse_catalog(text)
    key = catalog_key(PREFIX, PROVINCE)
    foshan, zhuhai = FlowCatalog("fs"), FlowCatalog("zh")
    for site in (foshan, zhuhai):
        assert site.put(key, canonical_catalog(services, 2).encode(), PREFIX, PROVINCE) == (
            "service catalog revision 2"
        )
        # An older revision arriving late does not replace it.
        assert site.put(key, canonical_catalog(services, 1).encode(), PREFIX, PROVINCE) is None
    # The flow has not reached the site yet: no entry rather than a half one.
    assert foshan.entry("185") is None
    postal = example("postal-185")
    foshan.put(flow_key(PREFIX, PROVINCE, postal.id, 1), canonical_flow(postal).encode(), PREFIX, PROVINCE)
    entry = foshan.entry("185")
    assert entry is not None and entry.service.id == "postal-185" and entry.flow.version == 1
    # Phone banking is not offered in Foshan; nothing is offered in Zhuhai.
    assert foshan.entry("95580") is None and zhuhai.entry("185") is None
    assert yaml.safe_load(text)["services"][1]["cities"] == ["gz", "sz"]
