"""What other cities say on a leg. As the origin (our caller, or our agent's consultation, served
there): reserved, answer asked, held, refused, returned, lost, hung up, a transfer asked. As the
target (their caller served here): the offer, the answer confirmed, the caller gone."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from site_node.callcontrol.directory import TransferTarget
from site_node.callcontrol.domain import Effect
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.guests import RemoteOfferIn
from site_node.callcontrol.parts import Parts

# How a leg serving our caller ends on each report: (now, offer id, reason, effects).
LegOver = Callable[[float, str, str, Effects], None]


class PeerSide:
    def __init__(self, parts: Parts, fx: Callable[[], Effects]) -> None:
        self._p = parts
        self._fx = fx

    # The origin: what the other city reports on a leg of ours ----------------------------------

    def remote_reserved(self, now: float, offer_id: str, agent_code: str) -> list[Effect]:
        consulting = self._p.consults.by_offer(offer_id)
        if consulting is not None:
            return self._p.consults.remote_reserved(consulting, agent_code, now)
        return self._p.legs.reserved(now, offer_id, agent_code)

    def remote_answer_asked(self, now: float, offer_id: str) -> list[Effect]:
        consulting = self._p.consults.by_offer(offer_id)
        if consulting is not None:
            return self._p.consults.remote_answered(consulting, now)
        return self._p.legs.answer_asked(now, offer_id)

    def remote_held(self, now: float, offer_id: str, held: bool) -> list[Effect]:
        if self._p.consults.by_offer(offer_id) is not None:
            return []  # the consulted agent's hold does not change the caller's
        return self._p.legs.held(now, offer_id, held)

    def remote_refused(self, now: float, offer_id: str, reason: str) -> list[Effect]:
        return self._leg_over(now, offer_id, reason, "consult-failed", self._p.legs.refused)

    def remote_returned(self, now: float, offer_id: str, reason: str) -> list[Effect]:
        return self._leg_over(now, offer_id, reason, "consult-failed", self._p.legs.returned)

    def remote_lost(self, now: float, offer_id: str, reason: str = "target-lost") -> list[Effect]:
        """The leg's stream broke (the target died or the link failed): nobody is dropped."""
        return self._leg_over(now, offer_id, reason, "consult-failed", self._p.legs.lost)

    def remote_hung_up(self, now: float, offer_id: str) -> list[Effect]:
        legs = self._p.legs
        return self._leg_over(
            now, offer_id, "consulted-agent-left", "left", lambda n, o, _r, fx: legs.hung_up(n, o, fx)
        )

    def _leg_over(
        self, now: float, offer_id: str, reason: str, consult_stage: str, serving_over: LegOver
    ) -> list[Effect]:
        fx = self._fx()
        consulting = self._p.consults.by_offer(offer_id)
        if consulting is not None:
            self._p.consults.remote_over(consulting, now, reason, consult_stage, fx)
        elif self._p.legs.serving(offer_id) is not None:
            serving_over(now, offer_id, reason, fx)
            self._p.queues.dispatch(now, fx)
        return fx.items

    def remote_transfer_asked(
        self,
        now: float,
        offer_id: str,
        from_agent_code: str,
        target: TransferTarget,
        attached: Mapping[str, str],
    ) -> list[Effect]:
        """The agent serving our call in another city transferred it (blind): carry it out here."""
        if self._p.legs.serving(offer_id) is None:
            return []
        fx = self._fx()
        self._p.transfers.carry_out(now, offer_id, from_agent_code, target, attached, fx)
        self._p.queues.dispatch(now, fx)
        return fx.items

    # The target: serving another city's caller -------------------------------------------------

    def serve_remote(self, now: float, offer: RemoteOfferIn) -> tuple[str | None, str, list[Effect]]:
        """Reserve an agent for an offered call: (agent code, "", effects) or (None, reason, [])."""
        fx = self._fx()
        code, reason = self._p.guests.serve(now, offer, fx)
        return code, reason, fx.items

    def remote_answer_confirmed(self, now: float, offer_id: str) -> list[Effect]:
        fx = self._fx()
        self._p.guests.answer_confirmed(now, offer_id, fx)
        return fx.items

    def remote_caller_gone(self, now: float, offer_id: str, reason: str) -> list[Effect]:
        """The origin ended the leg (caller hung up, offer withdrawn, origin lost)."""
        if self._p.guests.call_of(offer_id) is None:
            return []
        fx = self._fx()
        self._p.guests.caller_gone(now, offer_id, reason, fx)
        self._p.queues.dispatch(now, fx)
        return fx.items
