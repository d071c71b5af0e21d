"""Structured logs: JSON lines with the ids bound, phone numbers masked, and one line per state
transition of a call or an agent, written by the adapter from the pure call control's effects."""

from __future__ import annotations

import io
import itertools
import json
import logging
from collections.abc import Iterator

import pytest

from site_node.callcontrol.domain import Effect
from site_node.transition_log import TransitionLog
from tests.site_node.test_switchboard import offer, ready_agents, switchboard
from vcc import logs

ANI = "13800000007"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing JSON lines into a buffer through vcc's filter and formatter."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(logs._Context())
    handler.setFormatter(logs.JsonFormatter("site:gz"))
    logger = logging.getLogger("vcc.test.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, out
    logger.removeHandler(handler)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_carry_the_bound_ids_and_mask_phone_numbers(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = captured
    logs.bind_context(site="gz")
    with logs.bind(call_id="c-1", agent_code="1001"):
        logger.info("caller %s waits", ANI, extra={"ani": ANI})
    logger.warning("outside the call")
    first, second = lines(out)
    assert first["site"] == "gz" and first["call_id"] == "c-1" and first["agent_code"] == "1001"
    assert first["msg"] == "caller 138****0007 waits" and first["ani"] == "138****0007"
    assert ANI not in out.getvalue()
    assert second["level"] == "WARNING" and "call_id" not in second and second["site"] == "gz"
    assert {"ts", "process", "logger"} <= set(first)


def test_masking_keeps_ids_and_short_numbers_whole() -> None:
    assert logs.mask_phones("from 13800000007 to 10000, call 5f3a1234567b, port 7101") == (
        "from 138****0007 to 10000, call 5f3a1234567b, port 7101"
    )
    assert logs.mask_phone("02088886666") == "020****6666"
    assert logs.mask_phone("8886666") == "88***66"


def test_the_log_format_is_checked() -> None:
    assert logs.log_format("JSON") == "json"
    assert logs.log_format(None) in logs.FORMATS
    with pytest.raises(ValueError, match="log format"):
        logs.log_format("xml")


def test_one_line_per_transition_of_the_call_and_the_agent(caplog: pytest.LogCaptureFixture) -> None:
    sb = switchboard()
    transitions = TransitionLog("gz")
    effects: list[Effect] = []
    caplog.set_level(logging.INFO, logger="vcc.transitions")
    effects += ready_agents(sb, 1.0, "0101")
    call_id, fx = offer(sb, 2.0, "k1", ani=ANI)
    effects += fx
    effects += sb.caller_digits(2.5, call_id, "2")
    effects += sb.answer(3.0, "0101", call_id)
    effects += sb.caller_hang_up(9.0, call_id)
    transitions.observe(effects)
    records = [r for r in caplog.records if r.name == "vcc.transitions"]
    call_records = [
        r for r in records if r.getMessage().startswith("call") and r.__dict__["call_id"] == call_id
    ]
    agent_records = [r for r in records if r.getMessage().startswith("agent")]
    call_lines = [r.getMessage() for r in call_records]
    agent_lines = [r.getMessage() for r in agent_records]
    assert call_lines[0] == "call NEW -[ARRIVED]-> ARRIVING"
    for line in (
        "call IVR -[QUEUED]-> QUEUED",
        "call QUEUED -[RINGING]-> RINGING",
        "call RINGING -[ANSWERED]-> TALKING",
    ):
        assert call_lines.count(line) == 1, (line, call_lines)
    assert call_lines[-1].endswith("-[ENDED]-> ENDED")
    # Nothing after the end reads as a new call (an abandoned call's ENDED follows ABANDONED).
    assert not any(line.startswith("call NEW") for line in call_lines[1:]), call_lines
    assert "agent LOGGED_OUT -[LogIn:login]-> NOT_READY" in agent_lines
    # A caller who hangs up while queued: ABANDONED, then the trunk's ENDED, from ENDED.
    gone, fx = offer(sb, 10.0, "k2", ani=ANI)
    fx += sb.caller_digits(10.5, gone, "2")
    fx += sb.caller_hang_up(11.0, gone)
    caplog.clear()
    transitions.observe(fx)
    ends = [r.getMessage() for r in caplog.records if r.__dict__.get("call_id") == gone]
    assert ends[-2:] == ["call QUEUED -[ABANDONED]-> ENDED", "call ENDED -[ENDED]-> ENDED"], ends
    assert "agent READY -[Offer]-> RINGING" in agent_lines
    assert "agent RINGING -[Answer]-> TALKING" in agent_lines
    # Each line's `from` is the previous line's `to`: nothing is skipped or logged twice.
    for chain in (call_records, agent_records):
        states = [(r.__dict__["from_state"], r.__dict__["to_state"]) for r in chain]
        assert all(a[1] == b[0] for a, b in itertools.pairwise(states)), states
    arrived = next(r for r in records if r.__dict__.get("event") == "ARRIVED")
    # The number travels whole to the handler, whose filter masks it (see the JSON test above).
    assert arrived.__dict__["ani"] == ANI
