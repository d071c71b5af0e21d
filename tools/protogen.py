"""Regenerate the Python code of proto/ (``make proto``); the staleness test calls it too."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent.parent / "proto"
PACKAGE = Path("vcc") / "v1"


def generate(out_root: Path = PROTO_ROOT) -> list[Path]:
    """Run protoc (from grpcio-tools) with the mypy-protobuf plugins; return the written files."""
    bindir = Path(sys.executable).parent
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE).glob("*.proto"))
    out = str(out_root)
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    subprocess.run(cmd, check=True, cwd=PROTO_ROOT)
    return sorted(
        p for p in (out_root / PACKAGE).iterdir() if p.suffix in {".py", ".pyi"} and p.name != "__init__.py"
    )


def main() -> None:
    target = PROTO_ROOT / PACKAGE
    for old in target.glob("*_pb2*.py*"):
        old.unlink()
    written = generate()
    for pkg in (PROTO_ROOT / "vcc", target):
        (pkg / "__init__.py").touch()
    shutil.rmtree(target / "__pycache__", ignore_errors=True)
    print(f"generated {len(written)} files in {target}")


if __name__ == "__main__":
    main()
