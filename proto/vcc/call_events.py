"""What can happen to a call, where it is and how it ended: the names of vcc.v1.CallEventKind,
CallState and CallOutcome without their prefix.

One definition for the sites that record call events and the central service that folds them.
"""

from __future__ import annotations

from enum import StrEnum

# The site id of central's own events: an operator's closure (outcome SITE_LOST) of a call its
# lost city left open. Never a real site's (those start with a letter: vcc.config.IDENT).
CENTRAL_SITE = "@central"


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
    # The agent's wrap-up code and note (data: code, note); may come after ENDED.
    WRAPPED_UP = "WRAPPED_UP"
    # The call left its IVR flow (data: flow, version, end, node, details).
    IVR_ENDED = "IVR_ENDED"
    # A callback asked for, attempted, finished (data: callback_id, stage, attempt, outcome).
    CALLBACK = "CALLBACK"
    # A voicemail message recorded, assigned, played, done (data: message_id, stage).
    VOICEMAIL = "VOICEMAIL"


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
    # The IVR served it with no agent (closed message, voicemail, callback asked, fax, hang-up).
    SELF_SERVED = "SELF_SERVED"
    # Its city was lost for good with the call open there; an operator closed it (central only).
    SITE_LOST = "SITE_LOST"
