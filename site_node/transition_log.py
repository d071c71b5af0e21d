"""One log line per state transition of a call or an agent, as `from -[event]-> to`.

The call control is pure and does not log: it returns effects. This adapter reads them as the
runtime carries them out: a call's journal entries (each one an event of its history) and an
agent's state updates (which name their event). Each line carries the call id, the agent code
and the skill group as fields (JSON logs) and the caller's number masked (vcc.logs).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence

from site_node.callcontrol.domain import Effect, Journal, ToAgent
from vcc.call_events import EventKind

log = logging.getLogger("vcc.transitions")

# The call's state after each kind of event; None: the event leaves the state as it was.
_CALL_STATE_AFTER: dict[EventKind, str | None] = {
    EventKind.ARRIVED: "ARRIVING",
    EventKind.BLOCKED: "ENDED",
    EventKind.IVR_STARTED: "IVR",
    EventKind.DIGITS: None,
    EventKind.QUEUED: "QUEUED",
    EventKind.RINGING: "RINGING",
    EventKind.RING_NO_ANSWER: "QUEUED",
    EventKind.ANSWERED: "TALKING",
    EventKind.HELD: "HELD",
    EventKind.RETRIEVED: "TALKING",
    EventKind.TRANSFERRED: None,
    EventKind.ABANDONED: "ENDED",
    EventKind.ENDED: "ENDED",
    EventKind.AGENT_HUNG_UP: None,
    EventKind.CALLER_HUNG_UP: None,
    EventKind.ROUTED: None,
    EventKind.ROUTE_FAILED: None,
    EventKind.RETURNED: "QUEUED",
}
NEW = "NEW"
ENDED = "ENDED"
# Calls that reached ENDED lately: an entry that follows (ABANDONED or BLOCKED, then ENDED; the
# agent's wrap-up code) reads `from` ENDED, not NEW.
REMEMBER_ENDED = 1_000


class TransitionLog:
    """Remembers each live call's and agent's last state, to write `from` on the next line."""

    def __init__(self, site_id: str) -> None:
        self._site_id = site_id
        self._calls: dict[str, str] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._agents: dict[str, str] = {}

    def observe(self, effects: Sequence[Effect]) -> None:
        if not log.isEnabledFor(logging.INFO):
            self._track(effects)
            return
        for fx in effects:
            if isinstance(fx, Journal):
                self._call(fx)
            elif isinstance(fx, ToAgent) and fx.kind == "state" and fx.state:
                self._agent(fx)

    def _track(self, effects: Sequence[Effect]) -> None:
        # Logging off: keep the states current, so that turning it on later writes true `from`s.
        for fx in effects:
            if isinstance(fx, Journal):
                self._advance(fx)
            elif isinstance(fx, ToAgent) and fx.kind == "state" and fx.state:
                self._agents[fx.agent_code] = fx.state

    def _advance(self, fx: Journal) -> tuple[str, str]:
        e = fx.event
        before = self._calls.get(e.call_id) or (ENDED if e.call_id in self._ended else NEW)
        after = _CALL_STATE_AFTER.get(e.kind) or before
        if after == ENDED:
            self._calls.pop(e.call_id, None)
            self._ended[e.call_id] = None
            self._ended.move_to_end(e.call_id)
            while len(self._ended) > REMEMBER_ENDED:
                self._ended.popitem(last=False)
        else:
            self._calls[e.call_id] = after
        return before, after

    def _call(self, fx: Journal) -> None:
        e = fx.event
        before, after = self._advance(fx)
        extra = {
            "call_id": e.call_id,
            "agent_code": e.agent_code,
            "skill_group": e.skill_group,
            "event": str(e.kind),
            "from_state": before,
            "to_state": after,
        }
        if e.ani:
            extra["ani"] = e.ani
        if e.outcome is not None:
            extra["outcome"] = str(e.outcome)
        log.info("call %s -[%s]-> %s", before, e.kind, after, extra=extra)

    def _agent(self, fx: ToAgent) -> None:
        before = self._agents.get(fx.agent_code, "LOGGED_OUT")
        self._agents[fx.agent_code] = fx.state
        event = fx.event or "?"
        if fx.reason:
            event = f"{event}:{fx.reason}"
        log.info(
            "agent %s -[%s]-> %s",
            before,
            event,
            fx.state,
            extra={
                "agent_code": fx.agent_code,
                "call_id": fx.call_id,
                "event": event,
                "from_state": before,
                "to_state": fx.state,
            },
        )
