"""What the desktop and the console show, as plain JSON-ready dicts, read from the call control's
state and from what the desk remembers of the events it was sent (offers, calls today, notices)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from routing.agents import Agent, AgentState
from site_node.callcontrol import Switchboard
from site_node.callcontrol.domain import Call, CustomerInfo, ToAgent
from site_node.messaging import Message
from vcc.config import ProvinceConfig

HISTORY_KEY = "transfer_history"
MAX_CALLS_TODAY = 200


@dataclass
class DeskMemory:
    """Per agent: what the desk was told that the call control does not keep."""

    offer: dict[str, Any] | None = None
    calls_today: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_CALLS_TODAY))
    # The latest notices: a supervisor forced a state, a supervision began or ended, a transfer moved.
    forced: dict[str, Any] | None = None
    supervision: dict[str, Any] | None = None
    transfer: dict[str, Any] | None = None

    def saw(self, u: ToAgent) -> None:
        match u.kind:
            case "offered":
                self.offer = {
                    "call_id": u.call_id,
                    "ani": u.ani,
                    "dnis": u.dnis,
                    "skill_group": u.skill_group,
                    "entry_site_id": u.entry_site_id,
                    "attached": dict(u.attached),
                    "customer": customer(u.customer),
                    "waited_s": round(u.waited_s, 1),
                    "ring_timeout_s": u.ring_timeout_s,
                    "purpose": u.purpose,
                    "from_agent_code": u.from_agent_code,
                    "offered_at": u.at,
                }
                self.transfer = None
            case "connected":
                o = self.offer or {}
                if o.get("call_id") != u.call_id:
                    o = {"call_id": u.call_id}
                self.calls_today.appendleft(
                    {
                        "call_id": u.call_id,
                        "ani": o.get("ani", ""),
                        "skill_group": o.get("skill_group", ""),
                        "purpose": o.get("purpose", ""),
                        "answered_at": u.at,
                        "ended_at": None,
                        "reason": "",
                        "wrap_up_code": "",
                        "note": "",
                    }
                )
            case "ended":
                for c in self.calls_today:
                    if c["call_id"] == u.call_id and c["ended_at"] is None:
                        c.update(ended_at=u.at, reason=u.reason)
                        break
            case "withdrawn":
                if self.offer and self.offer.get("call_id") == u.call_id:
                    self.offer = None
            case "forced":
                self.forced = {"stage": u.stage, "reason": u.reason, "by": u.other_agent_code, "at": u.at}
            case "supervision":
                if u.stage == "ended":
                    self.supervision = None
                else:
                    self.supervision = {
                        "mode": u.stage, "call_id": u.call_id, "other": u.other_agent_code, "at": u.at,
                    }  # fmt: skip
            case "transfer":
                self.transfer = {
                    "call_id": u.call_id, "stage": u.stage, "agent_code": u.other_agent_code,
                    "site_id": u.site_id, "reason": u.reason, "at": u.at,
                }  # fmt: skip


def customer(c: CustomerInfo | None) -> dict[str, str] | None:
    if c is None:
        return None
    return {
        "id": c.customer_id,
        "name": c.name,
        "phone": c.phone,
        "level": c.level,
        "city": c.city,
        "notes": c.notes,
    }


class Views:
    def __init__(self, province: ProvinceConfig, sb: Switchboard) -> None:
        self.province = province
        self.sb = sb
        site = sb.site
        self.names = {a.code: a.name for s in province.sites for a in s.agents}
        self.roles = {a.code: a.role for a in site.agents}
        self.group_names = {g.id: g.name or g.id for g in site.skill_groups}
        self.ivr_labels = {c.digit: c.label or c.skill_group for c in site.ivr.choices}
        self.reasons = [{"code": r.code, "label": r.label or r.code} for r in province.not_ready_reasons]

    def agent(self, a: Agent) -> dict[str, Any]:
        return {
            "code": a.code,
            "name": self.names.get(a.code, ""),
            "role": self.roles.get(a.code, "agent"),
            "site_id": self.sb.site_id,
            "state": str(a.state),
            "reason": a.reason,
            "since": a.since,
            "call_id": a.call_id,
            "pending_not_ready": a.pending_not_ready,
            "wrap_up_until": a.wrap_up_until,
            "skills": dict(self.sb.skills.get(a.code, {})),
        }

    def call(self, call: Call, code: str, now: float) -> dict[str, Any]:
        choice = call.attached.get("ivr_choice", "")
        history = [step for step in call.attached.get(HISTORY_KEY, "").split(";") if step]
        consult = call.consult
        return {
            "call_id": call.call_id,
            "state": str(call.state),
            "mine": call.agent_code == code,
            "agent_code": call.agent_code,
            "ani": call.ani,
            "dnis": call.dnis,
            "skill_group": call.skill_group,
            "skill_group_name": self.group_names.get(call.skill_group, call.skill_group),
            "entry_site_id": call.entry_site_id,
            "guest_of": call.guest_of,
            "purpose": call.purpose,
            "from_agent_code": call.from_agent_code,
            "arrived_at": call.arrived_at,
            "answered_at": call.answered_at,
            "waited_s": round((call.answered_at or now) - call.arrived_at, 1),
            "ivr_choice": choice,
            "ivr_label": self.ivr_labels.get(choice, ""),
            "attached": {k: v for k, v in call.attached.items() if k != HISTORY_KEY},
            "history": history,
            "customer": customer(call.customer),
            "consult": None
            if consult is None
            else {
                "agent_code": consult.agent_code,
                "agent_name": self.names.get(consult.agent_code, ""),
                "site_id": consult.site_id,
                "state": consult.state,
                "conference": consult.conference,
            },
        }

    def current_call(self, code: str, now: float) -> dict[str, Any] | None:
        a = self.sb.agents[code]
        call = self.sb.calls.get(a.call_id) if a.call_id else None
        if call is None:
            return None
        return self.call(call, code, now)

    def supervised(self, code: str) -> dict[str, str] | None:
        part = self.sb.supervision
        s = part.by_supervisor.get(code)
        if s is not None:
            return {"as": "supervisor", "mode": s.mode, "agent": s.agent_code, "call_id": s.call_id}
        return None

    def queues(self, groups: list[str], now: float) -> list[dict[str, Any]]:
        acd = self.sb.acd
        out = []
        for g in groups:
            members = acd.members(g)
            states = [self.sb.agents[c].state for c in members]
            out.append(
                {
                    "skill_group": g,
                    "name": self.group_names.get(g, g),
                    "waiting": acd.waiting(g),
                    "oldest_wait_s": round(self.sb.oldest_wait_s(g, now), 1),
                    "ready": acd.ready_count(g),
                    "logged_in": sum(1 for s in states if s != AgentState.LOGGED_OUT),
                    "talking": sum(1 for s in states if s in (AgentState.TALKING, AgentState.HELD)),
                }
            )
        return out

    def messages(self, inbox: list[Message]) -> list[dict[str, Any]]:
        return [
            {
                "id": m.id,
                "at": m.at,
                "from": m.sender,
                "from_name": self.names.get(m.sender, ""),
                "to": list(m.to),
                "text": m.text,
                "broadcast": m.broadcast,
            }
            for m in inbox
        ]

    def team_member(self, code: str, now: float) -> dict[str, Any]:
        a = self.sb.agents[code]
        view = self.agent(a)
        call = self.sb.calls.get(a.call_id) if a.call_id else None
        view["call"] = (
            None
            if call is None
            else {
                "call_id": call.call_id,
                "state": str(call.state),
                "ani": call.ani,
                "skill_group": call.skill_group,
                "answered_at": call.answered_at,
                "mine": call.agent_code == code,
            }
        )
        s = self.sb.supervision.by_call.get(a.call_id) if a.call_id else None
        view["supervised_by"] = None if s is None else {"supervisor": s.supervisor, "mode": s.mode}
        view["logout_pending"] = code in self.sb.supervision.pending_logout
        return view
