"""The dashboard's tickets view: open and overdue tickets by unit (and category), from the
service desk's report. `/tickets` is a page drawn on the server (it refreshes itself every
30 s); `/api/tickets` is the same as JSON."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from central.servicedesk.ticket_records import ReportRow


class TicketReport(Protocol):
    """What the view reads (central.servicedesk.ticket_queries.TicketQueries)."""

    async def report(self, now: float) -> list[ReportRow]: ...


def by_unit(rows: Sequence[ReportRow]) -> list[dict[str, Any]]:
    """One line per unit, most overdue first, with its categories."""
    units: dict[str, dict[str, Any]] = {}
    for r in rows:
        unit = units.setdefault(
            r.unit,
            {
                "unit": r.unit or "-",
                "open": 0,
                "overdue": 0,
                "closed_in_time": 0,
                "closed_late": 0,
                "categories": {},
            },
        )
        for key in ("open", "overdue", "closed_in_time", "closed_late"):
            unit[key] += getattr(r, key)
        unit["categories"][r.category.value] = {"open": r.open, "overdue": r.overdue}
    return sorted(units.values(), key=lambda u: (-u["overdue"], -u["open"], u["unit"]))


def ticket_routes(
    source: TicketReport, clock: Callable[[], float], templates: Jinja2Templates
) -> list[Route]:
    async def api(request: Request) -> Response:
        now = clock()
        return JSONResponse({"at": now, "units": by_unit(await source.report(now))})

    async def page(request: Request) -> Response:
        now = clock()
        lang = "en" if request.query_params.get("lang") == "en" else "zh"
        return templates.TemplateResponse(
            request, "tickets.html", {"lang": lang, "units": by_unit(await source.report(now)), "at": now}
        )

    return [Route("/tickets", page), Route("/api/tickets", api)]
