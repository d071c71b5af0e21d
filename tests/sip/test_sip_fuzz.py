"""Bad input on the SIP side: mutated SIP messages sent over UDP to a running site node (its own
process, with its rtpengine). Every answer is one a UAS may give (never a 5xx but 513), a probe
right after each one is still answered, nothing is created, and the node logs no failure."""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.support import password_hash, site_summary
from tests.sip.conftest import rtp_base
from tools.province.cluster import Cluster
from tools.province.generate import SiteSpec, generate_province, write_province
from tools.province.netutil import free_port
from tools.province.sip import add_sip

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

ALLOWED = {200, 400, 401, 403, 404, 405, 423, 481, 482, 483, 488, 513}
MAX_MESSAGE = 8192


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("fuzz")
    raw = generate_province(
        [SiteSpec("gz", "Guangzhou", trunk_channels=2, agents={"general": 1})],
        etcd_endpoint="127.0.0.1:2379",
        central_listen=f"127.0.0.1:{free_port()}",
        database_url=f"sqlite+aiosqlite:///{tmp / 'central.db'}",
        password_hash=password_hash(),
        outbox_dir=tmp / "outbox",
    )
    add_sip(raw, prompts_dir="prompts", rtp_base=rtp_base() + 400)
    config = write_province(raw, tmp / "province.yaml")
    cluster = asyncio.run(Cluster.start(config, tmp / "run"))
    yield cluster
    asyncio.run(cluster.stop())


def base_messages(target: str, port: int) -> list[bytes]:
    """Requests that must change nothing: an unknown number, requests outside any dialog."""
    tag, cid, branch = secrets.token_hex(4), secrets.token_hex(8), "z9hG4bK" + secrets.token_hex(6)
    common = (
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport\r\n"
        f"From: <sip:13800000003@127.0.0.1:{port}>;tag={tag}\r\n"
        "To: <sip:99999@{target}>{to_tag}\r\n"
        f"Call-ID: {cid}\r\nMax-Forwards: 70\r\n"
    )
    sdp = "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 8\r\n"
    out = []
    for method, to_tag, body in (
        ("INVITE", "", sdp),
        ("BYE", ";tag=abc", ""),
        ("CANCEL", "", ""),
        ("OPTIONS", "", ""),
        ("INFO", ";tag=abc", ""),
        ("REGISTER", "", ""),
        ("ACK", ";tag=abc", ""),
    ):
        head = f"{method} sip:99999@{target} SIP/2.0\r\n" + common.format(target=target, to_tag=to_tag)
        head += f"CSeq: 7 {method}\r\n"
        if body:
            head += "Content-Type: application/sdp\r\n"
        out.append((head + f"Content-Length: {len(body)}\r\n\r\n" + body).encode())
    return out


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "dup_line", "drop_line", "garble_value",
                                     "oversize", "lf_only", "number"]))  # fmt: skip
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind in ("dup_line", "drop_line", "garble_value"):
            lines = bytes(data).split(b"\r\n")
            i = draw(st.integers(0, len(lines) - 1))
            if kind == "dup_line":
                lines.insert(i, lines[i])
            elif kind == "drop_line":
                del lines[i]
            else:
                name = lines[i].split(b":", 1)[0]
                lines[i] = name + b": " + draw(st.binary(max_size=200)).replace(b"\r\n", b"")
            data = bytearray(b"\r\n".join(lines))
        elif kind == "oversize":
            pad = b"X-Pad: " + b"a" * (MAX_MESSAGE + draw(st.integers(1, 4000))) + b"\r\n"
            first = bytes(data).find(b"\r\n") + 2
            data[first:first] = pad
        elif kind == "lf_only":
            data = bytearray(bytes(data).replace(b"\r\n", b"\n"))
        elif kind == "number":
            # A Content-Length or CSeq out of range, negative or not a number.
            value = draw(st.sampled_from([b"-1", b"99999999", b"4294967296", b"x", b"", b"1e3"]))
            data = bytearray(re.sub(rb"(Content-Length|CSeq): \d+", rb"\1: " + value, bytes(data), count=1))
    return bytes(data)


def exchange(target: str, datagram_fn: st.DataObject) -> tuple[list[int], bytes]:
    """Send one mutated message and then a probe (OPTIONS) from one fresh socket; every answer
    to the message arrives before the probe's, since the node answers in order."""
    host, port = target.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5.0)
        me = s.getsockname()[1]
        bases = base_messages(target, me)
        base = datagram_fn.draw(st.sampled_from(bases))
        message = datagram_fn.draw(mutated(base))
        s.sendto(message, (host, int(port)))
        probe_id = secrets.token_hex(8)
        probe = (
            f"OPTIONS sip:99999@{target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{probe_id}\r\n"
            f"From: <sip:probe@127.0.0.1:{me}>;tag=p\r\nTo: <sip:99999@{target}>\r\nCall-ID: {probe_id}\r\n"
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        s.sendto(probe, (host, int(port)))
        statuses: list[int] = []
        while True:
            data = s.recv(65535)
            m = re.match(rb"SIP/2.0 (\d{3})", data)
            assert m is not None, data[:200]
            if probe_id.encode() in data and b"OPTIONS" in data:
                assert int(m.group(1)) == 200
                return statuses, message
            statuses.append(int(m.group(1)))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_sip_messages_get_lawful_answers_and_change_nothing(
    site: Cluster, data: st.DataObject
) -> None:
    sip = site.config.site("gz").sip
    assert sip is not None
    statuses, message = exchange(sip.listen, data)
    assert set(statuses) <= ALLOWED, (statuses, message[:300])
    # At most one final answer per request (retransmissions come later, after the probe).
    assert len([s for s in statuses if s >= 200]) <= 1, (statuses, message[:300])


def test_after_the_fuzzing_nothing_was_created_and_nothing_failed(site: Cluster) -> None:
    summary = asyncio.run(site_summary(site, "gz"))
    assert summary.calls_offered == 0 and summary.calls_in_progress == 0
    assert site.site_alive("gz")
    log = Path(site.logs_dir / "site-gz.log").read_text(errors="replace")
    assert "not handled" not in log and "Traceback" not in log
