"""The desk's use of central's service desk (SPEC F21): the caller's record edited from the desktop
and saved at central (optimistic: an edit made on an old version is refused `stale-version`, in
words, nothing saved), and the published knowledge articles of the call's service.

- `GET  /api/customers/{customer_id}` → `{customer}` (with its `version`)
- `POST /api/customers/{customer_id}` `{"version", "name"?, "level"?, "city"?, "notes"?}` → `{customer}`
- `GET  /api/knowledge?service=GROUP` → `{articles: [{id, title, body, category, tags}]}`

An agent reads and edits the record of a caller on its own call (ringing, talking or in wrap-up)
only: another record is 403 `not-your-customer`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.protobuf.json_format import MessageToDict
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from site_node.callcontrol.domain import Audit
from site_node.grpc_api.convert import customer_from_proto
from site_node.links.desk_data import CentralDeskData, Person
from site_node.web.requests import IDENT_FIELD, origin, text
from site_node.web.sessions import Session
from vcc.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from vcc.v1 import common_pb2

if TYPE_CHECKING:
    from site_node.web.server import DeskServer

EDITABLE = {"name": 128, "level": 32, "city": 64, "notes": 2000}


def _person(s: Session) -> Person:
    return Person(s.code, s.token)


def customer_view(c: common_pb2.Customer) -> dict[str, Any]:
    d = MessageToDict(c, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    d["version"] = c.version
    return d


class DeskDataApi:
    def __init__(self, desk: DeskServer, data: CentralDeskData | None) -> None:
        self.d = desk
        self.data = data

    def _source(self) -> CentralDeskData:
        if self.data is None:
            raise FailedPrecondition("no-service-desk", "this site reaches no service desk")
        return self.data

    def _own_customer(self, s: Session, customer_id: str) -> None:
        """The record of a caller on the agent's own call (offered, talking or in wrap-up)."""
        if not customer_id or len(customer_id) > 64 or not IDENT_FIELD.match(customer_id):
            raise InvalidArgument("bad-customer-id", "customer_id: 1 to 64 letters, digits, - or _")
        agent = self.d.sb.agents[s.code]
        call = self.d.sb.calls.get(agent.call_id) if agent.call_id else None
        mine = call is not None and call.customer is not None and call.customer.customer_id == customer_id
        offer = self.d.memory[s.code].offer
        offered = bool(offer and (offer.get("customer") or {}).get("id") == customer_id)
        if not (mine or offered):
            raise PermissionDenied("not-your-customer", "you can open the record of your own caller only")

    async def _get(self, request: Request) -> Response:
        s = self.d._session(request)
        customer_id = request.path_params["customer_id"]
        self._own_customer(s, customer_id)
        return JSONResponse(
            {"customer": customer_view(await self._source().customer(customer_id, _person(s)))}
        )

    async def _save(self, request: Request) -> Response:
        async def save(s: Session, body: dict[str, Any]) -> dict[str, Any]:
            customer_id = request.path_params["customer_id"]
            self._own_customer(s, customer_id)
            version = body.get("version")
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise InvalidArgument("missing-version", "version: the version of the record you edited")
            edits = {k: text(body, k, n, required=False) for k, n in EDITABLE.items() if k in body}
            if not edits:
                raise InvalidArgument("nothing-to-save", f"one of {', '.join(EDITABLE)}")
            if "name" in edits and not edits["name"].strip():
                raise InvalidArgument("bad-argument", "name: required")
            source = self._source()
            current = await source.customer(customer_id, _person(s))
            # The other fields as central has them now; the version check refuses an edit made on
            # an older one (someone saved in between).
            for k, v in edits.items():
                setattr(current, k, v)
            saved = await source.update_customer(current, version, _person(s))
            self.d.customers_changed(customer_from_proto(saved), list(saved.phones) or [saved.phone])
            # Who changed a customer's record, in central's audit log (central sees only the site).
            entry = Audit(
                self.d._clock(),
                s.code,
                "customer-edit",
                customer_id,
                detail=f"{','.join(edits)} v{saved.version}",
            )
            self.d.audit.record(entry, origin=origin(request))
            return {"customer": customer_view(saved)}

        return await self.d._mutate(request, f"customer-{request.path_params['customer_id']}", save)

    async def _knowledge(self, request: Request) -> Response:
        s = self.d._session(request)
        service = request.query_params.get("service", "")
        if not service or len(service) > 32 or not IDENT_FIELD.match(service):
            raise InvalidArgument("bad-service", "service: a skill group id")
        return JSONResponse(
            {"service": service, "articles": await self._source().articles(service, _person(s))}
        )
