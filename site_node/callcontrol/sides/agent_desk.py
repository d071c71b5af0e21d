"""What an agent's desk (or phone) asks: log in and out, ready and not ready, answer, hold,
hang up, end the wrap-up with its code and note, answer a callback shown to it (preview), and
work the groups' voicemail."""

from __future__ import annotations

from collections.abc import Callable

from site_node.callcontrol.domain import Call, CallState, Effect, Journal, RecordedEvent
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.parts import Parts
from site_node.callcontrol.sides.deadlines import Deadlines
from site_node.callcontrol.voicemail import Message
from vcc.call_events import EventKind
from vcc.errors import FailedPrecondition


def agent_call(parts: Parts, code: str, call_id: str) -> Call:
    """The call `call_id` of logged-in agent `code` (FailedPrecondition if it is not theirs)."""
    parts.desk.logged_in(code)
    call = parts.book.call(call_id)
    if call.agent_code != code:
        raise FailedPrecondition("not-your-call", f"call {call_id} is not with agent {code}")
    return call


class AgentDesk:
    def __init__(self, parts: Parts, fx: Callable[[], Effects], deadlines: Deadlines) -> None:
        self._p = parts
        self._fx = fx
        self._deadlines = deadlines

    def login(self, now: float, code: str) -> list[Effect]:
        """Credentials are checked by the adapter (slow hash) before this is called."""
        fx = self._fx()
        self._p.desk.login(now, code, fx)
        return fx.items

    def logout(self, now: float, code: str) -> list[Effect]:
        fx = self._fx()
        self._p.desk.logout(now, code, fx)
        return fx.items

    def set_ready(self, now: float, code: str, ready: bool, reason: str = "") -> list[Effect]:
        fx = self._fx()
        self._p.desk.set_ready(now, code, ready, reason, fx)
        self._p.dialler.dial(now, fx)  # first: a caller on virtual hold whose turn came
        self._p.queues.dispatch(now, fx)
        self._p.dialler.dial(now, fx)
        return fx.items

    def desktop_attached(self, code: str) -> None:
        self._p.desk.desktop_attached(code)

    def desktop_detached(self, now: float, code: str) -> None:
        self._p.desk.desktop_detached(now, code)

    def phone_unreachable(self, now: float, code: str, call_id: str) -> list[Effect]:
        """The agent's phone refused the ring or never answered it: as a ring that timed out."""
        fx = self._fx()
        consulted = self._p.consults.consulted_here(code, call_id)
        if consulted is not None:
            # A consulted colleague's phone: the consultation fails as on its ring timeout.
            self._p.consults.consulted_unreachable(consulted, now, fx)
            return fx.items
        call = self._p.book.get(call_id)
        if call is not None and call.state == CallState.RINGING and call.agent_code == code:
            self._deadlines.ring_due(call_id, code, now, fx)
            self._p.queues.dispatch(now, fx)
        return fx.items

    def answer(self, now: float, code: str, call_id: str) -> list[Effect]:
        p = self._p
        fx = self._fx()
        consulted = p.consults.consulted_here(code, call_id)
        if consulted is not None:
            p.consults.consulted_answers(consulted, now, fx)
            return fx.items
        call = agent_call(p, code, call_id)
        if call.guest_of:
            return p.guests.answer(call)
        p.connected.answer(call, now, fx)
        return fx.items

    def hold(self, now: float, code: str, call_id: str, hold: bool) -> list[Effect]:
        p = self._p
        consulting = p.book.get(call_id)
        if consulting is not None and consulting.consult is not None:
            raise FailedPrecondition(
                "consult-in-progress", "the caller's hold is managed by the consultation"
            )
        call = agent_call(p, code, call_id)
        fx = self._fx()
        p.connected.hold(call, hold, now, fx)
        if call.guest_of:
            fx.add(p.guests.held(call, hold))
        return fx.items

    def agent_hang_up(self, now: float, code: str, call_id: str) -> list[Effect]:
        p = self._p
        fx = self._fx()
        consulted = p.consults.consulted_here(code, call_id)
        if consulted is not None:
            p.consults.consulted_leaves(consulted, now, fx)
            return fx.items
        consulting = p.book.get(call_id)
        if consulting is not None and consulting.consult is not None and consulting.agent_code == code:
            if consulting.consult.state != "talking":
                raise FailedPrecondition(
                    "consult-in-progress", "the consulted agent is ringing: cancel the consultation first"
                )
            # Hanging up while the consulted agent talks (or in a conference) hands the caller over.
            p.consults.hand_over(consulting, now, fx)
            p.queues.dispatch(now, fx)
            return fx.items
        call = agent_call(p, code, call_id)
        if call.remote is not None:
            raise FailedPrecondition(
                "call-elsewhere", f"call {call_id} is served at {call.remote.target_site_id}"
            )
        if call.guest_of:
            p.guests.agent_hang_up(call, now, fx)
        else:
            p.connected.agent_hang_up(call, now, fx)
        p.queues.dispatch(now, fx)
        return fx.items

    def end_wrap_up(
        self, now: float, code: str, ready: bool, reason: str = "", wrap_code: str = "", note: str = ""
    ) -> list[Effect]:
        fx = self._fx()
        call_id = self._p.desk.agent(code).call_id
        self._p.desk.end_wrap_up(now, code, ready, reason, fx)
        if wrap_code or note:
            self._journal_wrap_up(now, code, call_id, wrap_code, note, fx)
        self._p.dialler.dial(now, fx)  # first: a caller on virtual hold whose turn came
        self._p.queues.dispatch(now, fx)
        self._p.dialler.dial(now, fx)
        return fx.items

    def _journal_wrap_up(
        self, now: float, code: str, call_id: str, wrap_code: str, note: str, fx: Effects
    ) -> None:
        """The call's record at central keeps what the agent recorded (F19), live or ended."""
        data = (("code", wrap_code), ("note", note))
        call = self._p.book.live.get(call_id)
        if call is not None:
            fx.journal(call, EventKind.WRAPPED_UP, now, agent_code=code, data=data)
            return
        seq = self._p.book.next_seq_after_end(call_id)
        if seq is not None and fx.journaling:
            event = RecordedEvent(
                call_id, fx.site_id, seq, EventKind.WRAPPED_UP, now, agent_code=code, data=data
            )
            fx.add(Journal(event))

    # Voicemail (SPEC F27): an agent works its groups' messages --------------------------------

    def answer_callback_preview(self, now: float, code: str, callback_id: str, accept: bool) -> list[Effect]:
        """The agent shown a callback (preview) accepts it, dialled for them, or declines it."""
        fx = self._fx()
        self._p.dialler.answer_preview(code, callback_id, accept, now, fx)
        self._p.queues.dispatch(now, fx)
        return fx.items

    def voicemail(self, code: str, skill_group: str) -> list[Message]:
        return self._p.flows.voicemail.listed(code, skill_group)

    def work_voicemail(
        self, now: float, code: str, message_id: str, step: str, note: str = ""
    ) -> list[Effect]:
        """`step`: take, play or done; each goes in the caller's call record."""
        fx = self._fx()
        desk = self._p.flows.voicemail
        if step == "take":
            desk.take(code, message_id, now, fx)
        elif step == "play":
            desk.play(code, message_id, now, fx)
        else:
            desk.done(code, message_id, note, now, fx)
        return fx.items
