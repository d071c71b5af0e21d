"""Layout shows architecture: no class of the pure call control or of the routing core grows past
about 300 lines (issue 9). Past that, split it into composed parts by concern or by caller."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PURE_PACKAGES = ("site_node/callcontrol", "routing")
MAX_CLASS_LINES = 300


def oversized_classes(root: Path, packages: tuple[str, ...] = PURE_PACKAGES) -> list[str]:
    """'path:Class (N lines)' for every class over MAX_CLASS_LINES under `packages` of `root`."""
    found = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_CLASS_LINES:
                        found.append(f"{path.relative_to(root)}:{node.name} ({lines} lines)")
    return found


def test_no_class_of_the_pure_packages_is_over_300_lines() -> None:
    assert (ROOT / "site_node/callcontrol/switchboard.py").is_file()  # the check looks in the right place
    assert oversized_classes(ROOT) == []


def test_the_check_finds_a_class_over_the_limit(tmp_path: Path) -> None:
    package = tmp_path / "routing" / "deep"
    package.mkdir(parents=True)
    body = "".join(f"    def m{i}(self) -> None:\n        pass\n" for i in range(150))
    (package / "big.py").write_text(f"class Big:\n{body}\n\nclass Small:\n    pass\n", encoding="utf-8")
    (tmp_path / "site_node" / "callcontrol").mkdir(parents=True)
    assert oversized_classes(tmp_path) == ["routing/deep/big.py:Big (301 lines)"]
