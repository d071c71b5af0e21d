"""What can happen to a call, where it is and how it ended: the names of vcc.v1.CallEventKind,
CallState and CallOutcome without their prefix.

One definition for the sites that record call events and the central service that folds them.
"""

from __future__ import annotations

from enum import StrEnum


class EventKind(StrEnum):
    ARRIVED = "ARRIVED"
    BLOCKED = "BLOCKED"
    IVR_STARTED = "IVR_STARTED"
    DIGITS = "DIGITS"
    QUEUED = "QUEUED"
    RINGING = "RINGING"
    RING_NO_ANSWER = "RING_NO_ANSWER"
    ANSWERED = "ANSWERED"
    HELD = "HELD"
    RETRIEVED = "RETRIEVED"
    TRANSFERRED = "TRANSFERRED"
    ABANDONED = "ABANDONED"
    ENDED = "ENDED"
    AGENT_HUNG_UP = "AGENT_HUNG_UP"
    CALLER_HUNG_UP = "CALLER_HUNG_UP"
    ROUTED = "ROUTED"
    ROUTE_FAILED = "ROUTE_FAILED"
    RETURNED = "RETURNED"
    # A group leader listens (monitor), coaches the agent (whisper) or joins (barge), or changes
    # mode (data: supervisor, agent, mode, from).
    SUPERVISED = "SUPERVISED"
    SUPERVISION_ENDED = "SUPERVISION_ENDED"
    # A group leader took the call over from its agent (data: supervisor, agent).
    INTERCEPTED = "INTERCEPTED"


class CallState(StrEnum):
    """Where a call is; vcc.v1.CallState names without the prefix ("" = not known yet)."""

    UNSPECIFIED = ""
    ARRIVING = "ARRIVING"
    IVR = "IVR"
    QUEUED = "QUEUED"
    RINGING = "RINGING"
    TALKING = "TALKING"
    HELD = "HELD"
    ENDED = "ENDED"


class Outcome(StrEnum):
    """How a call ended; vcc.v1.CallOutcome names without the prefix ("" = not ended; a site's
    live call says "not ended" with None)."""

    UNSPECIFIED = ""
    ANSWERED = "ANSWERED"
    ABANDONED = "ABANDONED"
    BLOCKED = "BLOCKED"
    FAILED = "FAILED"
