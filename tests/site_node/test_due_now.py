"""A deadline already due when a step ends is carried out right after it, in the same turn of
the loop: a caller who must leave for another city at once (nobody of the group staffed here) is
routed before the loop runs anything else, not a turn later behind whatever else is ready.
The real runtime and outbox; a province that records what it is asked."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from site_node.callcontrol import Switchboard
from site_node.callcontrol.domain import AskRoute
from site_node.records.outbox import Outbox
from site_node.runtime import CallerLine, SiteRuntime
from tests.site_node.test_switchboard import SERVICE, sequential_ids, site_config
from vcc.config import RoutingConfig


class Province:
    """Records the questions to central; everything else is dropped."""

    def __init__(self) -> None:
        self.asked: list[AskRoute] = []

    def ask_route(self, ask: AskRoute) -> None:
        self.asked.append(ask)

    def __getattr__(self, _name: str) -> Any:
        return lambda *_a, **_k: None


async def _no_customer(_ani: str) -> None:
    return None


async def test_a_caller_who_must_leave_at_once_is_routed_in_the_same_turn(tmp_path: Path) -> None:
    outbox = await Outbox.open(tmp_path / "outbox.db")
    sb = Switchboard(
        site_config(), SERVICE, new_call_id=sequential_ids(), routing=RoutingConfig(mode="overflow")
    )
    rt = SiteRuntime(sb, outbox, _no_customer)
    province = Province()
    rt.province = province  # type: ignore[assignment]
    try:
        call_id = rt.offer(CallerLine(), idempotency_key="a", ani="13800000001", dnis=SERVICE)
        for _ in range(5):  # the screen pop's look-up (nobody found) comes back
            await asyncio.sleep(0)
        # Digit 2: general, where nobody is logged in: the call must leave at once.
        rt.do(lambda now: rt.sb.caller_digits(now, call_id, "2"))
        # No await since: the route question is already out.
        assert [a.call_id for a in province.asked] == [call_id]
        # And only once: the timer the deadline would have had finds nothing left to do.
        await asyncio.sleep(0.05)
        assert [a.call_id for a in province.asked] == [call_id]
    finally:
        await rt.close()
        await outbox.close()
