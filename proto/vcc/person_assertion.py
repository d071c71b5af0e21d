"""Which person acts, vouched for by their site: a short-lived assertion signed with the site's key.

A certificate says which *process* calls central; on a call made on a person's behalf (a desk
saving a customer's record, a desktop server searching tickets for its agent) the site where that
person logged in signs who it is: `{site, agent, session, iat, exp}`, ECDSA P-256/SHA-256 with the
site's own TLS key, its certificate attached. The caller sends it as the `vcc-person` metadata;
central checks the certificate against the province CA (a site's, naming the site of the claim),
the signature, the times, and then, from its own people table (the province config, never the
message), that the person belongs to that site and that their role may call the method
(`vcc.people.METHOD_PERSON_ROLES`, checked in `vcc.authz.Authorizer`).

Format: `v1.<payload>.<signature>.<certificate DER>`, each part base64url without padding.
"""

from __future__ import annotations

import base64
import contextvars
import functools
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from vcc.tls import DESKTOP, SITE, TlsFiles

METADATA_KEY = "vcc-person"
VERSION = "v1"
# Short, and revoked besides when the agent's session ends (`Revocations`): a desktop server renews
# it with GetAgent; the site's own calls sign one per call.
TTL_S = 300.0
# Clocks of the province's nodes may differ a little.
SKEW_S = 30.0
MAX_TOKEN_CHARS = 4096
# Central's checked assertions kept (a desktop server's agents' current ones), and how often it
# looks at the CA file again.
SIGNED_CACHE = 10_000
CA_RECHECK_S = 1.0


class AssertionRefused(ValueError):
    """The assertion cannot be used; the message says why (for the log and the audit)."""


@dataclass(frozen=True)
class PersonClaim:
    site: str
    agent: str
    session: str
    issued_at: float
    expires_at: float


def session_tag(session_token: str) -> str:
    """What an assertion says of the session: a digest, never the token itself."""
    return hashlib.sha256(session_token.encode()).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    # Strict: a character outside base64url is malformed, not skipped.
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


