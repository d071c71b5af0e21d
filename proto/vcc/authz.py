"""Who may call what: the caller's identity from its certificate, and ONE table method -> kinds.

The identity is the SAN URI spiffe://vcc/<kind>/<name> of the client certificate the TLS
handshake verified against the province CA; nothing a message says about its sender is trusted.
`Authorizer` is the server interceptor every vcc server installs when TLS is on: a method absent
from METHOD_KINDS, a caller of another kind, a site that is not in the province config, or a
certificate without a vcc identity gets PERMISSION_DENIED before the handler runs (deny by
default). Handlers that take a `site_id` from a message call `require_site` (a site speaks only
for itself).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography import x509

from vcc.errors import ERROR_ID_KEY
from vcc.person_assertion import ACTING, METADATA_KEY, AssertionRefused, PersonGate
from vcc.tls import CENTRAL, DESKTOP, SITE, TOOL, TRUNK

log = logging.getLogger(__name__)

URI_PREFIX = "spiffe://vcc/"
ANY_NODE = frozenset({SITE, CENTRAL, TOOL, DESKTOP, TRUNK})


def identity_uri(kind: str, name: str) -> str:
    return f"{URI_PREFIX}{kind}/{name}"


# The one table: full gRPC method name -> the identity kinds that may call it. A method that is not
# here is refused to everyone (tests/security/test_authz_table.py checks every method of every
# service in proto/vcc/v1 is here).
METHOD_KINDS: Mapping[str, frozenset[str]] = {
    # Central: what sites report and ask; what operators read; what the exchange asks first.
    "/vcc.v1.CentralService/IngestCallEvents": frozenset({SITE}),
    "/vcc.v1.CentralService/StreamSiteState": frozenset({SITE}),
    "/vcc.v1.CentralService/RouteCall": frozenset({SITE}),
    "/vcc.v1.CentralService/LookupCustomer": frozenset({SITE, TOOL}),
    "/vcc.v1.CentralService/LookupCustomers": frozenset({SITE}),
    "/vcc.v1.CentralService/GetCallRecord": frozenset({TOOL}),
    "/vcc.v1.CentralService/ListCallRecords": frozenset({TOOL}),
    "/vcc.v1.CentralService/GetProvinceStatus": frozenset({TOOL}),
    "/vcc.v1.CentralService/PreRouteCall": frozenset({TRUNK}),
    "/vcc.v1.CentralService/ListAgents": frozenset({SITE, TOOL}),
    "/vcc.v1.CentralService/ListRoutingDecisions": frozenset({TOOL}),
    # An operator closing the calls of a city lost for good (audited).
    "/vcc.v1.CentralService/CloseLostSiteCalls": frozenset({TOOL}),
    # A site, to the agent desktops (each call then needs the agent's session token).
    "/vcc.v1.AgentDesktopService/Login": frozenset({DESKTOP}),
    "/vcc.v1.AgentDesktopService/Logout": frozenset({DESKTOP}),
    "/vcc.v1.AgentDesktopService/SetState": frozenset({DESKTOP}),
    "/vcc.v1.AgentDesktopService/Answer": frozenset({DESKTOP}),
    "/vcc.v1.AgentDesktopService/HangUp": frozenset({DESKTOP}),
    "/vcc.v1.AgentDesktopService/Hold": frozenset({DESKTOP}),
    "/vcc.v1.AgentDesktopService/Retrieve": frozenset({DESKTOP}),
    "/vcc.v1.AgentDesktopService/EndWrapUp": frozenset({DESKTOP}),
    "/vcc.v1.AgentDesktopService/GetAgent": frozenset({DESKTOP}),
    "/vcc.v1.AgentDesktopService/Transfer": frozenset({DESKTOP}),
    "/vcc.v1.AgentDesktopService/CompleteTransfer": frozenset({DESKTOP}),
    "/vcc.v1.AgentDesktopService/Conference": frozenset({DESKTOP}),
    "/vcc.v1.AgentDesktopService/CancelTransfer": frozenset({DESKTOP}),
    "/vcc.v1.AgentDesktopService/AnswerCallbackPreview": frozenset({DESKTOP}),
    "/vcc.v1.AgentDesktopService/StreamEvents": frozenset({DESKTOP}),
    "/vcc.v1.DialOutService/WatchDialOuts": frozenset({TRUNK}),
    "/vcc.v1.DialOutService/DialFailed": frozenset({TRUNK}),
    "/vcc.v1.VoicemailService/ListVoicemail": frozenset({DESKTOP}),
    "/vcc.v1.VoicemailService/TakeVoicemail": frozenset({DESKTOP}),
    "/vcc.v1.VoicemailService/PlayVoicemail": frozenset({DESKTOP}),
    "/vcc.v1.VoicemailService/FinishVoicemail": frozenset({DESKTOP}),
    "/vcc.v1.VoicemailService/FetchVoicemailAudio": frozenset({DESKTOP}),
    # A site, to operators (and to central, which may fall back on it).
    # (Other sites too: the desktop directory shows their presence.)
    "/vcc.v1.SiteAdminService/GetSiteStatus": frozenset({TOOL, CENTRAL, SITE}),
    # A site, to the other sites.
    "/vcc.v1.SitePeerService/Ping": frozenset({SITE, TOOL}),
    "/vcc.v1.SitePeerService/DeliverMessage": frozenset({SITE}),
    "/vcc.v1.SitePeerService/ServeCall": frozenset({SITE}),
    "/vcc.v1.SitePeerService/PeerLink": frozenset({SITE}),
    # A site, to the exchange's trunk gateway.
    "/vcc.v1.TrunkIngressService/PlaceCall": frozenset({TRUNK}),
    "/vcc.v1.TrunkIngressService/Signalling": frozenset({TRUNK}),
    # Central's audit log: each site writes its own entries; operators read them.
    "/vcc.v1.AuditService/RecordAudit": frozenset({SITE}),
    "/vcc.v1.AuditService/ListAudit": frozenset({TOOL}),
    # Call recordings: each site indexes its own at central; operators search the index and fetch
    # the file from the site that keeps it.
    "/vcc.v1.RecordingIndexService/IndexRecordings": frozenset({SITE}),
    "/vcc.v1.RecordingIndexService/ListRecordings": frozenset({TOOL}),
    "/vcc.v1.SiteRecordingService/FetchRecording": frozenset({TOOL}),
    # Central's IVR: flows and the catalog pushed by operators; a site's IVR looks data up.
    "/vcc.v1.IvrService/PushFlow": frozenset({TOOL}),
    "/vcc.v1.IvrService/PushServiceCatalog": frozenset({TOOL}),
    "/vcc.v1.IvrService/GetFlow": frozenset({TOOL, SITE}),
    "/vcc.v1.IvrService/ListFlows": frozenset({TOOL, SITE}),
    "/vcc.v1.IvrService/GetServiceCatalog": frozenset({TOOL, SITE}),
    "/vcc.v1.IvrService/Lookup": frozenset({SITE, TOOL}),
    # A customer's PIN is set by the back office only (its tools), never through a site.
    "/vcc.v1.CustomerService/SetCustomerPin": frozenset({TOOL}),
    # Central's service desk: agents work it through their site (the desktop is served by the
    # site node), the back office through its tools; imports and publishing are back office only.
    **{
        f"/vcc.v1.{method}": frozenset({SITE, TOOL, DESKTOP})
        for method in (
            "CustomerService/CreateCustomer",
            "CustomerService/GetCustomer",
            "CustomerService/UpdateCustomer",
            "CustomerService/SearchCustomers",
            "TicketService/CreateTicket",
            "TicketService/GetTicket",
            "TicketService/DispatchTicket",
            "TicketService/StartTicket",
            "TicketService/ReplyTicket",
            "TicketService/CloseTicket",
            "TicketService/ReopenTicket",
            "TicketService/AddTicketNote",
            "TicketService/SearchTickets",
            "TicketService/GetTicketReport",
            "KnowledgeService/ProposeArticle",
            "KnowledgeService/GetArticle",
            "KnowledgeService/ListArticles",
            "KnowledgeService/SearchArticles",
            "HistoryService/GetHistory",
        )
    },
    "/vcc.v1.CustomerService/ImportCustomers": frozenset({TOOL}),
    "/vcc.v1.KnowledgeService/PublishArticle": frozenset({TOOL}),
    "/vcc.v1.KnowledgeService/RejectArticle": frozenset({TOOL}),
    # Every server: health to anyone the CA vouches for; reflection to operators.
    "/grpc.health.v1.Health/Check": ANY_NODE,
    "/grpc.health.v1.Health/Watch": ANY_NODE,
    "/grpc.health.v1.Health/List": ANY_NODE,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": frozenset({TOOL}),
}

# Concurrent RPCs (streams included) one client identity may have open at one server: a
# trunk gateway holds one stream per call in progress, a desktop server one per agent. Sized for
# the largest site the benches run (5,000 agents, 10,000 calls waiting: `vcc bench scale`).
DEFAULT_PER_CLIENT_LIMITS: Mapping[str, int] = {
    SITE: 2_000,
    CENTRAL: 200,
    TOOL: 200,
    DESKTOP: 6_000,
    TRUNK: 12_000,
}


@dataclass(frozen=True)
class Identity:
    kind: str
    name: str

    @property
    def uri(self) -> str:
        return identity_uri(self.kind, self.name)

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


@functools.lru_cache(maxsize=256)
def _identity_of_pem(pem: bytes) -> Identity | None:
    try:
        cert = x509.load_pem_x509_certificate(pem)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    for uri in sans.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(URI_PREFIX):
            kind, _, name = uri.removeprefix(URI_PREFIX).partition("/")
            if kind and name and "/" not in name:
                return Identity(kind, name)
    return None


@functools.lru_cache(maxsize=1024)
def _identity_of_uri(uri: bytes) -> Identity | None:
    kind, _, name = uri.decode(errors="replace").removeprefix(URI_PREFIX).partition("/")
    return Identity(kind, name) if kind and name and "/" not in name else None


_URI_PREFIX_BYTES = URI_PREFIX.encode()
SAN_PROPERTY = "x509_subject_alternative_name"


def peer_identity(context: grpc.aio.ServicerContext[Any, Any]) -> Identity | None:
    """The verified client certificate's identity; None on a plaintext server or without one.

    From the peer identities the handshake verified (the certificate's subject alternative names,
    its SPIFFE URI among them): the same URI `_identity_of_pem` reads from the certificate, for a
    twentieth of the cost of the whole auth context (which copies the certificate's PEM) per RPC.
    """
    values = context.peer_identities()
    # Only the subject alternative names (without any, gRPC names the common name instead).
    if not values or context.peer_identity_key() != SAN_PROPERTY:
        return None
    for value in values:
        if value.startswith(_URI_PREFIX_BYTES):
            who = _identity_of_uri(bytes(value))
            if who is not None:
                return who
    return None


def peer_description(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """For logs and the audit: the certificate's subject and the address it came from."""
    auth = context.auth_context()
    cn = b",".join(auth.get("x509_common_name") or []).decode(errors="replace")
    return f"{context.peer()} cn={cn or '-'}"


async def require_site(context: grpc.aio.ServicerContext[Any, Any], site_id: str) -> None:
    """A site speaks only for itself: the message's site id must be the certificate's.

    On a plaintext server (TLS not configured: in-process tests) there is no identity to check.
    """
    who = peer_identity(context)
    if who is None and context.peer_identities() is None:
        return
    if who is None or who.kind != SITE or who.name != site_id:
        log.warning("site_id %r refused to %s (%s)", site_id, who, peer_description(context))
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"site_id: this certificate does not speak for site {site_id!r}",
        )


