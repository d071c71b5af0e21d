"""Agents' phones register with digest authentication: challenged without credentials, refused
with wrong ones, bound with the right ones; a real softphone (baresip) registers the same way."""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from pathlib import Path

import pytest

from site_node.app import SiteNode
from tests.helpers import eventually, full_width
from tests.sip.conftest import PHONE_PASSWORD
from tests.sip.raw import RawPeer, header


def target(node: SiteNode) -> str:
    assert node.sip is not None
    return node.sip.address


def md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def register(
    peer: RawPeer, target: str, code: str, *, cseq: int = 1, auth: str = "", expires: int | str = 120
) -> bytes:
    lines = [
        f"REGISTER sip:{target} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{peer.port};branch=z9hG4bK{secrets.token_hex(6)};rport",
        f"From: <sip:{code}@{target}>;tag={secrets.token_hex(4)}",
        f"To: <sip:{code}@{target}>",
        "Call-ID: reg-" + code,
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{code}@127.0.0.1:{peer.port}>",
        f"Expires: {expires}",
        "Max-Forwards: 70",
    ]
    if auth:
        lines.append(f"Authorization: {auth}")
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def answer(challenge: bytes, code: str, target: str, password: str) -> str:
    nonce = re.search(r'nonce="([^"]+)"', header(challenge, "WWW-Authenticate"))
    assert nonce is not None
    uri, cnonce, nc = f"sip:{target}", secrets.token_hex(4), "00000001"
    ha1 = md5(f"{code}:vcc:{password}")
    response = md5(f"{ha1}:{nonce.group(1)}:{nc}:{cnonce}:auth:{md5(f'REGISTER:{uri}')}")
    return (
        f'Digest username="{code}", realm="vcc", nonce="{nonce.group(1)}", uri="{uri}", '
        f'response="{response}", algorithm=MD5, cnonce="{cnonce}", qop=auth, nc={nc}'
    )


@pytest.fixture
async def peer() -> object:
    p = await RawPeer.open()
    yield p
    p.close()


async def challenged(node: SiteNode, peer: RawPeer, code: str) -> bytes:
    """The 401 a REGISTER without credentials gets."""
    peer.send(register(peer, target(node), code), target(node))
    status, challenge = await peer.status()
    assert status == 401 and 'realm="vcc"' in header(challenge, "WWW-Authenticate")
    return challenge


async def test_a_phone_is_challenged_refused_with_a_wrong_password_and_bound_with_the_right_one(
    sip_node: SiteNode, peer: RawPeer
) -> None:
    assert sip_node.registrar is not None
    code = sip_node.site.agents[0].code
    challenge = await challenged(sip_node, peer, code)
    wrong = answer(challenge, code, target(sip_node), "9999")
    peer.send(register(peer, target(sip_node), code, cseq=2, auth=wrong), target(sip_node))
    assert (await peer.status())[0] == 403
    assert sip_node.registrar.phone_of(code) is None
    right = answer(challenge, code, target(sip_node), PHONE_PASSWORD)
    peer.send(register(peer, target(sip_node), code, cseq=3, auth=right), target(sip_node))
    status, ok = await peer.status()
    assert status == 200 and "expires=120" in header(ok, "Contact")
    binding = sip_node.registrar.phone_of(code)
    assert binding is not None and binding.contact == f"sip:{code}@127.0.0.1:{peer.port}"
    # Credentials of one agent do not register another; an unknown user is refused too.
    other = sip_node.site.agents[1].code
    peer.send(register(peer, target(sip_node), other, cseq=4, auth=right), target(sip_node))
    assert (await peer.status())[0] == 403
    # Expires 0 removes the binding.
    again = answer(challenge, code, target(sip_node), PHONE_PASSWORD)
    peer.send(register(peer, target(sip_node), code, cseq=5, auth=again, expires=0), target(sip_node))
    assert (await peer.status())[0] == 200
    assert sip_node.registrar.phone_of(code) is None


async def test_an_expires_in_full_width_digits_is_a_bad_request_and_binds_nothing(
    sip_node: SiteNode, peer: RawPeer
) -> None:
    """int() reads full-width digits (U+FF10 to U+FF19); SIP's DIGIT is ASCII: 400, no binding."""
    assert sip_node.registrar is not None
    code = sip_node.site.agents[0].code
    challenge = await challenged(sip_node, peer, code)
    right = answer(challenge, code, target(sip_node), PHONE_PASSWORD)
    odd = register(peer, target(sip_node), code, cseq=2, auth=right, expires=full_width("120"))
    peer.send(odd, target(sip_node))
    status, refused = await peer.status()
    assert status == 400 and b"bad expires" in refused
    assert sip_node.registrar.phone_of(code) is None


async def test_a_forged_nonce_is_challenged_again(sip_node: SiteNode, peer: RawPeer) -> None:
    code = sip_node.site.agents[0].code
    forged = (
        f'Digest username="{code}", realm="vcc", nonce="1.000.deadbeef", uri="sip:x", '
        f'response="{"0" * 32}", algorithm=MD5'
    )
    peer.send(register(peer, target(sip_node), code, auth=forged), target(sip_node))
    assert (await peer.status())[0] == 401


async def test_baresip_registers_as_an_agents_phone(sip_node: SiteNode, tmp_path: Path) -> None:
    """An independent SIP user agent does the digest exchange itself."""
    assert sip_node.registrar is not None
    registrar = sip_node.registrar
    code = sip_node.site.agents[0].code
    conf = tmp_path / "baresip"
    conf.mkdir()
    (conf / "config").write_text(
        "sip_listen 127.0.0.1:0\nnet_interface 127.0.0.1\naudio_player aubridge,nil\n"
        "audio_source aubridge,nil\nmodule_path /usr/lib/baresip/modules\nmodule g711.so\n"
        "module aubridge.so\nmodule_app account.so\n"
    )
    (conf / "accounts").write_text(f"<sip:{code}@{target(sip_node)}>;auth_pass={PHONE_PASSWORD};regint=120\n")
    proc = await asyncio.create_subprocess_exec(
        "baresip", "-f", str(conf), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:

        async def bound() -> bool:
            return registrar.phone_of(code) is not None

        await eventually(bound, what="baresip's registration")
        binding = registrar.phone_of(code)
        # baresip's own Contact (its user is its own); the phone is reached where it registered from.
        assert binding is not None and binding.contact.endswith(f"@127.0.0.1:{binding.source[1]}")
    finally:
        proc.terminate()
        await proc.wait()
