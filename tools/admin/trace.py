"""`vcc trace CALL_ID --run-dir D`: one call's spans as a time line across the processes.

Reads every process's JSON-lines span file under the run folder (vcc.tracing writes them in each
process's working folder, `traces/`), keeps the traces that hold a span of the call, and the
batch traces of its records' shipping that link to them (a batch carries many calls' records,
so it is a trace of its own, linked to each call's).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tools.province.spans import SpanRow, read_spans

__all__ = ["SpanRow", "call_spans", "read_spans", "timeline"]


def call_spans(spans: Iterable[SpanRow], call_id: str) -> list[SpanRow]:
    """The spans of every trace that holds one of the call's spans, and of the batch traces that
    link to them; in start order."""
    spans = list(spans)
    traces = {s.trace_id for s in spans if s.attributes.get("vcc.call_id") == call_id}
    linked = {s.trace_id for s in spans if any(link.split("/", 1)[0] in traces for link in s.links)}
    wanted = traces | linked
    # A parent starts with its first child but lasts longer: it comes first.
    return sorted((s for s in spans if s.trace_id in wanted), key=lambda s: (s.start_ns, -s.end_ns))


def timeline(spans: Sequence[SpanRow]) -> list[str]:
    """One line per span: offset from the first (ms), duration, process, indented name, details."""
    if not spans:
        return []
    by_id = {s.span_id: s for s in spans}

    def depth(s: SpanRow) -> int:
        d, seen = 0, set()
        while s.parent_id in by_id and s.span_id not in seen:
            seen.add(s.span_id)
            s = by_id[s.parent_id]
            d += 1
        return d

    t0 = spans[0].start_ns
    lines = [f"{'at ms':>9} {'took ms':>9}  {'process':<12} span"]
    for s in spans:
        details = " ".join(
            f"{k.removeprefix('vcc.')}={v}"
            for k, v in s.attributes.items()
            if k.startswith("vcc.") and k != "vcc.call_id"
        )
        lines.append(
            f"{(s.start_ns - t0) / 1e6:9.1f} {(s.end_ns - s.start_ns) / 1e6:9.1f}  {s.process:<12} "
            f"{'  ' * depth(s)}{s.name}{'  ' + details if details else ''}"
        )
    return lines
