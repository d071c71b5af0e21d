"""The dashboard's tickets view (open and overdue by unit) over a real store and HTTP server."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from central.live_state import LiveState
from central.servicedesk import tickets as tk
from central.servicedesk.desk import ServiceDesk
from central.servicedesk.ticket_records import NewTicket
from central.stats.service import StatsService
from central.store import Store
from central.web.login import OperatorSessions
from central.web.server import Dashboard
from tests.central.desk_support import Clock
from tests.central.factories import T0
from tests.central.province import province
from tests.web.conftest import OPERATOR, OPERATOR_PASSWORD, operator_hash
from vcc.config import OperatorConfig

HOUR = 3600.0


async def test_tickets_view_open_and_overdue_by_unit(store: Store, engine: AsyncEngine) -> None:
    await store.sync_province(province())
    clock = Clock(T0)
    desk = ServiceDesk(store, ["gz", "sz"], senders={}, clock=clock)
    for unit, category in [
        ("city:sz", tk.Category.INQUIRY),
        ("city:sz", tk.Category.COMPLAINT),
        ("city:gz", tk.Category.COMPLAINT),
    ]:
        await desk.tickets.create(NewTicket(category, "问题", created_by="0101", unit=unit))
    clock.now = T0 + 30 * HOUR  # the inquiry (24 h) is overdue, the complaints (48 h) are not
    dashboard = Dashboard(
        LiveState([("gz", "Guangzhou"), ("sz", "Shenzhen")], membership=list, max_state_age_s=2.0),
        StatsService(engine),
        clock=clock,
        tickets=desk.ticket_queries,
        operators=OperatorSessions([OperatorConfig(login=OPERATOR, password_hash=operator_hash())]),
    )
    port = await dashboard.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            # The view is the dashboard's: an operator's session first.
            assert (await client.get("/api/tickets")).status_code == 401
            login = {"user": OPERATOR, "password": OPERATOR_PASSWORD}
            assert (await client.post("/api/login", json=login)).status_code == 200
            data = (await client.get("/api/tickets")).json()
            assert [(u["unit"], u["open"], u["overdue"]) for u in data["units"]] == [
                ("city:sz", 2, 1),
                ("city:gz", 1, 0),
            ]
            assert data["units"][0]["categories"] == {
                "complaint": {"open": 1, "overdue": 0},
                "inquiry": {"open": 1, "overdue": 1},
            }
            page = await client.get("/tickets")
            assert page.status_code == 200
            assert "各单位未结与超时" in page.text and 'data-unit="city:sz"' in page.text
            assert "open and overdue by unit" in (await client.get("/tickets?lang=en")).text
    finally:
        await dashboard.stop()
