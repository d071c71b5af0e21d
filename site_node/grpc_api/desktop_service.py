"""gRPC adapter of the CTI API for agent desktops and robot agents."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

import grpc

from site_node import person_revocation
from site_node.audit import SiteAudit
from site_node.callcontrol import TransferTarget
from site_node.callcontrol.domain import Effect, ToAgent
from site_node.grpc_api import auth
from site_node.grpc_api.credentials import CredentialCheck
from site_node.grpc_api.idempotency import IdempotencyCache
from site_node.runtime import DesktopLine, SiteRuntime
from vcc import logs, person_assertion
from vcc.authz import peer_description
from vcc.errors import InvalidArgument, Unauthenticated
from vcc.login_guard import LoginPolicy
from vcc.person_assertion import PersonSigner
from vcc.rpc import maps_errors, maps_stream_errors
from vcc.v1 import common_pb2, cti_pb2, cti_pb2_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R")
# now, agent code, call id -> effects
_CallOp = Callable[[float, str, str], list[Effect]]


class _CallRequest(Protocol):
    idempotency_key: str
    session_token: str
    call_id: str


MAX_CALL_ID = 64
# One answer for an unknown code and a wrong password: neither tells which codes exist.
# A session lasts a working day at most; the agent logs in again after it.
SESSION_TTL_S = 12 * 3600.0


@dataclass(frozen=True)
class _Session:
    code: str
    expires_at: float


class AgentDesktop(cti_pb2_grpc.AgentDesktopServiceServicer):
    def __init__(
        self,
        runtime: SiteRuntime,
        audit: SiteAudit | None = None,
        *,
        policy: LoginPolicy | None = None,
        session_ttl_s: float = SESSION_TTL_S,
        signer: PersonSigner | None = None,
    ) -> None:
        self.rt = runtime
        self._signer = signer
        self.sb = runtime.sb
        self._hashes = {a.code: a.password_hash for a in runtime.sb.site.agents}
        self._sessions: dict[str, _Session] = {}
        self._token_of: dict[str, str] = {}
        self._once = IdempotencyCache()
        self._audit = audit
        self.credentials = CredentialCheck(self._hashes, runtime.clock, self._logged_in, audit, policy)
        self.guard = self.credentials.guard
        self._session_ttl_s = session_ttl_s
        # Keys the idempotency cache by password without keeping a guessable digest of it.
        self._pepper = secrets.token_bytes(32)
        # Agents whose session logged in with auto-answer: the site answers their offers.
        self._auto_answer: set[str] = set()
        runtime.agent_listeners.append(self._answer_at_once)

    # Sessions -------------------------------------------------------------------------------

    def agent_of(self, token: str) -> str:
        """The agent of a live session (other desk services share the sessions)."""
        return self._agent_of(token)

    def _agent_of(self, token: str) -> str:
        session = self._sessions.get(token)
        if session is None or session.expires_at <= self.rt.clock():
            if session is not None:
                self._end_session(session.code)
            raise Unauthenticated("bad-session", "session_token: unknown or expired; log in again")
        return session.code

    def _assert(self, token: str) -> str:
        """The site's signed word that this session's agent acts (for central); '' without TLS."""
        session = self._sessions.get(token)
        if self._signer is None or session is None:
            return ""
        # Never past the session: a wall-clock bound, as central checks it.
        left = session.expires_at - self.rt.clock()
        return self._signer.sign(session.code, token, ttl_s=min(person_assertion.TTL_S, max(left, 0.0)))

    def _end_session(self, code: str) -> None:
        self._sessions.pop(self._token_of.pop(code, ""), None)
        self._auto_answer.discard(code)

    def _answer_at_once(self, u: ToAgent) -> None:
        """Auto-answer: an offer to such an agent is answered as the desktop's Answer would, right
        after the step that offered it (so that a batched caller and desktop get the ring and the
        answer in one message). Refused quietly when the offer is gone meanwhile."""
        if u.kind == "offered" and u.agent_code in self._auto_answer:
            code, call_id = u.agent_code, u.call_id
            self.rt.after_step(lambda now: self.sb.answer(now, code, call_id))

    def _record(self, actor: str, action: str, **fields: Any) -> None:
        self.credentials.record(actor, action, **fields)

    async def _mutate(self, method: str, token: str, key: str, op: Callable[[str], Awaitable[Any]]) -> Any:
        code = self._agent_of(token)
        return await self._once.once(f"{method}:{code}", key, lambda: op(code))

    def _do(self, op: Callable[[float], list[Effect]]) -> None:
        self.rt.do(op)

    async def _on_call(self, scope: str, request: _CallRequest, op: _CallOp, reply: R) -> R:
        """An agent's action on one of its calls, applied once per idempotency key."""
        call_id = _call_id(request.call_id)

        async def act(code: str) -> R:
            self._do(lambda now: op(now, code, call_id))
            return reply

        return await self._mutate(scope, request.session_token, request.idempotency_key, act)  # type: ignore[no-any-return]

    # RPCs -----------------------------------------------------------------------------------

    @maps_errors
    async def Login(self, request: cti_pb2.LoginRequest, context: Ctx) -> cti_pb2.LoginResponse:
        auth.check_format(request.agent_code, request.password)
        code = request.agent_code
        # Throttled per source host (a port changes with every connection).
        host = context.peer().rsplit(":", 1)[0]
        source = peer_description(context)
        self.credentials.admit(code, host, source)

        async def login() -> cti_pb2.LoginResponse:
            await self.credentials.verify(code, request.password, host, source)
            now = self.rt.clock()
            self._do(lambda now: self.sb.login(now, code))
            token = auth.new_session_token()
            # A session left from an earlier login (desktop lost, site logged it out) ends here.
            self._end_session(code)
            self._sessions[token] = _Session(code, now + self._session_ttl_s)
            self._token_of[code] = token
            if request.auto_answer:
                self._auto_answer.add(code)
            self._record(f"agent:{code}", "login", target=code, source=source)
            return cti_pb2.LoginResponse(
                session_token=token, agent=self.rt.snapshot(code), person_assertion=self._assert(token)
            )

        # A retry with the same key gets the first reply only with the same password: the
        # password is part of the key's scope (peppered, so the cache holds no usable digest).
        tag = hmac.new(self._pepper, request.password.encode(), hashlib.sha256).hexdigest()[:32]
        return await self._once.once(f"login:{code}:{tag}", request.idempotency_key, login)

    def _logged_in(self, code: str) -> bool:
        return self.rt.snapshot(code).state != common_pb2.AGENT_STATE_LOGGED_OUT

    @maps_errors
    async def Logout(self, request: cti_pb2.LogoutRequest, context: Ctx) -> cti_pb2.LogoutResponse:
        async def logout(code: str) -> cti_pb2.LogoutResponse:
            self._do(lambda now: self.sb.logout(now, code))
            # Revoked: the token is worth nothing from now on.
            self._end_session(code)
            self._record(f"agent:{code}", "logout", target=code, source=peer_description(context))
            if self._audit is not None:
                # Central refuses the session's person assertions once it has the revocation.
                await self._audit.delivered(person_revocation.DELIVERY_WAIT_S)
            return cti_pb2.LogoutResponse()

        return await self._mutate("logout", request.session_token, request.idempotency_key, logout)  # type: ignore[no-any-return]

    @maps_errors
    async def SetState(self, request: cti_pb2.SetStateRequest, context: Ctx) -> cti_pb2.SetStateResponse:
        ready = _ready_or_not(request.state, "state")

        async def set_state(code: str) -> cti_pb2.SetStateResponse:
            self._do(lambda now: self.sb.set_ready(now, code, ready, request.reason_code))
            return cti_pb2.SetStateResponse(agent=self.rt.snapshot(code))

        return await self._mutate("state", request.session_token, request.idempotency_key, set_state)  # type: ignore[no-any-return]

    @maps_errors
    async def EndWrapUp(self, request: cti_pb2.EndWrapUpRequest, context: Ctx) -> cti_pb2.EndWrapUpResponse:
        ready = _ready_or_not(request.next_state, "next_state")

        async def end(code: str) -> cti_pb2.EndWrapUpResponse:
            self._do(lambda now: self.sb.end_wrap_up(now, code, ready, request.reason_code))
            return cti_pb2.EndWrapUpResponse(agent=self.rt.snapshot(code))

        return await self._mutate("wrapup", request.session_token, request.idempotency_key, end)  # type: ignore[no-any-return]

    @maps_errors
    async def AnswerCallbackPreview(
        self, request: cti_pb2.AnswerCallbackPreviewRequest, context: Ctx
    ) -> cti_pb2.AnswerCallbackPreviewResponse:
        callback_id = request.callback_id
        if not callback_id or len(callback_id) > 80:
            raise InvalidArgument("bad-callback-id", "callback_id: required, at most 80 characters")

        async def answer(code: str) -> cti_pb2.AnswerCallbackPreviewResponse:
            self._do(lambda now: self.sb.answer_callback_preview(now, code, callback_id, request.accept))
            return cti_pb2.AnswerCallbackPreviewResponse()

        return await self._mutate(  # type: ignore[no-any-return]
            "callback-preview", request.session_token, request.idempotency_key, answer
        )

    @maps_errors
    async def Answer(self, request: cti_pb2.AnswerRequest, context: Ctx) -> cti_pb2.AnswerResponse:
        return await self._on_call("answer", request, self.sb.answer, cti_pb2.AnswerResponse())

    @maps_errors
    async def HangUp(self, request: cti_pb2.HangUpRequest, context: Ctx) -> cti_pb2.HangUpResponse:
        return await self._on_call("hangup", request, self.sb.agent_hang_up, cti_pb2.HangUpResponse())

    @maps_errors
    async def Hold(self, request: cti_pb2.HoldRequest, context: Ctx) -> cti_pb2.HoldResponse:
        return await self._on_call("hold", request, partial(self.sb.hold, hold=True), cti_pb2.HoldResponse())

    @maps_errors
    async def Retrieve(self, request: cti_pb2.RetrieveRequest, context: Ctx) -> cti_pb2.RetrieveResponse:
        return await self._on_call(
            "retrieve", request, partial(self.sb.hold, hold=False), cti_pb2.RetrieveResponse()
        )

    @maps_errors
    async def Transfer(self, request: cti_pb2.TransferRequest, context: Ctx) -> cti_pb2.TransferResponse:
        call_id = _call_id(request.call_id)
        if request.kind not in (cti_pb2.TRANSFER_KIND_BLIND, cti_pb2.TRANSFER_KIND_CONSULT):
            raise InvalidArgument("bad-transfer-kind", "kind: TRANSFER_KIND_BLIND or TRANSFER_KIND_CONSULT")
        t = request.target
        target = TransferTarget(t.agent_code, t.skill_group, t.site_id, t.ivr, t.flow_id)
        blind = request.kind == cti_pb2.TRANSFER_KIND_BLIND
        extra = dict(request.attached_data)

        async def transfer(code: str) -> cti_pb2.TransferResponse:
            self._do(lambda now: self.sb.transfer(now, code, call_id, target, blind=blind, attached=extra))
            return cti_pb2.TransferResponse()

        return await self._mutate("transfer", request.session_token, request.idempotency_key, transfer)  # type: ignore[no-any-return]

    @maps_errors
    async def CompleteTransfer(
        self, request: cti_pb2.CompleteTransferRequest, context: Ctx
    ) -> cti_pb2.CompleteTransferResponse:
        return await self._on_call(
            "complete", request, self.sb.complete_transfer, cti_pb2.CompleteTransferResponse()
        )

    @maps_errors
    async def Conference(
        self, request: cti_pb2.ConferenceRequest, context: Ctx
    ) -> cti_pb2.ConferenceResponse:
        return await self._on_call("conference", request, self.sb.conference, cti_pb2.ConferenceResponse())

    @maps_errors
    async def CancelTransfer(
        self, request: cti_pb2.CancelTransferRequest, context: Ctx
    ) -> cti_pb2.CancelTransferResponse:
        return await self._on_call(
            "cancel", request, self.sb.cancel_transfer, cti_pb2.CancelTransferResponse()
        )

    @maps_errors
    async def GetAgent(self, request: cti_pb2.GetAgentRequest, context: Ctx) -> cti_pb2.GetAgentResponse:
        code = self._agent_of(request.session_token)
        return cti_pb2.GetAgentResponse(
            agent=self.rt.snapshot(code), person_assertion=self._assert(request.session_token)
        )

    @maps_stream_errors
    async def StreamEvents(
        self, request: cti_pb2.StreamEventsRequest, context: Ctx
    ) -> AsyncIterator[cti_pb2.StreamEventsResponse]:
        code = self._agent_of(request.session_token)
        # This RPC's task is this agent's desktop: its log lines name the agent.
        logs.bind_context(agent_code=code)
        line = self.rt.attach_desktop(code)
        # Taken from the line while batching, not sent with that batch (the stream's end).
        cut = False
        try:
            while not cut and (msg := await line.queue.get()) is not None:
                if request.batched and not line.queue.empty():
                    msg, cut = _batch(msg, line)
                yield msg
                if any(_state_of(m) == common_pb2.AGENT_STATE_LOGGED_OUT for m in (msg, *msg.then)):
                    return
        finally:
            self.rt.detach_desktop(code, line)


