"""Dialling callbacks out through the trunk (F20). Progressive: a due callback is dialled when an
agent of its skill group is ready (beyond those already awaiting a dialled callee) and nobody
waits in the group's queue (callers who are waiting come first). Preview: a ready agent of the
group is taken out of the ACD and shown the callback; accepted, it is dialled for that agent (the
callee rings them); declined or left unanswered, the next agent gets it (one who declined is not
asked again while another is ready). The callee who answers is offered back on the trunk with
the dial's id and served first in the group; one who does not is retried later, up to the list's
attempts. Each step is in the record of the call that asked."""

from __future__ import annotations

from collections import Counter

from routing.acd import Acd
from routing.agents import AgentState
from site_node.callcontrol.agents import Agents
from site_node.callcontrol.callbacks import Callback, CallbackError, CallbackList
from site_node.callcontrol.domain import Call, DialOut, ToAgent
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.timers import Timers
from vcc.call_events import EventKind
from vcc.errors import FailedPrecondition, InvalidArgument, NotFound

# A gateway that never says how a dial went: counted as not answered after this long.
NO_ANSWER_S = 60.0
DIAL_OUTCOMES = frozenset({"no-answer", "busy", "failed"})
# An agent shown a callback (preview) who neither accepts nor declines: passed on after this long.
PREVIEW_S = 30.0


