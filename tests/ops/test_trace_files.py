"""The local trace files stay bounded: rotated at their size, the oldest dropped, all still read."""

from __future__ import annotations

from pathlib import Path

from tools.admin.trace import read_spans
from vcc.config import TracingConfig
from vcc.tracing import Tracing


def test_trace_files_are_rotated_and_bounded(tmp_path: Path) -> None:
    config = TracingConfig(file_max_bytes=4096, file_keep=2)
    tracing = Tracing("site:gz", config, traces_dir=tmp_path)
    assert tracing.path is not None
    exported = 0
    for batch in range(40):
        for i in range(10):
            with tracing.tracer.start_as_current_span("call", attributes={"vcc.call_id": f"c-{batch}-{i}"}):
                exported += 1
        tracing.provider.force_flush()
    tracing.shutdown()

    files = sorted(tmp_path.iterdir())
    names = [p.name for p in files]
    assert names == ["site-gz.traces.jsonl", "site-gz.traces.jsonl.1", "site-gz.traces.jsonl.2"]
    # Each file holds whole batches and stays near its bound (a batch is never split).
    assert all(p.stat().st_size <= 4096 for p in files), [p.stat().st_size for p in files]
    rows = read_spans(tmp_path)
    assert 0 < len(rows) < exported  # the oldest were dropped
    # What is kept is the newest, every line whole.
    kept = {r.attributes["vcc.call_id"] for r in rows}
    assert "c-39-9" in kept and "c-0-0" not in kept


def test_a_restarted_process_appends_to_its_file(tmp_path: Path) -> None:
    # A process restarted over a file below its bound appends to it.
    first = Tracing("central:1", TracingConfig(file_max_bytes=1 << 20), traces_dir=tmp_path)
    with first.tracer.start_as_current_span("a"):
        pass
    first.shutdown()
    second = Tracing("central:1", TracingConfig(file_max_bytes=1 << 20), traces_dir=tmp_path)
    with second.tracer.start_as_current_span("b"):
        pass
    second.shutdown()
    assert [p.name for p in tmp_path.iterdir()] == ["central-1.traces.jsonl"]
    assert sorted(r.name for r in read_spans(tmp_path)) == ["a", "b"]
