"""The action that takes a call out of the flow, for each kind of end node."""

from __future__ import annotations

from collections.abc import Mapping

from site_node.callcontrol.ivr_flow.actions import (
    End,
    FaxOnDemand,
    Hangup,
    OfferCallback,
    ReturnToAgent,
    ToQueue,
    ToVoicemail,
)
from site_node.callcontrol.ivr_flow.voice import Voice
from vcc.ivr.flow import CallbackNode, EndNode, FaxNode, QueueNode, ReturnNode, VoicemailNode


def end_action(node: EndNode, context: Mapping[str, str], voice: Voice) -> End:
    if isinstance(node, QueueNode):
        priority = node.priority
        if node.priority_by is not None:
            # A customer's level decides it (a VIP is served first).
            by = node.priority_by
            priority = by.map.get(context.get(by.var, ""), by.default)
        return ToQueue(node.skill_group, priority, voice.announcements(node))
    if isinstance(node, VoicemailNode):
        return ToVoicemail(node.box)
    if isinstance(node, CallbackNode):
        return OfferCallback(node.skill_group, context.get(node.number, ""), node.mode)
    if isinstance(node, FaxNode):
        return FaxOnDemand(node.document)
    if isinstance(node, ReturnNode):
        return ReturnToAgent({var: context.get(var, "") for var in node.report})
    return Hangup(node.reason)