def _batch(
    first: cti_pb2.StreamEventsResponse, line: DesktopLine
) -> tuple[cti_pb2.StreamEventsResponse, bool]:
    """`first` and the events queued behind it now, in one message (StreamEventsRequest.batched);
    True when the line's end (None: the desktop was cut off) was met behind them."""
    out = cti_pb2.StreamEventsResponse()
    out.CopyFrom(first)
    while not line.queue.empty():
        item = line.queue.get_nowait()
        if item is None:
            return out, True
        out.then.append(item)
    return out, False


def _state_of(msg: cti_pb2.StreamEventsResponse) -> common_pb2.AgentState.ValueType | None:
    """The agent's state an event tells: its own state_changed, or the state riding in a call event."""
    if msg.HasField("agent"):
        return msg.agent.state
    if msg.WhichOneof("event") == "state_changed":
        return msg.state_changed.agent.state
    return None


def _ready_or_not(state: common_pb2.AgentState.ValueType, key: str) -> bool:
    if state == common_pb2.AGENT_STATE_READY:
        return True
    if state == common_pb2.AGENT_STATE_NOT_READY:
        return False
    raise InvalidArgument("bad-target-state", f"{key}: AGENT_STATE_READY or AGENT_STATE_NOT_READY")


def _call_id(call_id: str) -> str:
    if not call_id or len(call_id) > MAX_CALL_ID:
        raise InvalidArgument("bad-call-id", "call_id: required, at most 64 characters")
    return call_id
