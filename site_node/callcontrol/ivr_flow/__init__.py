"""The IVR flow interpreter: one FlowRun per call in the IVR, pure (time given, actions returned)."""

from site_node.callcontrol.ivr_flow.actions import (
    Action,
    Announcements,
    CollectDigits,
    End,
    Ended,
    FaxOnDemand,
    Hangup,
    Heard,
    LookedUp,
    Lookup,
    OfferCallback,
    Play,
    Pressed,
    Silence,
    ToQueue,
    ToVoicemail,
    TraceEntry,
)
from site_node.callcontrol.ivr_flow.run import STEP_LIMIT, FlowRun

__all__ = [
    "STEP_LIMIT",
    "Action",
    "Announcements",
    "CollectDigits",
    "End",
    "Ended",
    "FaxOnDemand",
    "FlowRun",
    "Hangup",
    "Heard",
    "LookedUp",
    "Lookup",
    "OfferCallback",
    "Play",
    "Pressed",
    "Silence",
    "ToQueue",
    "ToVoicemail",
    "TraceEntry",
]
