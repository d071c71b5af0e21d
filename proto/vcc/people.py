"""Who may do what among people (SPEC F25, issue 11): the other half of `vcc.authz`. A certificate
says which process calls; where a person acts, the role of their own login decides, from this one
table (deny by default: an action not here, or a role not listed for it, is refused). Pure: the
call control reads it too. docs/SECURITY.md shows it (tests/security/test_authz_table.py checks).

Roles: a site's agents are `agent`, `group_leader` or `administrator` (config `sites[].agents[]`);
central's dashboard people are `operations` or `administrator` (config `operators`).
"""

from __future__ import annotations

from collections.abc import Mapping

from vcc.errors import PermissionDenied

# Central's operations dashboard: every page and its JSON API.
DASHBOARD = "dashboard.view"
# A site's console: the team live, force ready / not ready / logout, monitor, whisper, barge in,
# intercept, broadcast (on whom: the call control decides; a leader's own groups' agents).
SUPERVISE = "team.supervise"
# A site's agents administered: add, disable, enable, reset a password, change skills.
ADMINISTER = "agents.administer"

PERSON_ACTIONS: Mapping[str, frozenset[str]] = {
    DASHBOARD: frozenset({"operations", "administrator"}),
    SUPERVISE: frozenset({"group_leader", "administrator"}),
    ADMINISTER: frozenset({"administrator"}),
}


# Central's service desk when a person acts through a site or a desktop server (a `site` or
# `desktop` certificate): the method -> the roles of the person the site vouches for
# (vcc.person_assertion; the role from the province config, never from the message). A back-office
# tool (a `tool` certificate) acts as itself. A method of these services not here is refused to a
# person (deny by default: every method of PERSON_SERVICES a site or desktop calls is checked).
PERSON_SERVICES = frozenset(
    {"vcc.v1.CustomerService", "vcc.v1.TicketService", "vcc.v1.KnowledgeService", "vcc.v1.HistoryService"}
)
_EVERY_AGENT = frozenset({"agent", "group_leader", "administrator"})
_LEADERS = frozenset({"group_leader", "administrator"})
METHOD_PERSON_ROLES: Mapping[str, frozenset[str]] = {
    **{
        f"/vcc.v1.{method}": _EVERY_AGENT
        for method in (
            "CustomerService/CreateCustomer",
            "CustomerService/GetCustomer",
            "CustomerService/UpdateCustomer",
            "CustomerService/SearchCustomers",
            "TicketService/CreateTicket",
            "TicketService/GetTicket",
            "TicketService/StartTicket",
            "TicketService/ReplyTicket",
            "TicketService/CloseTicket",
            "TicketService/AddTicketNote",
            "TicketService/SearchTickets",
            "KnowledgeService/ProposeArticle",
            "KnowledgeService/GetArticle",
            "KnowledgeService/ListArticles",
            "KnowledgeService/SearchArticles",
            "HistoryService/GetHistory",
        )
    },
    # A leader's: sending a ticket to another unit, reopening a closed one, the report.
    "/vcc.v1.TicketService/DispatchTicket": _LEADERS,
    "/vcc.v1.TicketService/ReopenTicket": _LEADERS,
    "/vcc.v1.TicketService/GetTicketReport": _LEADERS,
}


def may(action: str, role: str) -> bool:
    return role in PERSON_ACTIONS.get(action, frozenset())


def require(action: str, role: str, error_id: str, message: str) -> None:
    """PermissionDenied unless `role` may do `action`."""
    if not may(action, role):
        raise PermissionDenied(error_id, message)
