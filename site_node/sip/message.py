"""SIP messages (RFC 3261 §7): a strict, bounded parser and the builders a UAS needs.

Anything that does not parse raises SipParseError; whoever holds the datagram decides whether
a 400 can be sent (it needs Via, From, To, Call-ID and CSeq) or the datagram is dropped.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

from vcc.digits import is_digits

MAX_HEADERS = 100
MAX_HEADER_LINE = 4096

# Compact forms (RFC 3261 §7.3.3 and the registry) -> canonical lower-case names.
COMPACT = {
    "i": "call-id",
    "f": "from",
    "t": "to",
    "v": "via",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
    "o": "event",
    "r": "refer-to",
    "x": "session-expires",
}
# Headers whose comma-separated values are separate entries (the ones a UAS reads as lists).
LIST_HEADERS = frozenset({"via", "record-route", "route"})
CANONICAL = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "x-vcc-call-id": "X-VCC-Call-ID",
    "max-forwards": "Max-Forwards",
}
METHOD = re.compile(r"^[A-Za-z][A-Za-z0-9.!%*_+`'~-]{0,31}$")
TOKEN_CHARS = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
REASONS = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    503: "Service Unavailable",
    505: "Version Not Supported",
    513: "Message Too Large",
}
CRLF = "\r\n"


class SipParseError(ValueError):
    """Not a SIP message we can read."""


@dataclass(slots=True)
class Message:
    """A request (method set) or a response (status set). Header names are lower case."""

    method: str = ""
    uri: str = ""
    status: int = 0
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return bool(self.method)

    def get(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key == name]

    def need(self, name: str) -> str:
        value = self.get(name)
        if value is None or not value.strip():
            raise SipParseError(f"missing {name} header")
        return value

    @property
    def call_id(self) -> str:
        return self.need("call-id").strip()

    @property
    def cseq(self) -> tuple[int, str]:
        parts = self.need("cseq").split()
        if len(parts) != 2 or not is_digits(parts[0]) or len(parts[0]) > 10:
            raise SipParseError("bad CSeq")
        number = int(parts[0])
        if number >= 2**31:
            raise SipParseError("CSeq number out of range")
        return number, parts[1]

    @property
    def top_via(self) -> Via:
        return Via.parse(self.need("via"))

    def encode(self) -> bytes:
        if self.is_request:
            start = f"{self.method} {self.uri} SIP/2.0"
        else:
            start = f"SIP/2.0 {self.status} {self.reason or REASONS.get(self.status, 'Unknown')}"
        lines = [start]
        for key, value in self.headers:
            if key != "content-length":
                lines.append(f"{_canonical(key)}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        return (CRLF.join(lines) + CRLF + CRLF).encode() + self.body


def _canonical(name: str) -> str:
    return CANONICAL.get(name) or "-".join(part.capitalize() for part in name.split("-"))


def parse(data: bytes) -> Message:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        # Some senders end lines with a bare LF (tolerated by RFC 3261 §7.5 implementations).
        head, sep, body = data.partition(b"\n\n")
        if not sep:
            raise SipParseError("no end of headers")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("headers are not UTF-8") from None
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[0]:
        lines.pop(0)  # keep-alive CRLFs before a message
    if not lines:
        raise SipParseError("empty message")
    msg = _start_line(lines[0])
    _headers(msg, lines[1:])
    length = msg.get("content-length")
    if length is not None:
        length = length.strip()
        if not is_digits(length) or len(length) > 6:
            raise SipParseError("bad Content-Length")
        n = int(length)
        if n > len(body):
            raise SipParseError("body shorter than Content-Length")
        body = body[:n]
    msg.body = body
    return msg


def _start_line(line: str) -> Message:
    if len(line) > MAX_HEADER_LINE:
        raise SipParseError("start line too long")
    if line.startswith("SIP/"):
        parts = line.split(" ", 2)
        if len(parts) < 2 or parts[0] != "SIP/2.0" or not is_digits(parts[1]) or len(parts[1]) != 3:
            raise SipParseError("bad status line")
        status = int(parts[1])
        if not 100 <= status <= 699:
            raise SipParseError("status out of range")
        return Message(status=status, reason=parts[2] if len(parts) > 2 else "")
    parts = line.split(" ")
    if len(parts) != 3:
        raise SipParseError("bad request line")
    method, uri, version = parts
    if not METHOD.match(method):
        raise SipParseError("bad method")
    if version != "SIP/2.0":
        raise SipParseError("unsupported SIP version")
    if not re.match(r"^(sips?|tel):[^\s]+$", uri, re.IGNORECASE):
        raise SipParseError("bad Request-URI")
    return Message(method=method, uri=uri)


def _headers(msg: Message, lines: list[str]) -> None:
    for line in lines:
        if len(line) > MAX_HEADER_LINE:
            raise SipParseError("header line too long")
        if line[:1] in (" ", "\t"):
            # A folded continuation line belongs to the header above it.
            if not msg.headers:
                raise SipParseError("continuation before any header")
            key, value = msg.headers[-1]
            msg.headers[-1] = (key, value + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not name or not TOKEN_CHARS.match(name):
            raise SipParseError("bad header line")
        name = COMPACT.get(name, name)
        value = value.strip()
        if name in LIST_HEADERS:
            msg.headers.extend((name, part) for part in split_commas(value))
        else:
            msg.headers.append((name, value))
        if len(msg.headers) > MAX_HEADERS:
            raise SipParseError("too many headers")


def split_commas(value: str) -> list[str]:
    """Split a header value at commas outside quotes and angle brackets."""
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    for i, ch in enumerate(value):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and not quoted and depth == 0:
            parts.append(value[start:i].strip())
            start = i + 1
    parts.append(value[start:].strip())
    return [p for p in parts if p]


@dataclass(frozen=True, slots=True)
class Via:
    transport: str
    host: str
    port: int
    params: dict[str, str]

    @property
    def branch(self) -> str:
        return self.params.get("branch", "")

    @classmethod
    def parse(cls, value: str) -> Via:
        m = re.match(r"^SIP\s*/\s*2\.0\s*/\s*([A-Za-z]+)\s+([^;\s]+)\s*(;.*)?$", value.strip())
        if m is None:
            raise SipParseError("bad Via")
        host, port = split_host_port(m.group(2), 5060)
        return cls(m.group(1).upper(), host, port, _params(m.group(3) or ""))


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise SipParseError("empty host")
    if not port_text:
        return host, default_port
    if not is_digits(port_text) or not 0 < int(port_text) < 65536:
        raise SipParseError("bad port")
    return host, int(port_text)


def _params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for raw in text.split(";"):
        part = raw.strip()
        if part:
            key, _, value = part.partition("=")
            params[key.strip().lower()] = value.strip()
    return params


@dataclass(frozen=True, slots=True)
class NameAddr:
    """From, To, Contact: `"name" <uri>;params` or `uri;params`."""

    uri: str
    params: dict[str, str]
    raw: str

    @property
    def tag(self) -> str:
        return self.params.get("tag", "")

    @property
    def user(self) -> str:
        return uri_user(self.uri)

    @classmethod
    def parse(cls, value: str) -> NameAddr:
        value = value.strip()
        if "<" in value:
            start = value.index("<")
            end = value.find(">", start)
            if end < 0:
                raise SipParseError("unclosed <")
            uri = value[start + 1 : end]
            params = _params(value[end + 1 :])
        else:
            uri, _, rest = value.partition(";")
            params = _params(rest)
        if not re.match(r"^(sips?|tel):\S+$", uri, re.IGNORECASE):
            raise SipParseError("bad URI")
        return cls(uri.strip(), params, value)


def uri_user(uri: str) -> str:
    """The user part of sip:user@host (a tel: URI's number), '' when there is none."""
    scheme, _, rest = uri.partition(":")
    if scheme.lower() == "tel":
        return rest.split(";", 1)[0]
    if "@" not in rest:
        return ""
    return rest.split("@", 1)[0].split(";", 1)[0]


def uri_host_port(uri: str) -> tuple[str, int]:
    """Where a sip: URI points (its host and port, 5060 by default)."""
    _, _, rest = uri.partition(":")
    rest = rest.split("@", 1)[-1]
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    return split_host_port(rest, 5060)


def session_interval(value: str) -> int:
    """The seconds of a Session-Expires (or Min-SE) value: `1800;refresher=uac`."""
    seconds = value.split(";", 1)[0].strip()
    if not is_digits(seconds) or len(seconds) > 6:
        raise SipParseError("bad Session-Expires")
    return int(seconds)


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    # The magic cookie marks an RFC 3261 branch (§8.1.1.7).
    return "z9hG4bK" + secrets.token_hex(10)


def response(
    request: Message, status: int, *, to_tag: str = "", extra: list[tuple[str, str]] | None = None,
    body: bytes = b"", reason: str = "",
) -> Message:  # fmt: skip
    """A response to `request` (§8.2.6): Via, From, Call-ID and CSeq copied, To with our tag."""
    headers: list[tuple[str, str]] = [("via", v) for v in request.all("via")]
    headers.append(("from", request.need("from")))
    to = request.need("to")
    if to_tag and status != 100 and ";tag=" not in to.replace(" ", "").lower():
        to = f"{to};tag={to_tag}"
    headers.append(("to", to))
    headers.append(("call-id", request.call_id))
    headers.append(("cseq", request.need("cseq")))
    headers.extend(extra or [])
    return Message(status=status, reason=reason, headers=headers, body=body)