class PersonSigner:
    """A site's signer: reads its TLS files again when they change (rotation)."""

    def __init__(self, files: TlsFiles, site_id: str, clock: Callable[[], float] = time.time) -> None:
        self._files = files
        self._site = site_id
        self._clock = clock
        self._stamp: tuple[float, ...] | None = None
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._cert_der = b""

    def _load(self) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
        stamp = self._files.stamp()
        if self._key is None or stamp != self._stamp:
            _, cert_pem, key_pem = self._files.read()
            key = serialization.load_pem_private_key(key_pem, password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{self._files.key}: not an EC key")
            self._key = key
            self._cert_der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
            self._stamp = stamp
        return self._key, self._cert_der

    def sign(
        self, agent: str, session_token: str, *, ttl_s: float = TTL_S, not_after: float | None = None
    ) -> str:
        key, cert_der = self._load()
        now = self._clock()
        expires = now + ttl_s if not_after is None else min(now + ttl_s, not_after)
        payload = json.dumps(
            {
                "site": self._site,
                "agent": agent,
                "session": session_tag(session_token),
                "iat": now,
                "exp": expires,
            },
            separators=(",", ":"),
            sort_keys=True,
        ).encode()
        signature = key.sign(payload, ec.ECDSA(hashes.SHA256()))
        return ".".join((VERSION, _b64(payload), _b64(signature), _b64(cert_der)))


@functools.lru_cache(maxsize=64)
def _signer_of(cert_der: bytes, ca_pem: bytes) -> tuple[str, ec.EllipticCurvePublicKey, float, float]:
    """The site a certificate names, its key and validity, once checked against the province CA."""
    from vcc.authz import _identity_of_pem  # (authz imports this module's users)

    try:
        cert = x509.load_der_x509_certificate(cert_der)
        ca = x509.load_pem_x509_certificate(ca_pem)
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise AssertionRefused("the assertion's certificate is not from the province CA") from None
    who = _identity_of_pem(cert.public_bytes(serialization.Encoding.PEM))
    if who is None or who.kind != SITE:
        raise AssertionRefused(f"the assertion is signed by {who or 'no vcc identity'}, not by a site")
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise AssertionRefused("the assertion's certificate has no EC key")
    return who.name, key, cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()


def verify(token: str, ca_pem: bytes, now: float) -> PersonClaim:
    """The claim of a well-signed, current assertion; AssertionRefused otherwise."""
    signed = _signed_claim(token, ca_pem)
    _check_times(signed, now)
    return signed.claim


@dataclass(frozen=True)
class _Signed:
    """A claim whose signature and certificate were checked, and the certificate's validity."""

    claim: PersonClaim
    valid_from: float
    valid_until: float


def _signed_claim(token: str, ca_pem: bytes) -> _Signed:
    """Everything but the times (they change, the rest of a given token does not)."""
    if len(token) > MAX_TOKEN_CHARS:
        raise AssertionRefused("the assertion is too long")
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != VERSION:
        raise AssertionRefused("the assertion is malformed")
    try:
        payload, signature, cert_der = (_unb64(p) for p in parts[1:])
    except ValueError:
        raise AssertionRefused("the assertion is malformed") from None
    site, key, valid_from, valid_until = _signer_of(cert_der, ca_pem)
    try:
        key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise AssertionRefused("the assertion's signature does not match") from None
    try:
        fields = json.loads(payload)
        claim = PersonClaim(
            str(fields["site"]),
            str(fields["agent"]),
            str(fields["session"]),
            float(fields["iat"]),
            float(fields["exp"]),
        )
    except (ValueError, KeyError, TypeError):
        raise AssertionRefused("the assertion's payload is malformed") from None
    if claim.site != site:
        raise AssertionRefused(f"site {site!r} signed an assertion for site {claim.site!r}")
    return _Signed(claim, valid_from, valid_until)


def _check_times(signed: _Signed, now: float) -> None:
    if not signed.valid_from <= now <= signed.valid_until:
        raise AssertionRefused("the assertion's certificate is not valid now")
    claim = signed.claim
    if not (claim.issued_at - SKEW_S <= now <= claim.expires_at + SKEW_S):
        raise AssertionRefused("the assertion has expired")


# What a site's audit entries say when an agent's assertions must die at once (central's audit
# log carries them: durable, shared by the replicas): the agent's session ended (logout, by
# themself, a supervisor or the site), an administrator disabled the agent, its code locked out.
REVOKING_ACTIONS = frozenset({"person-revoked", "agent-disable", "lockout"})
# A revocation matters while an assertion issued before it can still be honoured.
REVOCATION_KEPT_S = TTL_S + 2 * SKEW_S + 60.0


def revoked_agent(action: str, target: str, detail: Mapping[str, str]) -> str:
    """The agent code a site's audit entry revokes the assertions of, or ""."""
    if action not in REVOKING_ACTIONS or (action == "lockout" and detail.get("kind") != "code"):
        return ""
    return target


class Revocations:
    """Per (site, agent): the site's time of the latest revocation; an assertion that site issued at
    or before it is refused. Times are the site's own clock on both sides (the entry's and the
    assertion's), so clocks that differ between nodes do not matter."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._before: dict[tuple[str, str], float] = {}
        self._clock = clock

    def note(self, site: str, agent: str, at: float) -> None:
        key = (site, agent)
        if at > self._before.get(key, float("-inf")):
            self._before[key] = at
        if len(self._before) > 10_000:
            self.prune()

    def prune(self) -> None:
        oldest = self._clock() - REVOCATION_KEPT_S
        for key, at in list(self._before.items()):
            if at < oldest:
                del self._before[key]

    def revokes(self, claim: PersonClaim) -> bool:
        return claim.issued_at <= self._before.get((claim.site, claim.agent), float("-inf"))


@dataclass(frozen=True)
class ActingPerson:
    """Who acts on a call central admitted: the claim, and the role from central's people table."""

    claim: PersonClaim
    role: str

    def __str__(self) -> str:
        return f"agent:{self.claim.agent}@{self.claim.site}"


# The person a call acts for, set by the Authorizer before the handler runs (None: no person).
ACTING: contextvars.ContextVar[ActingPerson | None] = contextvars.ContextVar(
    "vcc_acting_person", default=None
)


class PersonGate:
    """Central's check of the person a site or desktop server acts for (deny by default).

    `roles`: site id -> agent code -> role, from the province config. `roster_agent(site, code)`:
    whether that site reports the agent in its live presence (an agent an administrator added at
    runtime, always of role `agent`).
    """

    def __init__(
        self,
        ca: Path,
        roles: Mapping[str, Mapping[str, str]],
        *,
        table: Mapping[str, frozenset[str]] | None = None,
        roster_agent: Callable[[str, str], bool] = lambda site, code: False,
        clock: Callable[[], float] = time.time,
        revocations: Revocations | None = None,
        current: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        from vcc.people import METHOD_PERSON_ROLES

        # Makes `revocations` hold every revocation committed before it was awaited (central's
        # RevocationFeed.current: the database read again); None: `revocations` is all there is.
        self._current = current
        self._ca_path = ca
        self._ca: tuple[float, bytes] | None = None
        self._ca_seen_at = float("-inf")
        # A desktop server sends the same assertion with every call for minutes: its signature is
        # checked once (the times and the revocations at every call). Emptied with a new CA.
        self._signed: OrderedDict[str, _Signed] = OrderedDict()
        self._applies: dict[tuple[str, str], bool] = {}
        self._roles = roles
        self._table = METHOD_PERSON_ROLES if table is None else table
        self._roster_agent = roster_agent
        self._clock = clock
        self.revocations = revocations or Revocations(clock)

    def applies(self, method: str, kind: str) -> bool:
        """A site or desktop server calling the service desk acts for a person (any method of it,
        listed or not: one not in the table is refused)."""
        from vcc.people import PERSON_SERVICES

        known = self._applies.get((method, kind))
        if known is None:
            service = method.lstrip("/").split("/", 1)[0]
            known = self._applies[(method, kind)] = kind in (SITE, DESKTOP) and service in PERSON_SERVICES
        return known

    def _ca_pem(self) -> bytes:
        # Looked at again at most once a second (a renewed CA is taken within that).
        now = time.monotonic()
        if self._ca is not None and now - self._ca_seen_at < CA_RECHECK_S:
            return self._ca[1]
        self._ca_seen_at = now
        mtime = self._ca_path.stat().st_mtime
        if self._ca is None or self._ca[0] != mtime:
            self._ca = (mtime, self._ca_path.read_bytes())
            self._signed.clear()
        return self._ca[1]

    def _signed_claim(self, token: str) -> _Signed:
        ca = self._ca_pem()
        signed = self._signed.get(token)
        if signed is None:
            signed = self._signed[token] = _signed_claim(token, ca)
            if len(self._signed) > SIGNED_CACHE:
                self._signed.popitem(last=False)
        return signed

    async def current(self) -> None:
        """Before `admit`: the revocations made current (raises when they cannot be)."""
        if self._current is not None:
            await self._current()

    def admit(self, method: str, caller_kind: str, caller_name: str, token: str | None) -> ActingPerson:
        """The person acting, or AssertionRefused saying why."""
        if not token:
            raise AssertionRefused("no person: a call on a person's behalf needs the site's assertion")
        signed = self._signed_claim(token)
        _check_times(signed, self._clock())
        claim = signed.claim
        if caller_kind == SITE and claim.site != caller_name:
            raise AssertionRefused(f"site {caller_name!r} speaks for its own people only, not {claim.site}'s")
        if claim.site not in self._roles:
            raise AssertionRefused(f"site {claim.site!r} is not in the province config")
        if self.revocations.revokes(claim):
            raise AssertionRefused(
                f"agent {claim.agent} of {claim.site}: the session it was issued for has ended"
            )
        role = self._roles[claim.site].get(claim.agent)
        if role is None and self._roster_agent(claim.site, claim.agent):
            role = "agent"
        if role is None:
            raise AssertionRefused(f"agent {claim.agent} is not a person of site {claim.site}")
        if role not in self._table.get(method, frozenset()):
            raise AssertionRefused(f"agent {claim.agent} of {claim.site}: a {role} may not call this")
        return ActingPerson(claim, role)
