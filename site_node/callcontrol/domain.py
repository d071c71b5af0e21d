"""The site's domain types: calls, the events recorded for central, and the switchboard's effects.

Plain dataclasses; protobuf stops at the adapters (site_node/grpc_api/convert.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from site_node.callcontrol.callbacks import Callback
from site_node.callcontrol.voicemail import Message
from vcc.call_events import CallState, EventKind, Outcome

__all__ = ["CallState", "Outcome"]  # the contract's enums, re-exported for the call control


@dataclass(frozen=True, slots=True)
class CustomerInfo:
    customer_id: str
    name: str
    phone: str
    level: str = ""
    city: str = ""
    notes: str = ""


@dataclass(slots=True)
class RemoteLeg:
    """Origin side: the call is offered to, or served by, another site (voice stays on our trunk)."""

    target_site_id: str
    offer_id: str
    decision_id: str
    # offering -> ringing -> talking <-> held
    state: str = "offering"
    agent_code: str = ""


@dataclass(slots=True)
class Consult:
    """A consultation in progress: the caller is held while the serving agent talks with another."""

    agent_code: str
    site_id: str
    # ringing -> talking; `conference` once the caller joined the two agents.
    state: str = "ringing"
    conference: bool = False
    # Set when the consulted agent is at another site (a remote leg of purpose transfer-consult).
    offer_id: str = ""
    # The conference board channel the three-way conference holds (None: no such board here).
    board: str | None = None


@dataclass(slots=True)
class Call:
    call_id: str
    idempotency_key: str
    ani: str
    dnis: str
    entry_site_id: str
    trunk_group: str
    arrived_at: float
    attached: dict[str, str] = field(default_factory=dict)
    state: CallState = CallState.ARRIVING
    skill_group: str = ""
    priority: int = 0
    agent_code: str = ""
    answered_at: float | None = None
    ivr_port: str | None = None
    customer: CustomerInfo | None = None
    # The screen pop is being fetched: the call waits for it (bounded) before it can ring anyone.
    customer_pending: bool = False
    # Queued for the caller, but held out of the ACD until the customer look-up is done.
    parked: bool = False
    # Events recorded for this call at this site so far (the next one gets seq + 1).
    seq: int = 0
    outcome: Outcome | None = None
    # Origin side: the leg at another site, if any.
    remote: RemoteLeg | None = None
    # Target side: this site serves the call for its origin, on the origin's offer.
    guest_of: str = ""
    offer_id: str = ""
    # A guest's agent answered; the origin has not confirmed yet.
    answer_asked: bool = False
    # Origin side: a routing question to central is outstanding.
    route_pending: bool = False
    # Sites that refused or lost this call: routing tries others first.
    excluded: set[str] = field(default_factory=set)
    # A consultation (consult transfer or conference) the serving agent started.
    consult: Consult | None = None
    # Target side: why the origin offered this call ("overflow", "transfer-consult", ...).
    purpose: str = ""
    from_agent_code: str = ""


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """One entry of a call's history; (call_id, site_id, seq) is unique."""

    call_id: str
    site_id: str
    seq: int
    kind: EventKind
    at: float
    agent_code: str = ""
    skill_group: str = ""
    ani: str = ""
    dnis: str = ""
    outcome: Outcome | None = None
    data: tuple[tuple[str, str], ...] = ()


# Effects: what the switchboard asks its adapters to do, in order. --------------------------


@dataclass(frozen=True, slots=True)
class Journal:
    """Append to the durable outbox (and so, eventually, to central)."""

    event: RecordedEvent


@dataclass(frozen=True, slots=True)
class ToCaller:
    """Progress the caller's side hears. `ended` is the last one."""

    call_id: str
    kind: str  # accepted, prompt, queued, ringing, connected, held, retrieved, transferred, ended
    at: float
    site_id: str = ""
    agent_code: str = ""
    skill_group: str = ""
    position: int = 0
    expected_wait_s: float = 0.0
    prompt: str = ""
    choices: tuple[str, ...] = ()
    timeout_s: float = 0.0
    trunk_group: str = ""
    outcome: Outcome | None = None
    reason: str = ""
    # A flow's prompt (`prompt` is its id): the text heard; `collect`: keys are asked for now.
    text: str = ""
    collect: bool = False
    max_digits: int = 0
    flow_id: str = ""
    flow_version: int = 0
    # For `voicemail`: the message the caller's voice is recorded for, on a recording channel.
    message_id: str = ""


