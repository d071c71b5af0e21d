"""An IVR flow document (SPEC F6-F8): what a caller hears and presses, from arrival to an end.

A flow is YAML written by a province's service designers and pushed to central, which hands it to
every site. It is a table of prompts (the texts, in every language of the flow) and a map of
nodes, each naming the node that comes next. The models below only check the shape of the
document; `vcc.ivr.validate` checks what makes it a usable flow (widths, depths, targets, loops).

Menu keys are not written in the document: the options a caller is offered (after the options'
conditions, F7) are numbered 1, 2, ... in order, so the keys stay consecutive from 1 whatever a
dynamic menu hides (the bank proposal's rule). 0 is the agent, * goes back, # repeats.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NodeId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
PromptId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.]{0,63}$")]
FlowId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,47}$")]
# A caller variable: `ani`, `customer.level`, `card`, `balance.amount` ...
VarName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")]
Language = Annotated[str, Field(pattern=r"^[a-z]{2}$")]
SkillGroupId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# The bank proposal: "the width and depth of the voice menu should not exceed 5".
MAX_MENU_WIDTH = 5
MAX_MENU_DEPTH = 5
# The variable that chooses the language of the prompts (set by the caller's record or a node).
LANGUAGE_VAR = "language"


class _Doc(BaseModel):
    # Unknown keys are errors: a misspelt `on_fail` must not silently become the flow's default.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


Scalar = str | int | float | bool


def _text(value: Scalar) -> str:
    # Caller variables are strings; YAML's `eq: 1` or `eq: yes` compares as the text "1" / "true".
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Condition(_Doc):
    """One test on the caller's data or on the time the flow is given.

    Exactly one form: `{var: X, <comparison>: V}`, `{all: [...]}`, `{any: [...]}`, `{not: C}`,
    `{open: SCHEDULE}` (true while the named opening hours are open), `{holiday: true|false}`.
    """

    var: VarName | None = None
    eq: str | None = None
    ne: str | None = None
    in_: list[str] | None = Field(default=None, alias="in")
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    exists: bool | None = None
    all_: list[Condition] | None = Field(default=None, alias="all")
    any_: list[Condition] | None = Field(default=None, alias="any")
    not_: Condition | None = Field(default=None, alias="not")
    open: str | None = None
    holiday: bool | None = None

    @field_validator("eq", "ne", mode="before")
    @classmethod
    def _as_text(cls, v: object) -> object:
        return _text(v) if isinstance(v, str | int | float | bool) else v

    @field_validator("in_", mode="before")
    @classmethod
    def _all_text(cls, v: object) -> object:
        if isinstance(v, list):
            return [_text(x) if isinstance(x, str | int | float | bool) else x for x in v]
        return v

    @model_validator(mode="after")
    def _one_form(self) -> Condition:
        comparisons = [
            k for k in ("eq", "ne", "in_", "gt", "ge", "lt", "le", "exists") if getattr(self, k) is not None
        ]
        forms = [k for k in ("all_", "any_", "not_", "open", "holiday") if getattr(self, k) is not None]
        if self.var is not None:
            forms.append("var")
        if len(forms) != 1:
            raise ValueError("a condition has exactly one of var, all, any, not, open, holiday")
        if self.var is not None and len(comparisons) != 1:
            raise ValueError("`var` takes exactly one of eq, ne, in, gt, ge, lt, le, exists")
        if self.var is None and comparisons:
            raise ValueError(f"{comparisons[0].rstrip('_')} needs a var")
        if (self.all_ is not None and not self.all_) or (self.any_ is not None and not self.any_):
            raise ValueError("all/any need at least one condition")
        return self


class OpeningHours(_Doc):
    """Open on these weekdays from `from` to `to` (local time of the flow's calendar)."""

    days: list[Weekday] = Field(default=list(WEEKDAYS), min_length=1)
    from_: dt.time = Field(alias="from")
    to: dt.time
    closed_on_holidays: bool = True

    @model_validator(mode="after")
    def _order(self) -> OpeningHours:
        if self.to <= self.from_:
            raise ValueError("`to` must be after `from` (split a night shift into two entries)")
        return self


class Calendar(_Doc):
    # China keeps one time zone and no summer time: an offset is enough, and keeps us clock-free.
    utc_offset_h: float = Field(default=8.0, ge=-12, le=14)
    holidays: list[dt.date] = []
    # Named schedules, tested by `{open: NAME}` conditions.
    hours: dict[str, list[OpeningHours]] = {}


class PriorityBy(_Doc):
    """Queue priority from a caller variable (a customer's level): `map` value, else `default`."""

    var: VarName
    map: dict[str, Annotated[int, Field(ge=0, le=9)]]
    default: int = Field(default=0, ge=0, le=9)


class _Node(_Doc):
    # Said before the node acts (a closed message before a hang-up, "please hold" before a look-up).
    prompt: PromptId | None = None


class PlayNode(_Node):
    kind: Literal["play"]
    prompt: PromptId
    next: NodeId
    barge_in: bool = False


class MenuOption(_Doc):
    # Describes the option ("parcel tracking"); the key is said after it, from the flow's key prompt.
    prompt: PromptId
    next: NodeId
    # Offered only to callers for whom this holds (dynamic menus, F7).
    when: Condition | None = None


class MenuNode(_Node):
    kind: Literal["menu"]
    options: list[MenuOption] = Field(min_length=1)
    # Key 0: where a caller who asks for an agent goes (no agent key when absent).
    agent: NodeId | None = None
    agent_prompt: PromptId | None = None
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    # Wrong keys or silences tolerated before `on_fail` (the flow's when absent).
    retries: int = Field(default=2, ge=0, le=5)
    on_fail: NodeId | None = None


class CollectNode(_Node):
    """Digits the caller types: an account, a tracking number, a PIN."""

    kind: Literal["collect"]
    prompt: PromptId
    into: VarName
    min_length: int = Field(default=1, ge=1, le=32)
    max_length: int = Field(ge=1, le=32)
    terminator: Literal["#", "*"] | None = "#"
    timeout_s: float = Field(default=8.0, gt=0, le=120)
    retries: int = Field(default=2, ge=0, le=5)
    # Secret input (a PIN): the trace shows stars, never the digits (F9).
    mask: bool = False
    next: NodeId
    on_fail: NodeId | None = None

    @model_validator(mode="after")
    def _lengths(self) -> CollectNode:
        if self.min_length > self.max_length:
            raise ValueError("min_length is more than max_length")
        return self


class LookupNode(_Node):
    """Ask central (a customer's level, a balance, a parcel's state); its answer lands in `into.*`."""

    kind: Literal["lookup"]
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
    # Argument -> template over caller variables, e.g. {card: "{card}"}.
    args: dict[str, str] = {}
    into: VarName | None = None
    timeout_s: float = Field(default=2.0, gt=0, le=30)
    next: NodeId
    # No answer in time (or central unreachable): the caller is not kept waiting longer.
    on_timeout: NodeId


class BranchCase(_Doc):
    when: Condition
    next: NodeId


class BranchNode(_Node):
    kind: Literal["branch"]
    cases: list[BranchCase] = Field(min_length=1)
    else_: NodeId = Field(alias="else")


class SetNode(_Node):
    kind: Literal["set"]
    var: VarName
    value: str
    next: NodeId

    @field_validator("value", mode="before")
    @classmethod
    def _as_text(cls, v: object) -> object:
        return _text(v) if isinstance(v, str | int | float | bool) else v


class QueueTreatmentSpec(_Doc):
    """What a waiting caller hears, and how long they wait before the flow goes on (F12)."""

    # Said at once, then every `announce_every_s`; `{position}` and `{wait_min}` are filled in.
    position_prompt: PromptId | None = None
    wait_prompt: PromptId | None = None
    announce_every_s: float = Field(default=30.0, ge=5, le=3600)
    # After this long in the queue the call leaves it for `on_max_wait` (a callback offer,
    # voicemail, another skill group ...).
    max_wait_s: float | None = Field(default=None, gt=0, le=86_400)
    on_max_wait: NodeId | None = None
    # Virtual hold (F20): this key pressed while waiting leaves the queue keeping the caller's
    # place: the flow goes on at `on_callback` (a callback node), dialled when their turn comes.
    callback_key: Annotated[str, Field(pattern=r"^[0-9*#]$")] | None = None
    on_callback: NodeId | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> QueueTreatmentSpec:
        if (self.max_wait_s is None) != (self.on_max_wait is None):
            raise ValueError("max_wait_s and on_max_wait go together")
        if (self.callback_key is None) != (self.on_callback is None):
            raise ValueError("callback_key and on_callback go together")
        return self


class QueueNode(_Node):
    kind: Literal["queue"]
    skill_group: SkillGroupId
    priority: int = Field(default=0, ge=0, le=9)
    priority_by: PriorityBy | None = None
    treatment: QueueTreatmentSpec | None = None


class VoicemailNode(_Node):
    kind: Literal["voicemail"]
    box: Annotated[str, Field(min_length=1, max_length=64)]


class CallbackNode(_Node):
    kind: Literal["callback"]
    skill_group: SkillGroupId
    # The variable holding the number to call back.
    number: VarName = "ani"
    # progressive: dialled for a ready agent of the group; preview: a ready agent sees the
    # callback and accepts it (or declines: the next agent) before it is dialled (F20).
    mode: Literal["progressive", "preview"] = "progressive"


class FaxNode(_Node):
    kind: Literal["fax"]
    document: Annotated[str, Field(min_length=1, max_length=128)]


class ReturnNode(_Node):
    """Back to the agent who sent the caller here (F9, a temporary transfer to the IVR), with the
    variables named in `report` ("pin_check.verified"), never a masked entry itself."""

    kind: Literal["return"]
    report: list[VarName] = []


class HangupNode(_Node):
    kind: Literal["hangup"]
    reason: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,47}$")] = "done"


