"""The committed generated code is what `make proto` produces from the .proto files today."""

from __future__ import annotations

from pathlib import Path

from tools.protogen import PACKAGE, PROTO_ROOT, generate


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    fresh = generate(tmp_path)
    assert fresh, "protoc generated nothing"
    committed = PROTO_ROOT / PACKAGE
    names = {p.name for p in fresh}
    assert names == {p.name for p in committed.glob("*_pb2*.py*")}, "run `make proto`: files differ"
    stale = [p.name for p in fresh if p.read_bytes() != (committed / p.name).read_bytes()]
    assert not stale, f"run `make proto`: stale generated files {stale}"