# Called with (method, identity or None, description of the peer, reason) for every refusal.
DeniedHook = Callable[[str, Identity | None, str, str], Awaitable[None] | None]


class Authorizer(grpc.aio.ServerInterceptor):
    """Deny by default: METHOD_KINDS decides; per-client concurrency is bounded."""

    def __init__(
        self,
        known_sites: Collection[str],
        *,
        table: Mapping[str, frozenset[str]] = METHOD_KINDS,
        limits: Mapping[str, int] = DEFAULT_PER_CLIENT_LIMITS,
        on_denied: DeniedHook | None = None,
        persons: PersonGate | None = None,
    ) -> None:
        self._persons = persons
        self._sites = frozenset(known_sites)
        self._table = table
        self._limits = limits
        self._on_denied = on_denied
        self._active: dict[Identity, int] = {}
        # The guarded handler of each method, made once: grpc hands the same handler every call.
        self._guarded: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None:
            return None
        made = self._guarded.get(details.method)
        if made is None or made[0] is not handler:
            made = self._guarded[details.method] = (handler, self._wrap(details.method, handler))
        return made[1]

    async def _admit(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> Identity:
        who = peer_identity(context)
        reason = self._refusal(method, who)
        if (
            not reason
            and who is not None
            and self._persons is not None
            and self._persons.applies(method, who.kind)
        ):
            # A site or desktop server acting for a person: the person the site vouches for,
            # checked against every revocation committed before this call (a logout that returned
            # is refused here whichever replica took it).
            try:
                await self._persons.current()
            except Exception as exc:
                log.warning("%s: person revocations cannot be read: %s", method, exc)
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE, f"{method}: the revocations of sessions cannot be read now"
                )
            token = dict(context.invocation_metadata() or ()).get(METADATA_KEY)
            try:
                ACTING.set(self._persons.admit(method, who.kind, who.name, str(token) if token else None))
            except AssertionRefused as exc:
                reason = f"person refused: {exc}"
        if reason:
            desc = peer_description(context)
            log.warning("%s refused to %s (%s): %s", method, who or "unknown peer", desc, reason)
            if self._on_denied is not None:
                result = self._on_denied(method, who, desc, reason)
                if inspect.isawaitable(result):
                    await result
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{method}: {reason}")
        assert who is not None
        active = self._active.get(who, 0)
        if active >= self._limits.get(who.kind, 100):
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"{who}: at most {active} calls at once to this server"
            )
        self._active[who] = active + 1
        return who

    def _release(self, who: Identity) -> None:
        left = self._active.get(who, 1) - 1
        if left <= 0:
            self._active.pop(who, None)
        else:
            self._active[who] = left

    def _refusal(self, method: str, who: Identity | None) -> str:
        if who is None:
            return "the client certificate names no vcc identity"
        if who.kind == SITE and who.name not in self._sites:
            return f"site {who.name!r} is not in the province config"
        allowed = self._table.get(method)
        if allowed is None:
            return "not in the authorization table"
        if who.kind not in allowed:
            return f"not allowed to a {who.kind} certificate"
        return ""

    async def admit(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> Identity:
        """Aborts the RPC unless the table lets its client call `method` now; else counts it in."""
        return await self._admit(method, context)

    def release(self, who: Identity) -> None:
        """The admitted RPC has ended."""
        self._release(who)

    async def refused_by_handler(
        self, method: str, who: Identity, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        """A handler refused what the message says (a site speaking for another, a call naming
        someone other than the acting person): audited like the table's refusals."""
        if self._on_denied is None or context.code() != grpc.StatusCode.PERMISSION_DENIED:
            return
        error_id = str(dict(context.trailing_metadata() or ()).get(ERROR_ID_KEY, ""))
        reason = f"refused by the handler: {error_id or 'permission-denied'}: {context.details()!s}"
        result = self._on_denied(method, who, peer_description(context), reason)
        if inspect.isawaitable(result):
            await result

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        admit, release = functools.partial(self._admit, method), self._release
        refused = functools.partial(self.refused_by_handler, method)
        kinds = (
            ("unary_unary", grpc.unary_unary_rpc_method_handler),
            ("unary_stream", grpc.unary_stream_rpc_method_handler),
            ("stream_unary", grpc.stream_unary_rpc_method_handler),
            ("stream_stream", grpc.stream_stream_rpc_method_handler),
        )
        for attr, make in kinds:
            inner = getattr(handler, attr)
            if inner is not None:
                return make(
                    _guarded(inner, admit, release, refused),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler


Refused = Callable[[Identity, grpc.aio.ServicerContext[Any, Any]], Awaitable[None]]


def _guarded(
    inner: Callable[..., Any],
    admit: Callable[[grpc.aio.ServicerContext[Any, Any]], Awaitable[Identity]],
    release: Callable[[Identity], None],
    refused: Refused,
) -> Callable[..., Any]:
    # An async-generator handler stays one (grpc.aio iterates it); a coroutine stays a coroutine.
    if inspect.isasyncgenfunction(inner):

        async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            who = await admit(context)
            items = inner(request, context)
            try:
                async for item in items:
                    yield item
            except grpc.aio.AbortError:
                await refused(who, context)
                raise
            finally:
                # At once, as grpc.aio would close the handler itself (its cleanup frees a trunk).
                await items.aclose()
                release(who)

        return streaming

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        who = await admit(context)
        try:
            return await inner(request, context)
        except grpc.aio.AbortError:
            await refused(who, context)
            raise
        finally:
            release(who)

    return unary