Node = Annotated[
    PlayNode
    | MenuNode
    | CollectNode
    | LookupNode
    | BranchNode
    | SetNode
    | QueueNode
    | VoicemailNode
    | CallbackNode
    | FaxNode
    | ReturnNode
    | HangupNode,
    Field(discriminator="kind"),
]
EndNode = QueueNode | VoicemailNode | CallbackNode | FaxNode | ReturnNode | HangupNode
END_KINDS = frozenset({"queue", "voicemail", "callback", "fax", "return", "hangup"})


class Flow(_Doc):
    id: FlowId
    # Versions only grow; a call keeps the version it started on.
    version: int = Field(ge=1, le=2**31 - 1)
    description: str = ""
    # The first is the default; a caller whose `language` is another of these hears that one.
    languages: list[Language] = Field(min_length=1)
    start: NodeId
    # Where a caller goes who failed a menu or a collection too often (a node may name its own).
    on_fail: NodeId
    # Says a menu's key after the option's description: a text with `{key}` ("请按{key}").
    key_prompt: PromptId
    invalid_prompt: PromptId | None = None
    no_input_prompt: PromptId | None = None
    # Nodes a call may pass before it is ended: bounds a caller who goes round menus for ever.
    max_steps: int = Field(default=200, ge=10, le=10_000)
    calendar: Calendar = Calendar()
    prompts: dict[PromptId, dict[Language, str]]
    nodes: dict[NodeId, Node] = Field(min_length=1)

    def prompt_text(self, prompt_id: str, language: str) -> str:
        texts = self.prompts.get(prompt_id, {})
        return texts.get(language) or texts.get(self.languages[0], "")
