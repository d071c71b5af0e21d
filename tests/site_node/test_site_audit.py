"""The site's one audit path: every kind of entry (a supervisor's action from the call control, a
login from the credential check, an alert) is journaled at the site and handed to the sink bound
for central, each in central's words (actor `agent:<code>`, outcome ok/denied/refused)."""

from __future__ import annotations

from typing import Any

from site_node.audit import SiteAudit
from site_node.callcontrol.domain import Audit


class Sink:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def record(self, actor: str, action: str, **fields: Any) -> None:
        self.entries.append({"actor": actor, "action": action, **fields})


def test_every_entry_is_journaled_and_shipped_in_centrals_words() -> None:
    sink = Sink()
    audit = SiteAudit("gz", sink, clock=lambda: 100.0)
    with audit.acting_from("10.0.0.7"):
        audit.record(Audit(99.0, "0901", "monitor", "0102", call_id="c-1"))
    audit.record(Audit(99.5, "0102", "admin/agents", "", outcome="denied", detail="not-an-administrator"))
    audit.event("agent:0102", "login-failed", target="0102", source="web:10.0.0.8", outcome="refused")
    audit.event(
        "site/gz", "record-dead-lettered", target="c-2#3", outcome="refused", detail={"reason": "too big"}
    )

    assert [(e.actor, e.action, e.outcome, e.origin) for e in audit.entries] == [
        ("0901", "monitor", "done", "10.0.0.7"),
        ("0102", "admin/agents", "denied", ""),
        ("0102", "login-failed", "refused", "web:10.0.0.8"),
        ("site/gz", "record-dead-lettered", "refused", ""),
    ]
    assert audit.entries[3].detail == "reason=too big" and audit.entries[3].at == 100.0
    assert [(e["actor"], e["action"], e["outcome"], e["source"]) for e in sink.entries] == [
        ("agent:0901", "monitor", "ok", "10.0.0.7"),
        ("agent:0102", "admin/agents", "denied", ""),
        ("agent:0102", "login-failed", "refused", "web:10.0.0.8"),
        ("site/gz", "record-dead-lettered", "refused", ""),
    ]
    assert sink.entries[0]["detail"] == {"call_id": "c-1", "detail": ""}
    assert sink.entries[3]["detail"] == {"reason": "too big"}


def test_without_a_sink_entries_stay_at_the_site() -> None:
    audit = SiteAudit("gz")
    audit.event("agent:0102", "login", source="web:1.2.3.4")
    assert [(e.actor, e.action) for e in audit.entries] == [("0102", "login")]
