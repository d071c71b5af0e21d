"""The login throttle, in virtual time: what an attacker gets, and that lockouts end."""

from __future__ import annotations

from vcc.login_guard import LoginGuard, LoginPolicy

HOUR = 3600.0


def guesses_in(
    guard: LoginGuard, seconds: float, codes: list[str], sources: list[str], every_s: float
) -> int:
    """An attacker who tries a wrong password every `every_s` seconds, cycling over codes and
    sources, for `seconds`: how many guesses the guard let through to the password check."""
    tried, t, i = 0, 0.0, 0
    while t < seconds:
        code, source = codes[i % len(codes)], sources[i % len(sources)]
        if not guard.refusal(t, code, source):
            tried += 1
            guard.failed(t, code, source)
        t += every_s
        i += 1
    return tried


def test_guesses_against_one_code_are_bounded_whatever_the_sources() -> None:
    policy = LoginPolicy()
    # From a thousand sources, as fast as it likes (10 per second), for an hour.
    got = guesses_in(
        LoginGuard(policy), HOUR, ["1001"], [f"10.0.{i // 250}.{i % 250}" for i in range(1000)], 0.1
    )
    # 5 guesses, then 15 minutes locked: 4 rounds in an hour.
    assert got == 5 * 4
    assert got / 60 <= 0.34  # guesses per minute (docs/SECURITY.md)


def test_guesses_from_one_source_are_bounded_whatever_the_codes() -> None:
    policy = LoginPolicy()
    codes = [f"{n:04d}" for n in range(10_000)]
    got = guesses_in(LoginGuard(policy), HOUR, codes, ["10.0.0.1"], 0.1)
    # 20 guesses, then 10 minutes locked: 6 rounds in an hour.
    assert got == 20 * 6
    assert got / 60 == 2.0  # guesses per minute (docs/SECURITY.md)


def test_a_lockout_is_reported_once_and_ends() -> None:
    guard = LoginGuard(LoginPolicy(code_failures=3, code_lockout_s=60, source_failures=100))
    reported = [guard.failed(t, "1001", "s") for t in (0.0, 1.0, 2.0)]
    assert [len(r) for r in reported] == [0, 0, 1]
    assert reported[2][0].kind == "code" and reported[2][0].until == 62.0
    assert guard.refusal(61.9, "1001", "s") == "code-locked"
    # Another code from the same source is not locked by this one.
    assert guard.refusal(10.0, "1002", "s") == ""
    assert guard.refusal(62.0, "1001", "s") == ""


def test_unknown_codes_lock_like_real_ones() -> None:
    guard = LoginGuard(LoginPolicy(code_failures=2, source_failures=100))
    for t in (0.0, 1.0):
        guard.failed(t, "9999", "s")
    assert guard.refusal(2.0, "9999", "s") == "code-locked"


def test_failures_outside_the_window_are_forgotten_and_success_forgives_the_code() -> None:
    guard = LoginGuard(LoginPolicy(code_failures=3, code_window_s=10, source_failures=100))
    guard.failed(0.0, "1001", "s")
    guard.failed(1.0, "1001", "s")
    assert guard.failed(20.0, "1001", "s") == []  # the first two are out of the window
    guard.succeeded("1001")
    assert guard.failed(21.0, "1001", "s") == [] and guard.failed(22.0, "1001", "s") == []


def test_memory_is_bounded_under_a_spray() -> None:
    guard = LoginGuard(LoginPolicy(max_tracked=100))
    for n in range(1000):
        guard.failed(float(n), f"{n:04d}", f"h{n}")
    assert len(guard._codes) <= 100 and len(guard._sources) <= 100
