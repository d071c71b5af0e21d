"""What a running flow asks of the call control, and what it records of the call for `vcc call`.

Actions are plain frozen values; the IVR part of the call control carries them out (a prompt on an
IVR port, a digit collection, a look-up at central, a queue) and feeds the outcome back.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Play:
    prompt_id: str
    # The text in the caller's language, variables filled in (what a TTS engine or a test reads).
    text: str
    # Keys pressed while it plays are taken (menus) rather than thrown away (announcements).
    barge_in: bool


@dataclass(frozen=True)
class CollectDigits:
    """Collect up to `max_digits` keys; call on_timeout if none come within `timeout_s`."""

    max_digits: int
    terminator: str | None
    timeout_s: float


@dataclass(frozen=True)
class Lookup:
    """Ask central; answer with on_lookup(result, now, request=request), or on_timeout."""

    name: str
    args: dict[str, str]
    timeout_s: float
    request: int


@dataclass(frozen=True)
class Announcements:
    """What the queue says to a waiting caller, in their language; `{position}`, `{wait_min}` open."""

    position_prompt_id: str
    position_text: str
    wait_prompt_id: str
    wait_text: str
    every_s: float
    # None: the caller waits until served or gone; else FlowRun.on_max_wait() after this long.
    max_wait_s: float | None


@dataclass(frozen=True)
class ToQueue:
    skill_group: str
    priority: int
    announcements: Announcements | None = None


@dataclass(frozen=True)
class ToVoicemail:
    box: str


@dataclass(frozen=True)
class OfferCallback:
    skill_group: str
    number: str
    mode: str = "progressive"


@dataclass(frozen=True)
class FaxOnDemand:
    document: str


@dataclass(frozen=True)
class ReturnToAgent:
    """Back to the agent who sent the caller to the IVR, with what the flow reports."""

    results: dict[str, str]


@dataclass(frozen=True)
class Hangup:
    reason: str


End = ToQueue | ToVoicemail | OfferCallback | FaxOnDemand | ReturnToAgent | Hangup
Action = Play | CollectDigits | Lookup | End


# -- the trace: what the caller heard and what each key did -----------------------------------------


@dataclass(frozen=True)
class Heard:
    at: float
    node: str
    prompt_id: str
    text: str


@dataclass(frozen=True)
class Pressed:
    at: float
    node: str
    # A masked collection (a PIN) shows "*" here, never the digit.
    key: str
    # What the key did: "option 2 -> savings", "back -> main", "repeat", "invalid", "digit 3/6" ...
    effect: str


@dataclass(frozen=True)
class Silence:
    at: float
    node: str
    effect: str


@dataclass(frozen=True)
class LookedUp:
    at: float
    node: str
    name: str
    # "answered", "late" (came after its timeout), "timed-out" or "failed".
    outcome: str
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Ended:
    at: float
    node: str
    action: End


TraceEntry = Heard | Pressed | Silence | LookedUp | Ended