class Dialler:
    def __init__(self, site_groups: frozenset[str], acd: Acd, agents: Agents, timers: Timers) -> None:
        self.callbacks = CallbackList()
        self._groups = site_groups
        self._acd = acd
        self._agents = agents
        self._timers = timers
        # Preview: callback id -> the agent it is shown to (taken out of the ACD meanwhile).
        self.previews: dict[str, str] = {}
        # dial id -> the agent who accepted it (the callee rings them).
        self.dial_agents: dict[str, str] = {}
        # callback id -> agents who declined it (asked again only when nobody else is ready).
        self._declined: dict[str, set[str]] = {}
        # callback id -> the call that asked (its record gets every attempt, long after its end).
        self._origins: dict[str, Call] = {}
        # dial id -> callback id, while the gateway dials.
        self.dialling: dict[str, str] = {}
        # Callbacks not closed yet: `dial` runs after every tick, and is free while this is empty.
        self._open: set[str] = set()
        timers.on("dial", self._due)
        timers.on("preview", self._preview_due)

    def asked(self, callback: Callback, call: Call, fx: Effects) -> None:
        self._origins.setdefault(callback.callback_id, call)
        self._open.add(callback.callback_id)
        self._keep(callback.callback_id, fx)
        self._timers.arm(callback.next_attempt_at, "dial", callback.callback_id)

    def restore(self, callback: Callback, call: Call, now: float) -> None:
        """A callback kept before the site restarted, its asking call's journal numbers continued.
        One being dialled stays so (the gateway may still offer its callee) with a new no-answer
        deadline from now."""
        self.callbacks.restore(callback)
        self._origins[callback.callback_id] = call
        self._open.add(callback.callback_id)
        if callback.state == "dialling":
            dial_id = f"{callback.callback_id}-{len(callback.attempts)}"
            self.dialling[dial_id] = callback.callback_id
            self._timers.arm(now + NO_ANSWER_S, "dial", callback.callback_id, dial_id)
        else:
            self._timers.arm(max(callback.next_attempt_at, now), "dial", callback.callback_id)

    def dial(self, now: float, fx: Effects) -> None:
        """Dial what is due for the agents ready now (call after agents may have become ready)."""
        if not self._open:
            return
        self._withdraw_gone(now, fx)
        awaiting = Counter(
            self.callbacks.get(c).skill_group for d, c in self.dialling.items() if d not in self.dial_agents
        )
        for callback in self.callbacks.due(now):
            group = callback.skill_group
            if callback.reason == "virtual-hold" and group in self._groups:
                self._their_turn(callback, now, fx)
                continue
            if group not in self._groups or self._acd.waiting(group) > 0:
                continue
            if self._acd.ready_count(group) - awaiting[group] <= 0:
                continue
            if callback.mode == "preview":
                self._preview(callback, now, fx)
                continue
            started = self.callbacks.start(callback.callback_id, "", now)
            attempt = len(started.attempts)
            dial_id = f"{callback.callback_id}-{attempt}"
            self.dialling[dial_id] = callback.callback_id
            awaiting[group] += 1
            self._journal(callback.callback_id, "dialling", now, fx, attempt=str(attempt), dial_id=dial_id)
            self._keep(callback.callback_id, fx)
            fx.add(DialOut(dial_id, callback.number, group, callback.callback_id, attempt))
            self._timers.arm(now + NO_ANSWER_S, "dial", callback.callback_id, dial_id)

    def _their_turn(self, callback: Callback, now: float, fx: Effects) -> None:
        """Virtual hold: the caller kept their place; dialled, for an agent kept for them, once
        nobody who came before them waits (the side calls this before the queue's dispatch, so
        their agent is not given to a caller who came after)."""
        oldest = self._acd.oldest_arrival(callback.skill_group)
        if oldest is not None and oldest < callback.place_since:
            return
        code = self._acd.take_ready_agent(callback.skill_group)
        if code is None:
            return
        cb_id = callback.callback_id
        started = self.callbacks.start(cb_id, code, now)
        attempt = len(started.attempts)
        dial_id = f"{cb_id}-{attempt}"
        self.dialling[dial_id] = cb_id
        self.dial_agents[dial_id] = code
        self._journal(cb_id, "dialling", now, fx, attempt=str(attempt), dial_id=dial_id, agent=code)
        self._keep(cb_id, fx)
        fx.add(DialOut(dial_id, callback.number, callback.skill_group, cb_id, attempt))
        self._timers.arm(now + NO_ANSWER_S, "dial", cb_id, dial_id)

    # Preview -------------------------------------------------------------------------------------

    def _preview(self, callback: Callback, now: float, fx: Effects) -> None:
        group, cb_id = callback.skill_group, callback.callback_id
        code = self._acd.take_ready_agent(group, exclude=frozenset(self._declined.get(cb_id, ())))
        if code is None:
            return
        started = self.callbacks.start(cb_id, code, now)
        self.previews[cb_id] = code
        attempt = str(len(started.attempts))
        self._journal(cb_id, "offered", now, fx, agent=code, attempt=attempt)
        self._keep(cb_id, fx)
        fx.add(self._shown(code, started, "offered", now))
        self._timers.arm(now + PREVIEW_S, "preview", cb_id, f"{code}:{attempt}")

    def _shown(self, code: str, callback: Callback, stage: str, now: float) -> ToAgent:
        origin = self._origins.get(callback.callback_id)
        return ToAgent(
            code, "callback_preview", now, call_id=origin.call_id if origin else "", ani=callback.number,
            skill_group=callback.skill_group, stage=stage, reason=callback.reason,
            attached=(("attempt", str(len(callback.attempts))), ("callback_id", callback.callback_id),
                      ("timeout_s", f"{PREVIEW_S:g}")),
        )  # fmt: skip

    def shown_to(self, code: str) -> dict[str, object] | None:
        """The callback shown to this agent now, for their desk (None: none)."""
        callback_id = next((c for c, a in self.previews.items() if a == code), None)
        if callback_id is None:
            return None
        cb = self.callbacks.get(callback_id)
        return {
            "callback_id": callback_id, "number": cb.number, "skill_group": cb.skill_group,
            "reason": cb.reason, "shown_at": cb.attempts[-1].at, "timeout_s": PREVIEW_S,
        }  # fmt: skip

    def answer_preview(self, code: str, callback_id: str, accept: bool, now: float, fx: Effects) -> None:
        """The agent shown a callback accepts it (dialled for them now) or declines it."""
        self._agents.logged_in(code)
        shown_to = self.previews.get(callback_id)
        if shown_to is None:
            raise NotFound("no-callback-preview", f"callback_id: {callback_id!r} is not shown to anyone")
        if shown_to != code:
            raise FailedPrecondition("not-your-callback", f"callback {callback_id} is shown to another agent")
        if not self._still_reserved(code):
            self._pass_on(callback_id, code, "withdrawn", now, fx)
            raise FailedPrecondition("callback-withdrawn", f"callback {callback_id}: the agent is not ready")
        if not accept:
            self._pass_on(callback_id, code, "declined", now, fx)
            self.dial(now, fx)
            return
        del self.previews[callback_id]
        self._declined.pop(callback_id, None)
        callback = self.callbacks.get(callback_id)
        attempt = len(callback.attempts)
        dial_id = f"{callback_id}-{attempt}"
        self.dialling[dial_id] = callback_id
        self.dial_agents[dial_id] = code
        self._journal(callback_id, "accepted", now, fx, agent=code)
        self._journal(callback_id, "dialling", now, fx, attempt=str(attempt), dial_id=dial_id, agent=code)
        fx.add(DialOut(dial_id, callback.number, callback.skill_group, callback_id, attempt))
        self._timers.arm(now + NO_ANSWER_S, "dial", callback_id, dial_id)

    def _still_reserved(self, code: str) -> bool:
        """Taken out of the ACD for a callback and still ready (not gone not ready, nor back in)."""
        agent = self._agents.agents.get(code)
        return agent is not None and agent.state == AgentState.READY and not self._acd.is_ready(code)

    def _pass_on(self, callback_id: str, code: str, stage: str, now: float, fx: Effects) -> None:
        """The agent shown it declined, did not answer, or is no longer ready: the next agent."""
        self.previews.pop(callback_id, None)
        self._declined.setdefault(callback_id, set()).add(code)
        after = self.callbacks.finish(callback_id, "agent-declined", now)
        self._journal(callback_id, stage, now, fx, agent=code)
        self._keep(callback_id, fx)
        fx.add(self._shown(code, after, stage, now))
        if self._still_reserved(code):
            self._agents.unreserve(code)
        self._timers.arm(after.next_attempt_at, "dial", callback_id)
        # Those who passed may be asked again later (with one agent, the only one to ask).
        self._timers.arm(now + self.callbacks.policy.retry_after_s, "dial", callback_id, "ask-again")

    def _preview_due(self, callback_id: str, token: str, now: float, fx: Effects) -> None:
        code, _, attempt = token.partition(":")
        callback = self.callbacks.get(callback_id) if callback_id in self.previews else None
        if callback is None or self.previews[callback_id] != code or str(len(callback.attempts)) != attempt:
            return
        self._pass_on(callback_id, code, "preview-timeout", now, fx)
        self.dial(now, fx)

    def _withdraw_gone(self, now: float, fx: Effects) -> None:
        """Agents shown a callback, or awaiting its callee, who went not ready or logged out."""
        for callback_id, code in list(self.previews.items()):
            if not self._still_reserved(code):
                self._pass_on(callback_id, code, "withdrawn", now, fx)
        for dial_id, code in list(self.dial_agents.items()):
            if not self._still_reserved(code):
                del self.dial_agents[dial_id]  # its callee queues in the group as progressive ones do

    def answered_by(self, dial_id: str) -> str:
        """The agent a preview callback's callee goes to ("" for progressive, or one not ready)."""
        code = self.dial_agents.get(dial_id, "")
        return code if code and self._still_reserved(code) else ""

    def check_answer(self, dial_id: str) -> None:
        """Raises for a dial that is not being dialled (before anything changes)."""
        if dial_id not in self.dialling:
            raise NotFound("unknown-dial", f"dial_id: {dial_id!r} is not being dialled")

    def answered(self, call: Call, dial_id: str, now: float, fx: Effects) -> str:
        """The callee answered: the callback is done; the skill group to serve the call in."""
        callback_id = self.dialling.pop(dial_id)
        self.dial_agents.pop(dial_id, None)
        done = self.callbacks.finish(callback_id, "answered", now)
        self._journal(callback_id, "answered", now, fx, dial_id=dial_id, call_id=call.call_id)
        self._closed(callback_id, fx)
        fx.journal(
            call, EventKind.CALLBACK, now,
            data=(("callback_id", callback_id), ("stage", "callee-answered"),
                  ("origin_call_id", done.call_id)),
        )  # fmt: skip
        return done.skill_group

    def failed(self, dial_id: str, outcome: str, now: float, fx: Effects) -> None:
        if outcome not in DIAL_OUTCOMES:
            raise InvalidArgument("bad-dial-outcome", f"outcome: one of {', '.join(sorted(DIAL_OUTCOMES))}")
        callback_id = self.dialling.pop(dial_id, None)
        if callback_id is None:
            raise NotFound("unknown-dial", f"dial_id: {dial_id!r} is not being dialled")
        self._finish(callback_id, dial_id, outcome, now, fx)

    def _finish(self, callback_id: str, dial_id: str, outcome: str, now: float, fx: Effects) -> None:
        code = self.dial_agents.pop(dial_id, "")
        if code and self._still_reserved(code):
            self._agents.unreserve(code)  # the callee was not reached: the agent takes calls again
        try:
            after = self.callbacks.finish(callback_id, outcome, now)  # type: ignore[arg-type]
        except CallbackError:
            return
        self._journal(callback_id, outcome, now, fx, dial_id=dial_id, state=after.state)
        if after.state == "pending":
            self._keep(callback_id, fx)
            self._timers.arm(after.next_attempt_at, "dial", callback_id)
        else:
            self._closed(callback_id, fx)

    def _closed(self, callback_id: str, fx: Effects) -> None:
        """A callback over (answered, or out of attempts): its caller's call is let go."""
        self._open.discard(callback_id)
        self._declined.pop(callback_id, None)
        call = self._origins.pop(callback_id, None)
        fx.keep("callback", callback_id, call.call_id if call else "", None)

    def _keep(self, callback_id: str, fx: Effects) -> None:
        call = self._origins.get(callback_id)
        if call is not None:
            fx.keep("callback", callback_id, call.call_id, self.callbacks.get(callback_id))

    def _due(self, callback_id: str, dial_id: str, now: float, fx: Effects) -> None:
        if dial_id == "ask-again":
            self._declined.pop(callback_id, None)
        elif dial_id and self.dialling.get(dial_id) == callback_id:
            del self.dialling[dial_id]
            self._finish(callback_id, dial_id, "no-answer", now, fx)
        self.dial(now, fx)

    def _journal(self, callback_id: str, stage: str, now: float, fx: Effects, **data: str) -> None:
        call = self._origins.get(callback_id)
        if call is not None:
            fx.journal(
                call, EventKind.CALLBACK, now,
                data=(("callback_id", callback_id), ("stage", stage), *sorted(data.items())),
            )  # fmt: skip
