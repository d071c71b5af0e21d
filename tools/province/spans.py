"""The span files a run folder's processes write (vcc.tracing: JSON lines in each process's
working folder, `traces/`), read back as rows: for `vcc trace` (tools/admin/trace.py) and the
benches' step times (tools/bench/cluster.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vcc.tracing import TRACES_FILE_SUFFIX


@dataclass(frozen=True)
class SpanRow:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    process: str
    start_ns: int
    end_ns: int
    attributes: Mapping[str, Any]
    links: tuple[str, ...]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SpanRow:
        return cls(
            str(d["trace_id"]),
            str(d["span_id"]),
            str(d.get("parent_id", "")),
            str(d["name"]),
            str(d.get("process", "")),
            int(d["start_ns"]),
            int(d.get("end_ns") or d["start_ns"]),
            dict(d.get("attributes", {})),
            tuple(d.get("links", ())),
        )


def read_spans(run_dir: Path) -> list[SpanRow]:
    rows: list[SpanRow] = []
    # The current files and the rotated ones (`<name>.traces.jsonl.1`, ...).
    for path in sorted(run_dir.rglob(f"*{TRACES_FILE_SUFFIX}*")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    rows.append(SpanRow.from_json(json.loads(line)))
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a killed process
    return rows
