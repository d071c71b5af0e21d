"""Changes made away from the call: an administrator adds an agent or changes its skills (SPEC
F25: the adapter checks the administrator and keeps the change), and a desk saves a caller's
customer record at central (F21), and at start the callbacks and voicemail kept open before a
restart are put back (restored.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from site_node.callcontrol.callbacks import Callback
from site_node.callcontrol.domain import CustomerInfo, Effect
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.parts import Parts
from site_node.callcontrol.restored import restore_open
from site_node.callcontrol.voicemail import Message
from vcc.errors import AlreadyExists


class Administration:
    def __init__(self, site_id: str, parts: Parts, fx: Callable[[], Effects]) -> None:
        self._site_id = site_id
        self._p = parts
        self._fx = fx

    def add_agent(self, now: float, code: str, skills: Mapping[str, int]) -> list[Effect]:
        """A new agent of this site (role agent), logged out, reachable by transfer at once."""
        p = self._p
        if code in p.directory.agent_sites:
            raise AlreadyExists("agent-exists", f"agent {code} already exists in the province")
        p.desk.add(code, skills)
        p.supervision.roles[code] = "agent"
        p.supervision.leads[code] = frozenset()
        p.directory.agent_sites[code] = self._site_id
        return []

    def set_agent_skills(self, now: float, code: str, skills: Mapping[str, int]) -> list[Effect]:
        """New skills and levels; a ready agent may take a waiting call of a new group at once."""
        fx = self._fx()
        self._p.desk.set_skills(code, skills)
        self._p.queues.dispatch(now, fx)
        return fx.items

    def restore_open(
        self, now: float, items: Sequence[Callback | Message], last_seq: Mapping[str, int]
    ) -> tuple[list[str], list[Effect]]:
        """The callbacks and messages the site kept open before it stopped; (ids left out, effects)."""
        fx = self._fx()
        p = self._p
        left_out = restore_open(self._site_id, p.dialler, p.flows.voicemail, items, last_seq, now, fx)
        return left_out, fx.items

    def customer_edited(self, now: float, customer: CustomerInfo) -> list[Effect]:
        """An agent saved the caller's record at central (F21): the live calls of that customer
        carry the new one from now on (a consultation or transfer offers it as saved)."""
        for call in self._p.book.live.values():
            if call.customer is not None and call.customer.customer_id == customer.customer_id:
                call.customer = customer
        return []
