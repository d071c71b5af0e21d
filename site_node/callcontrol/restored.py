"""Callbacks and voicemail messages the site kept open before it restarted, put back in the
dialler and the voicemail desk. Each continues its call's journal numbers from the last one the
outbox kept, so no event after the restart reuses a number central already has."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from site_node.callcontrol.callbacks import Callback
from site_node.callcontrol.dialler import Dialler
from site_node.callcontrol.domain import Call, CallState
from site_node.callcontrol.effects import Effects
from site_node.callcontrol.voicemail import Message
from site_node.callcontrol.voicemail_desk import VoicemailDesk


def restore_open(
    site_id: str,
    dialler: Dialler,
    voicemail: VoicemailDesk,
    items: Sequence[Callback | Message],
    last_seq: Mapping[str, int],
    now: float,
    fx: Effects,
) -> list[str]:
    """Put the items back; returns the ids of those left out (their call's last journal number
    unknown: restoring them could reuse one)."""
    calls: dict[str, Call] = {}
    left_out: list[str] = []
    for item in items:
        seq = last_seq.get(item.call_id)
        if seq is None:
            left_out.append(item.callback_id if isinstance(item, Callback) else item.message_id)
            continue
        call = calls.get(item.call_id)
        if call is None:
            # The call itself ended before the restart: only its record's numbers go on.
            call = Call(
                item.call_id, "", item.number if isinstance(item, Callback) else item.caller, "", site_id, "",
                item.requested_at if isinstance(item, Callback) else item.started_at,
                state=CallState.ENDED, seq=seq,
            )  # fmt: skip
            calls[item.call_id] = call
        if isinstance(item, Callback):
            dialler.restore(item, call, now)
        else:
            voicemail.restore(item, call, now, fx)
    return left_out
