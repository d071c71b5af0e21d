"""The person assertion's checks, each fed a broken one (the cluster test shows them end to end)."""

from __future__ import annotations

import time

import pytest

from tests.security.conftest import Certs
from vcc.person_assertion import (
    REVOCATION_KEPT_S,
    AssertionRefused,
    PersonClaim,
    PersonGate,
    PersonSigner,
    Revocations,
    revoked_agent,
    verify,
)

DESK = "/vcc.v1.CustomerService/GetCustomer"
LEADERS_ONLY = "/vcc.v1.TicketService/GetTicketReport"
ROLES = {"gz": {"1001": "agent", "1090": "group_leader"}, "sz": {"2001": "agent"}}


def gate(certs: Certs, roster: set[tuple[str, str]] = frozenset()) -> PersonGate:  # type: ignore[assignment]
    return PersonGate(certs.folder / "ca.crt", ROLES, roster_agent=lambda site, code: (site, code) in roster)


def refusal(
    certs: Certs, token: str | None, *, method: str = DESK, caller: tuple[str, str] = ("desktop", "robots")
) -> str:
    with pytest.raises(AssertionRefused) as info:
        gate(certs).admit(method, caller[0], caller[1], token)
    return str(info.value)


def test_a_good_assertion_names_the_person_and_the_role_from_the_config(certs: Certs) -> None:
    gz = PersonSigner(certs.files("site-gz"), "gz")
    acting = gate(certs).admit(DESK, "desktop", "robots", gz.sign("1090", "session-token"))
    assert (acting.claim.site, acting.claim.agent, acting.role) == ("gz", "1090", "group_leader")
    assert "session-token" not in gz.sign("1090", "session-token")  # only its digest travels
    # The site itself carries its own people's assertions.
    assert gate(certs).admit(DESK, "site", "gz", gz.sign("1001", "s")).role == "agent"
    # An agent the site reports but the config does not name (added at runtime): an agent.
    added = gate(certs, {("gz", "0190")}).admit(DESK, "site", "gz", gz.sign("0190", "s"))
    assert added.role == "agent"


def test_broken_assertions_are_refused(certs: Certs) -> None:
    gz = PersonSigner(certs.files("site-gz"), "gz")
    good = gz.sign("1001", "s")
    _, payload, signature, cert = good.split(".")
    other = PersonSigner(certs.files("site-sz"), "sz").sign("2001", "s")
    cases = {
        "none": (None, "no person"),
        "malformed": ("v1.only.three", "malformed"),
        "version": (f"v2.{payload}.{signature}.{cert}", "malformed"),
        "not base64": ("v1.@@@.@@@.@@@", "malformed"),
        "too long": ("v1." + "a" * 5000, "too long"),
        "other signature": (f"v1.{payload}.{other.split('.')[2]}.{cert}", "signature does not match"),
        "other certificate": (f"v1.{payload}.{signature}.{other.split('.')[3]}", "signature does not match"),
        "gz signs as sz": (PersonSigner(certs.files("site-gz"), "sz").sign("2001", "s"), "site 'gz' signed"),
        "expired": (gz.sign("1001", "s", ttl_s=-120), "expired"),
        "foreign CA": (PersonSigner(certs.foreign_files("site-gz"), "gz").sign("1001", "s"), "province CA"),
        "a tool signs": (PersonSigner(certs.files("tool-cli"), "gz").sign("1001", "s"), "not by a site"),
        "unknown site": (PersonSigner(certs.files("site-xx"), "xx").sign("1001", "s"), "not in the province"),
        "not of that site": (gz.sign("2001", "s"), "not a person of site gz"),
        "role": (good, "a agent may not call this"),
    }
    for name, (token, why) in cases.items():
        method = LEADERS_ONLY if name == "role" else DESK
        assert why in refusal(certs, token, method=method), name
    # A site's certificate carrying another site's (valid) assertion.
    assert "speaks for its own people only" in refusal(certs, other, caller=("site", "gz"))
    # A method of the service desk not in the table is refused to every person.
    assert "may not call this" in refusal(certs, gz.sign("1090", "s"), method="/vcc.v1.TicketService/NoSuch")


def test_only_sites_and_desktops_at_the_service_desk_need_a_person(certs: Certs) -> None:
    g = gate(certs)
    assert g.applies(DESK, "desktop") and g.applies(DESK, "site")
    assert not g.applies(DESK, "tool")
    assert not g.applies("/vcc.v1.CentralService/LookupCustomer", "site")
    assert g.applies("/vcc.v1.TicketService/NoSuch", "desktop")


def test_verify_alone_checks_the_times(certs: Certs) -> None:
    now = time.time()
    gz = PersonSigner(certs.files("site-gz"), "gz", clock=lambda: now)
    token = gz.sign("1001", "s", ttl_s=60)
    ca = (certs.folder / "ca.crt").read_bytes()
    assert verify(token, ca, now + 30).agent == "1001"
    with pytest.raises(AssertionRefused, match="expired"):
        verify(token, ca, now + 100)  # past its end and the clocks' allowance
    with pytest.raises(AssertionRefused, match="expired"):
        verify(token, ca, now - 100)  # issued in the future
    with pytest.raises(AssertionRefused, match="not valid now"):
        verify(token, ca, now + 400 * 86400)  # past the certificate's year


def test_a_revocation_refuses_the_assertions_issued_before_it_only(certs: Certs) -> None:
    t0 = time.time()
    now = [t0]
    gz = PersonSigner(certs.files("site-gz"), "gz", clock=lambda: now[0])
    revocations = Revocations(clock=lambda: now[0])
    check = PersonGate(certs.folder / "ca.crt", ROLES, revocations=revocations, clock=lambda: now[0])
    before = gz.sign("1001", "first-session")
    other = gz.sign("1090", "leader-session")
    now[0] = t0 + 10
    # The site's entries as central reads them: a lockout of a source and a revocation of another
    # site's agent revoke nothing here; the agent's own revocation does.
    for action, site, target, detail in (
        ("lockout", "gz", "1001", {"kind": "source"}),
        ("login-failed", "gz", "1001", {}),
        ("person-revoked", "sz", "1001", {}),
    ):
        agent = revoked_agent(action, target, detail)
        if agent:
            revocations.note(site, agent, now[0])
    assert check.admit(DESK, "desktop", "robots", before).claim.agent == "1001"
    for action, detail in (("person-revoked", {}), ("agent-disable", {}), ("lockout", {"kind": "code"})):
        assert revoked_agent(action, "1001", detail) == "1001"
    revocations.note("gz", revoked_agent("person-revoked", "1001", {}), t0 + 5)
    with pytest.raises(AssertionRefused, match="session it was issued for has ended"):
        check.admit(DESK, "desktop", "robots", before)
    # Another agent of the site, and an assertion issued after the revocation: honoured.
    assert check.admit(DESK, "desktop", "robots", other).claim.agent == "1090"
    after = gz.sign("1001", "second-session")
    assert check.admit(DESK, "desktop", "robots", after).claim.agent == "1001"
    # An older revocation arriving late does not move the time back.
    revocations.note("gz", "1001", t0 - 100)
    with pytest.raises(AssertionRefused):
        check.admit(DESK, "desktop", "robots", before)
    # Kept only while an assertion issued before it could still be honoured.
    now[0] = t0 + 5 + REVOCATION_KEPT_S + 1
    revocations.prune()
    assert not revocations.revokes(PersonClaim("gz", "1001", "x", t0, t0 + 300))
