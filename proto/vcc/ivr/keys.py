"""How central hands flows and the catalog to the sites through etcd (who writes which key).

Central (its leader) writes one key per flow version, never rewritten with other content:
`<prefix>/<province>/ivr/flows/<flow_id>/<version, 10 digits>`, and the catalog at
`<prefix>/<province>/ivr/catalog`. Values are canonical JSON of the validated documents. Sites
watch `<prefix>/<province>/ivr/` and use the highest version of each flow for new calls.
"""

from __future__ import annotations

import hashlib
import json

from vcc.digits import is_digits
from vcc.ivr.catalog import ServiceCatalog
from vcc.ivr.flow import Flow

_VERSION_DIGITS = 10


def ivr_prefix(prefix: str, province_id: str) -> str:
    return f"{prefix.rstrip('/')}/{province_id}/ivr/"


def flow_key(prefix: str, province_id: str, flow_id: str, version: int) -> str:
    # Zero-padded: etcd lists keys in byte order, so versions sort as numbers.
    return f"{ivr_prefix(prefix, province_id)}flows/{flow_id}/{version:0{_VERSION_DIGITS}d}"


def catalog_key(prefix: str, province_id: str) -> str:
    return f"{ivr_prefix(prefix, province_id)}catalog"


def parse_key(prefix: str, province_id: str, key: str) -> tuple[str, int] | str | None:
    """("flow id", version) for a flow key, "catalog" for the catalog key, None for anything else."""
    root = ivr_prefix(prefix, province_id)
    if not key.startswith(root):
        return None
    rest = key[len(root) :]
    if rest == "catalog":
        return "catalog"
    parts = rest.split("/")
    if len(parts) == 3 and parts[0] == "flows" and is_digits(parts[2]):
        return parts[1], int(parts[2])
    return None


def canonical_flow(flow: Flow) -> str:
    """The flow as canonical JSON: what is stored, published and digested (comments and layout of
    the YAML do not make a new flow)."""
    return json.dumps(flow.model_dump(mode="json", by_alias=True), sort_keys=True, ensure_ascii=False)


def canonical_catalog(catalog: ServiceCatalog, revision: int) -> str:
    body = catalog.model_dump(mode="json", by_alias=True)
    return json.dumps({"revision": revision, "catalog": body}, sort_keys=True, ensure_ascii=False)


def digest(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()


def decode_flow(raw: bytes) -> Flow:
    return Flow.model_validate_json(raw)


def decode_catalog(raw: bytes) -> tuple[int, ServiceCatalog]:
    data = json.loads(raw.decode())
    if not isinstance(data, dict):
        raise ValueError("the catalog value is not a JSON object")
    return int(data["revision"]), ServiceCatalog.model_validate(data["catalog"])
