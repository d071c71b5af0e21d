"""Agents' phones register here (RFC 3261 §10) with digest authentication (RFC 8760, MD5).

The phone's user is the agent code; the config holds only HA1 = MD5(code:realm:password). A
request without credentials (or with a stale nonce) is challenged 401; wrong credentials or an
agent without a phone get 403. Nonces are stateless: a timestamp signed with a per-process key,
valid for NONCE_TTL_S. The bindings (agent code -> where its phone is) are what the call control
will ring once agents' phones take calls.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from site_node.sip.message import Message, NameAddr, SipParseError, split_commas, uri_user
from site_node.sip.transport import Address
from vcc.config import SipConfig
from vcc.digits import is_digits

log = logging.getLogger(__name__)

NONCE_TTL_S = 300.0


@dataclass(frozen=True, slots=True)
class Binding:
    agent_code: str
    contact: str
    source: Address
    expires_at: float


def md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def ha1(code: str, realm: str, password: str) -> str:
    """What the config holds for an agent's phone (`vcc sip-ha1`)."""
    return md5(f"{code}:{realm}:{password}")


def parse_digest(value: str) -> dict[str, str]:
    """`Digest k=v, k="v", ...` -> {k: v} (lower-case keys); {} when it is not Digest."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return {}
    out: dict[str, str] = {}
    for part in split_commas(rest):
        key, eq, val = part.partition("=")
        if not eq:
            continue
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = val[1:-1]
        out[key.strip().lower()] = val
    return out


class Registrar:
    def __init__(
        self, config: SipConfig, phones: dict[str, str], clock: Callable[[], float] = time.time
    ) -> None:
        """`phones`: agent code -> HA1, for the agents that have a phone."""
        self.config = config
        self.realm = config.realm
        self._phones = phones
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self.bindings: dict[str, Binding] = {}
        self.refused = 0

    def nonce(self) -> str:
        stamp = f"{self._clock():.3f}"
        sig = hmac.new(self._key, stamp.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{stamp}.{sig}"

    def _nonce_state(self, nonce: str) -> str:
        """ "ok", "stale" (ours, but too old) or "bad"."""
        stamp, _, sig = nonce.rpartition(".")
        want = hmac.new(self._key, stamp.encode(), hashlib.sha256).hexdigest()[:32]
        if not re.fullmatch(r"[0-9]+\.[0-9]{3}", stamp) or not hmac.compare_digest(sig, want):
            return "bad"
        return "ok" if self._clock() - float(stamp) <= NONCE_TTL_S else "stale"

    def register(self, msg: Message, peer: Address) -> tuple[int, list[tuple[str, str]], str]:
        """(status, extra headers, reason) of the answer to one REGISTER."""
        to_user = uri_user(NameAddr.parse(msg.need("to")).uri)
        auth = parse_digest(msg.get("authorization") or "")
        if not auth:
            return self._challenge(stale=False)
        if auth.get("realm") != self.realm or auth.get("username") != to_user:
            return self._refuse("credentials do not match the registered user")
        state = self._nonce_state(auth.get("nonce", ""))
        if state != "ok":
            return self._challenge(stale=state == "stale")
        stored = self._phones.get(to_user)
        if stored is None or not self._response_ok(auth, stored, msg.method):
            return self._refuse("wrong credentials")
        return self._bind(msg, to_user, peer)

    def _response_ok(self, auth: dict[str, str], stored_ha1: str, method: str) -> bool:
        if auth.get("algorithm", "MD5").upper() != "MD5":
            return False
        ha2 = md5(f"{method}:{auth.get('uri', '')}")
        nonce = auth.get("nonce", "")
        if auth.get("qop") == "auth":
            want = md5(f"{stored_ha1}:{nonce}:{auth.get('nc', '')}:{auth.get('cnonce', '')}:auth:{ha2}")
        elif "qop" in auth:
            return False
        else:
            want = md5(f"{stored_ha1}:{nonce}:{ha2}")
        return hmac.compare_digest(want, auth.get("response", "").lower())

    def _challenge(self, stale: bool) -> tuple[int, list[tuple[str, str]], str]:
        value = f'Digest realm="{self.realm}", nonce="{self.nonce()}", algorithm=MD5, qop="auth"'
        if stale:
            value += ", stale=true"
        return 401, [("www-authenticate", value)], ""

    def _refuse(self, why: str) -> tuple[int, list[tuple[str, str]], str]:
        self.refused += 1
        return 403, [], f"Forbidden ({why})"

    def _bind(self, msg: Message, code: str, peer: Address) -> tuple[int, list[tuple[str, str]], str]:
        contacts = msg.all("contact")
        now = self._clock()
        if not contacts:
            # A query: the current binding, if any (§10.2.3).
            current = self.bindings.get(code)
            extra = (
                [("contact", f"<{current.contact}>;expires={int(current.expires_at - now)}")]
                if current
                else []
            )
            return 200, extra, ""
        if len(contacts) > 1 or contacts[0].strip() == "*":
            expires = (msg.get("expires") or "").strip()
            if contacts[0].strip() == "*" and expires == "0":
                self.bindings.pop(code, None)
                log.info("phone of agent %s unregistered", code)
                return 200, [], ""
            return 400, [], "Bad Request (one Contact per phone)"
        try:
            contact = NameAddr.parse(contacts[0])
        except SipParseError:
            return 400, [], "Bad Request (bad Contact)"
        asked = (
            contact.params.get("expires")
            or (msg.get("expires") or "").strip()
            or str(self.config.max_expires_s)
        )
        if not is_digits(asked):
            return 400, [], "Bad Request (bad expires)"
        seconds = int(asked)
        if seconds == 0:
            self.bindings.pop(code, None)
            log.info("phone of agent %s unregistered", code)
            return 200, [], ""
        if seconds < self.config.min_expires_s:
            return 423, [("min-expires", str(self.config.min_expires_s))], "Interval Too Brief"
        seconds = min(seconds, self.config.max_expires_s)
        self.bindings[code] = Binding(code, contact.uri, peer, now + seconds)
        log.info("phone of agent %s registered at %s for %d s", code, contact.uri, seconds)
        return 200, [("contact", f"<{contact.uri}>;expires={seconds}")], ""

    def phone_of(self, code: str) -> Binding | None:
        """Where the agent's phone is now (None: not registered, or its registration lapsed)."""
        binding = self.bindings.get(code)
        if binding is None or binding.expires_at < self._clock():
            return None
        return binding
