"""The agent desktop's API: the agent's view, state, wrap-up, calls (answer to transfer), the
directory and messages (`/api/me`, `/api/state`, `/api/wrap-up`, `/api/calls/...`,
`/api/directory`, `/api/messages`). The acting agent is always the session's."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from routing.agents import AgentState
from site_node.callcontrol import TransferTarget
from site_node.callcontrol.domain import Effect
from site_node.callcontrol.limits import check_digits
from site_node.web.requests import choice, text
from site_node.web.sessions import Session
from vcc.errors import FailedPrecondition, InvalidArgument, NotFound

if TYPE_CHECKING:
    from site_node.web.server import DeskServer

log = logging.getLogger(__name__)
CALL_ACTIONS = (
    "answer",
    "hangup",
    "hold",
    "retrieve",
    "complete",
    "conference",
    "cancel",
    "transfer",
    "digits",
)


class DeskApi:
    def __init__(self, desk: DeskServer) -> None:
        self.d = desk

    def desk_view(self, s: Session) -> dict[str, Any]:
        now = self.d._clock()
        code = s.code
        agent = self.d.sb.agents[code]
        memory = self.d.memory[code]
        offer = memory.offer
        if agent.state != AgentState.RINGING or offer is None or offer.get("call_id") != agent.call_id:
            offer = None
        return {
            "now": now,
            "view": "desk",
            "site_id": self.d.sb.site_id,
            "site_name": self.d.sb.site.name,
            "agent": self.d.views.agent(agent),
            "offer": offer,
            "callback_preview": self.d.sb.dialler.shown_to(code),
            "call": self.d.views.current_call(code, now),
            "last_offer": memory.offer,
            "forced": memory.forced,
            "supervision": memory.supervision,
            "transfer": memory.transfer,
            "reasons": self.d.views.reasons,
            "wrap_up_codes": [
                {"code": r.code, "label": r.label or r.code} for r in self.d.province.wrap_up_codes
            ],
            "queues": self.d.views.queues(sorted(self.d.sb.skills[code]), now),
            "messages": self.d.views.messages(self.d.messages.inbox(code)),
            "calls_today": list(memory.calls_today),
            # This site's agents, then other cities' (a message to them goes through their site).
            "colleagues": [
                {"code": c, "name": self.d.views.names.get(c, ""), "site_id": self.d.sb.site_id}
                for c in self.d.sb.agents
                if c != code
            ]
            + [
                {"code": a.code, "name": a.name, "site_id": s.id}
                for s in self.d.province.sites
                if s.id != self.d.sb.site_id
                for a in s.agents
            ],
        }

    async def _me(self, request: Request) -> Response:
        return JSONResponse(self.desk_view(self.d._session(request)))

    async def _state(self, request: Request) -> Response:
        async def set_state(s: Session, body: dict[str, Any]) -> dict[str, Any]:
            ready = choice(body, "state", ("ready", "not_ready")) == "ready"
            reason = "" if ready else self.d._reason(body)
            self.d._do(request, lambda now: self.d.sb.set_ready(now, s.code, ready, reason))
            return {"agent": self.d.views.agent(self.d.sb.agents[s.code])}

        return await self.d._mutate(request, "state", set_state)

    async def _wrap_up(self, request: Request) -> Response:
        async def end(s: Session, body: dict[str, Any]) -> dict[str, Any]:
            ready = choice(body, "next", ("ready", "not_ready")) == "ready"
            reason = "" if ready else self.d._reason(body)
            wrap_code = text(body, "code", 32, required=False)
            if wrap_code and wrap_code not in {r.code for r in self.d.province.wrap_up_codes}:
                raise InvalidArgument(
                    "bad-wrap-up-code", f"code: not a wrap-up code of the province: {wrap_code!r}"
                )
            note = text(body, "note", 1000, required=False)
            call_id = self.d.sb.agents[s.code].call_id
            self.d._do(
                request, lambda now: self.d.sb.end_wrap_up(now, s.code, ready, reason, wrap_code, note)
            )
            for c in self.d.memory[s.code].calls_today:
                if c["call_id"] == call_id:
                    c.update(wrap_up_code=wrap_code, note=note)
                    break
            return {"agent": self.d.views.agent(self.d.sb.agents[s.code])}

        return await self.d._mutate(request, "wrapup", end)

    async def _callback_preview(self, request: Request) -> Response:
        """The agent accepts or declines the callback shown to them (preview, F20)."""
        callback_id = request.path_params["callback_id"]
        answer = request.path_params["answer"]
        if answer not in ("accept", "decline"):
            raise NotFound("unknown-action", "answer: accept or decline")
        if not callback_id or len(callback_id) > 80:
            raise InvalidArgument("bad-callback-id", "callback_id: required, at most 80 characters")

        async def act(s: Session, body: dict[str, Any]) -> dict[str, Any]:
            accept = answer == "accept"
            self.d._do(
                request, lambda now: self.d.sb.answer_callback_preview(now, s.code, callback_id, accept)
            )
            return {"agent": self.d.views.agent(self.d.sb.agents[s.code])}

        return await self.d._mutate(request, "callback-preview", act)

    async def _call_action(self, request: Request) -> Response:
        call_id = request.path_params["call_id"]
        action = request.path_params["action"]
        if action not in CALL_ACTIONS:
            raise NotFound("unknown-action", f"action: one of {', '.join(CALL_ACTIONS)}")
        if not call_id or len(call_id) > 64:
            raise InvalidArgument("bad-call-id", "call_id: required, at most 64 characters")
        sb = self.d.sb

        async def act(s: Session, body: dict[str, Any]) -> dict[str, Any]:
            code = s.code
            ops: dict[str, Callable[[float], list[Effect]]] = {
                "answer": lambda now: sb.answer(now, code, call_id),
                "hangup": lambda now: sb.agent_hang_up(now, code, call_id),
                "hold": lambda now: sb.hold(now, code, call_id, True),
                "retrieve": lambda now: sb.hold(now, code, call_id, False),
                "complete": lambda now: sb.complete_transfer(now, code, call_id),
                "conference": lambda now: sb.conference(now, code, call_id),
                "cancel": lambda now: sb.cancel_transfer(now, code, call_id),
            }
            if action == "transfer":
                ops["transfer"] = self._transfer_op(code, call_id, body)
            if action == "digits":
                return self._digits(code, call_id, body)
            self.d._do(request, ops[action])
            return {"agent": self.d.views.agent(sb.agents[code])}

        return await self.d._mutate(request, f"call-{action}", act)

    def _transfer_op(self, code: str, call_id: str, body: dict[str, Any]) -> Callable[[float], list[Effect]]:
        kind = choice(body, "kind", ("blind", "consult"))
        raw = body.get("target")
        if not isinstance(raw, dict):
            raise InvalidArgument(
                "bad-transfer-target", "target: an object with agent_code, skill_group or ivr"
            )
        ivr = raw.get("ivr", False)
        if not isinstance(ivr, bool):
            raise InvalidArgument("bad-transfer-target", "target.ivr: true or false")
        target = TransferTarget(
            text(raw, "agent_code", 8, required=False, key="target.agent_code"),
            text(raw, "skill_group", 32, required=False, key="target.skill_group"),
            text(raw, "site_id", 32, required=False, key="target.site_id"),
            ivr,
        )
        note = text(body, "note", 500, required=False)
        attached = {"agent_note": note, "agent_note_by": code} if note else {}
        return lambda now: self.d.sb.transfer(
            now, code, call_id, target, blind=kind == "blind", attached=attached
        )

    def _digits(self, code: str, call_id: str, body: dict[str, Any]) -> dict[str, Any]:
        digits = text(body, "digits", 32)
        check_digits(digits)
        call = self.d.sb.calls.get(call_id)
        if call is None:
            raise NotFound("unknown-call", f"call_id: no live call {call_id!r} at site {self.d.sb.site_id}")
        if call.agent_code != code:
            raise FailedPrecondition("not-your-call", f"call {call_id} is not with agent {code}")
        # The tones go to the caller through the agent's phone and the media engine (the
        # telephony part); the call control has nothing to change.
        log.info("agent %s keypad %s on call %s", code, digits, call_id)
        return {"digits": digits, "call_id": call_id}

    async def _directory(self, request: Request) -> Response:
        self.d._session(request)
        return JSONResponse({"now": self.d._clock(), "sites": self.d.presence.directory()})

    async def _message(self, request: Request) -> Response:
        async def send(s: Session, body: dict[str, Any]) -> dict[str, Any]:
            to = text(body, "to", 8)
            if to not in self.d.sb.agents and to in self.d._agent_site:
                elsewhere = await self.d.send_elsewhere(s.code, to, text(body, "text", 2000, required=False))
                self.d._wake(s.code)
                return {"id": elsewhere.id}
            m = self.d.messages.post(self.d._clock(), s.code, [to], text(body, "text", 2000, required=False))
            await self.d.keep(m)
            self.d._wake(s.code, *m.to)
            return {"id": m.id}

        return await self.d._mutate(request, "message", send)
