"""The screen pop (SPEC F5, F21): the caller is looked up at central by number as the call
arrives; the call may ring an agent only with its record, or once the look-up has had its time."""

from __future__ import annotations

from site_node.callcontrol.calls import CallBook
from site_node.callcontrol.domain import Call, CustomerInfo, FetchCustomer
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.queues import Queues
from site_node.callcontrol.timers import Timers

# Longest a call waits for its customer record before it may ring an agent without it.
CUSTOMER_WAIT_S = 1.0


class ScreenPop:
    def __init__(self, calls: CallBook, queues: Queues, timers: Timers) -> None:
        self._calls = calls
        self._queues = queues
        self._timers = timers
        timers.on("customer", lambda call_id, _token, now, fx: self.resolved(call_id, None, now, fx))

    def fetch(self, call: Call, now: float, fx: Effects) -> None:
        call.customer_pending = True
        fx.add(FetchCustomer(call.call_id, call.ani))
        self._timers.arm(now + CUSTOMER_WAIT_S, "customer", call.call_id)

    def resolved(self, call_id: str, customer: CustomerInfo | None, now: float, fx: Effects) -> None:
        """The look-up answered (None: no record, central unreachable, or it took too long)."""
        call = self._calls.get(call_id)
        if call is None or not call.customer_pending:
            return
        call.customer_pending = False
        call.customer = customer
        self._queues.unpark(call, now, fx)
