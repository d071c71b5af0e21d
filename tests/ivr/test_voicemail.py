"""Voicemail messages (F27): recorded, listed for a group, assigned, played, done."""

from __future__ import annotations

import pytest

from site_node.callcontrol.voicemail import Voicemail, VoicemailError

T0 = 1000.0


def test_a_message_from_recording_to_done() -> None:
    box = Voicemail(min_message_s=1.0, max_message_s=60.0)
    box.start("m1", "c1", T0, box="suggestions", skill_group="complaints", caller="13800000001")
    assert box.cut_at("m1") == T0 + 60
    assert box.listed("complaints") == []
    saved = box.finish("m1", "rec/gz/m1.wav", T0 + 75)
    # Cut at the maximum.
    assert (saved.state, saved.duration_s, saved.recording) == ("new", 60.0, "rec/gz/m1.wav")
    assert [m.message_id for m in box.listed("complaints")] == ["m1"]
    box.assign("m1", "1001")
    box.assign("m1", "1002")
    with pytest.raises(VoicemailError) as info:
        box.play("m1", "1001")
    assert info.value.error_id == "message-not-yours"
    with pytest.raises(VoicemailError) as info:
        box.done("m1", "1002", T0 + 90)
    assert info.value.error_id == "message-not-played"
    assert box.play("m1", "1002").plays == 1
    done = box.done("m1", "1002", T0 + 100, note="called the customer back")
    assert (done.state, done.done_at, done.note) == ("done", T0 + 100, "called the customer back")
    assert box.listed("complaints") == []
    assert [m.message_id for m in box.listed("complaints", open_only=False)] == ["m1"]


def test_a_hang_up_at_the_tone_leaves_nothing_to_work() -> None:
    box = Voicemail(min_message_s=2.0)
    box.start("m1", "c1", T0, box="customs", skill_group="parcel", caller="13800000001")
    assert box.finish("m1", "rec/m1.wav", T0 + 0.5).state == "discarded"
    assert box.listed() == []
    with pytest.raises(VoicemailError) as info:
        box.assign("m1", "1001")
    assert info.value.error_id == "message-wrong-state"


def test_listed_oldest_first_per_group() -> None:
    box = Voicemail()
    for i, group in enumerate(["parcel", "complaints", "parcel"]):
        box.start(f"m{i}", f"c{i}", T0 + 10 - i, box="box", skill_group=group, caller=f"1380000000{i}")
        box.finish(f"m{i}", f"rec/{i}", T0 + 30)
    assert [m.message_id for m in box.listed("parcel")] == ["m2", "m0"]
    assert [m.message_id for m in box.listed()] == ["m2", "m1", "m0"]
    with pytest.raises(VoicemailError) as info:
        box.start("m1", "c9", T0, box="box", skill_group="parcel", caller="1")
    assert info.value.error_id == "message-exists"