@dataclass(frozen=True, slots=True)
class ToAgent:
    """An event for the agent's desktop. `state` events carry no call details."""

    agent_code: str
    kind: str  # state, offered, withdrawn, connected, held, retrieved, ended, transfer, supervision, forced
    at: float
    call_id: str = ""
    reason: str = ""
    wrap_up_s: float = 0.0
    # For `offered`: the screen pop.
    ani: str = ""
    dnis: str = ""
    skill_group: str = ""
    entry_site_id: str = ""
    attached: tuple[tuple[str, str], ...] = ()
    customer: CustomerInfo | None = None
    ring_timeout_s: float = 0.0
    waited_s: float = 0.0
    # For `offered` during a transfer, and for `transfer` progress.
    purpose: str = ""
    from_agent_code: str = ""
    stage: str = ""
    site_id: str = ""
    # For `transfer` progress: the other agent (consulted, or the one handing over).
    other_agent_code: str = ""
    # For `state`: the agent's state after the change, and the event that changed it (for the
    # adapter's transition log: the core itself does not log).
    state: str = ""
    event: str = ""


@dataclass(frozen=True, slots=True)
class FetchCustomer:
    """Look the caller up at central; the answer comes back as Switchboard.customer_found."""

    call_id: str
    ani: str


@dataclass(frozen=True, slots=True)
class IvrLookup:
    """A flow's data look-up at central (its own timeout); answer via Switchboard.ivr_looked_up
    with the same `request` (a late answer is the timeout's path)."""

    call_id: str
    name: str
    args: tuple[tuple[str, str], ...]
    timeout_s: float
    request: int


@dataclass(frozen=True, slots=True)
class DialOut:
    """Ask the trunk to dial a callback (F20); the callee comes back as an offer with `dial_id`,
    or Switchboard.dial_failed."""

    dial_id: str
    number: str
    skill_group: str
    callback_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class AskRoute:
    """Ask central whether this waiting call should leave; answer via Switchboard.route_decided."""

    call_id: str
    skill_group: str
    priority: int
    waited_s: float
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReportRoute:
    """Tell central a call was offered to one of its pushed targets (its decision log keeps it)."""

    decision_id: str
    call_id: str
    skill_group: str
    target_site_id: str
    epoch: int
    waited_s: float
    at: float
    priority: int = 0


@dataclass(frozen=True, slots=True)
class OfferRemote:
    """Origin -> target: open a remote leg (SitePeerService.ServeCall)."""

    offer_id: str
    call_id: str
    target_site_id: str
    decision_id: str
    skill_group: str
    priority: int
    arrived_at: float
    ani: str
    dnis: str
    attached: tuple[tuple[str, str], ...]
    customer: CustomerInfo | None
    purpose: str
    agent_code: str = ""
    from_agent_code: str = ""


@dataclass(frozen=True, slots=True)
class LegToTarget:
    """Origin -> target on an open leg: "confirm" an answer, or "end" the leg (with a reason)."""

    offer_id: str
    kind: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class LegToOrigin:
    """Target -> origin on an open leg: answer_asked, held, retrieved, hung_up, returned,
    transfer_asked (the remote agent hands the caller on; the origin carries it out)."""

    offer_id: str
    kind: str
    agent_code: str = ""
    reason: str = ""
    # For transfer_asked: (agent_code, skill_group, site_id, ivr) and data to attach.
    transfer_to: tuple[str, str, str, bool] | None = None
    attached: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class SuperviseMedia:
    """Ask the media side to fork or mix the call's audio for a supervisor (SPEC F24).

    `mode`: monitor (the leader hears both parties), whisper (the agent hears the leader, the
    caller does not), barge (all three hear each other), intercept (the leader's phone replaces
    the agent's), none (the supervisor's media leg ends). Carried out by the SIP side.
    """

    call_id: str
    mode: str
    supervisor: str
    agent_code: str


@dataclass(frozen=True, slots=True)
class Audit:
    """A supervisor's (or administrator's) action, for the site's audit journal and central's
    audit log: who did what to whom, when, and whether it was allowed."""

    at: float
    actor: str
    action: str
    target: str
    call_id: str = ""
    detail: str = ""
    outcome: str = "done"
    # Where the request came from (the adapter fills it in: client address).
    origin: str = ""


@dataclass(frozen=True, slots=True)
class KeepOpen:
    """A callback or voicemail message as it is now, kept durably with the journal entries of the
    same operation (the outbox's transaction), so the lists survive a site restart; `item` None:
    it is closed, forget it."""

    kind: str  # callback, voicemail
    item_id: str
    call_id: str
    item: Callback | Message | None


Effect = (
    Journal
    | KeepOpen
    | ToCaller
    | ToAgent
    | FetchCustomer
    | IvrLookup
    | DialOut
    | AskRoute
    | ReportRoute
    | OfferRemote
    | LegToTarget
    | LegToOrigin
    | SuperviseMedia
    | Audit
)
