"""What the agent desktop reads and writes of central's service desk (CustomerService,
KnowledgeService), with the site's own certificate: a customer record to edit (optimistic, by
version), the published knowledge articles of a service. Each call carries the site's signed
word of the agent it is made for (`vcc.person_assertion`): central checks that person. Every RPC
has a deadline; a refusal comes back as the server's error (its id and words), central
unreachable as `central-unavailable`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from vcc import person_assertion
from vcc.errors import Unavailable, from_rpc_error
from vcc.person_assertion import PersonSigner
from vcc.v1 import common_pb2, servicedesk_pb2, servicedesk_pb2_grpc

DEADLINE_S = 3.0
ARTICLES_TTL_S = 30.0
MAX_ARTICLES = 5


@dataclass(frozen=True)
class Person:
    """The agent a call is made for: code and session token (the assertion says its digest)."""

    code: str
    session_token: str


class CentralDeskData:
    def __init__(
        self,
        channel: Callable[[], grpc.aio.Channel],
        clock: Callable[[], float] = time.monotonic,
        *,
        signer: PersonSigner | None = None,
    ) -> None:
        self._channel = channel
        self._clock = clock
        self._signer = signer
        self._articles: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    async def _call(self, method: Any, request: Any, person: Person) -> Any:
        # Central checks who acts (the site's signed word) and that their role may: one per call.
        metadata = (
            ((person_assertion.METADATA_KEY, self._signer.sign(person.code, person.session_token)),)
            if self._signer is not None
            else ()
        )
        try:
            return await method(request, timeout=DEADLINE_S, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise Unavailable("central-unavailable", "central cannot be reached now: try again") from None
            raise from_rpc_error(exc) from None

    async def customer(self, customer_id: str, person: Person) -> common_pb2.Customer:
        stub = servicedesk_pb2_grpc.CustomerServiceStub(self._channel())
        reply = await self._call(
            stub.GetCustomer, servicedesk_pb2.GetCustomerRequest(customer_id=customer_id), person
        )
        found: common_pb2.Customer = reply.customer
        return found

    async def update_customer(
        self, customer: common_pb2.Customer, expected_version: int, person: Person
    ) -> common_pb2.Customer:
        stub = servicedesk_pb2_grpc.CustomerServiceStub(self._channel())
        request = servicedesk_pb2.UpdateCustomerRequest(customer=customer, expected_version=expected_version)
        reply = await self._call(stub.UpdateCustomer, request, person)
        saved: common_pb2.Customer = reply.customer
        return saved

    async def articles(self, service: str, person: Person) -> list[dict[str, Any]]:
        """The published articles of a service (a skill group), newest first, cached a moment."""
        hit = self._articles.get(service)
        now = self._clock()
        if hit is not None and now - hit[0] < ARTICLES_TTL_S:
            return hit[1]
        stub = servicedesk_pb2_grpc.KnowledgeServiceStub(self._channel())
        request = servicedesk_pb2.ListArticlesRequest(
            state="published", service=service, page_size=MAX_ARTICLES
        )
        reply = await self._call(stub.ListArticles, request, person)
        found = [
            {
                "id": a.article_id,
                "title": a.title,
                "body": a.body,
                "category": a.category,
                "tags": list(a.tags),
            }
            for a in reply.articles
        ]
        self._articles[service] = (now, found)
        return found
