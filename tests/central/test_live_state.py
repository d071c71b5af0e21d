"""LiveState: the newest summary per site from its stream or etcd, and up/stale/down."""

from __future__ import annotations

import pytest

from central import convert
from central.live_state import RESYNC_AGAIN_AFTER, Health, LiveState, Update
from central.membership_view import MembershipView
from vcc.v1 import central_pb2, site_admin_pb2

SITES = [("gz", "Guangzhou"), ("sz", "Shenzhen")]
MAX_AGE = 2.0


def summary(site_id: str, waiting: int = 0) -> site_admin_pb2.SiteSummary:
    return site_admin_pb2.SiteSummary(site_id=site_id, calls_waiting=waiting)


@pytest.fixture
def view() -> MembershipView:
    return MembershipView(SITES)


@pytest.fixture
def live(view: MembershipView) -> LiveState:
    return LiveState(SITES, view.sites, MAX_AGE)


def test_never_heard_of_is_down(live: LiveState) -> None:
    states = live.sites(100.0)
    assert [(s.site_id, s.name, s.health, s.summary, s.age_s, s.source) for s in states] == [
        ("gz", "Guangzhou", Health.DOWN, None, None, ""),
        ("sz", "Shenzhen", Health.DOWN, None, None, ""),
    ]


def test_stream_updates_up_then_stale_then_down_when_closed(live: LiveState) -> None:
    token = live.open_stream("gz")
    assert live.update("gz", token, 1, summary("gz", 3), now=100.0)
    gz = live.site("gz", 100.5)
    assert (gz.health, gz.source, gz.seq, gz.age_s, gz.streaming, gz.registered) == (
        Health.UP,
        "stream",
        1,
        0.5,
        True,
        False,
    )
    assert gz.summary is not None and gz.summary.calls_waiting == 3
    # The stream is open but silent: stale, not down.
    assert live.site("gz", 102.5).health is Health.STALE
    live.close_stream("gz", token)
    # Closed, the last state still fresh and no etcd key: down (a goodbye, or a killed site).
    assert live.site("gz", 100.5).health is Health.DOWN
    assert live.site("gz", 100.5).summary is not None, "the last summary is kept for the dashboard"


def test_only_the_latest_state_is_kept_and_old_seqs_are_ignored(live: LiveState) -> None:
    token = live.open_stream("gz")
    for seq in range(1, 10_001):
        live.update("gz", token, seq, summary("gz", seq), now=100.0 + seq / 10_000)
    assert not live.update("gz", token, 5, summary("gz", 5), now=102.0)
    assert not live.update("gz", token, 10_000, summary("gz", 5), now=102.0)
    gz = live.site("gz", 101.0)
    assert gz.summary is not None and (gz.seq, gz.summary.calls_waiting) == (10_000, 10_000)


def test_a_new_stream_replaces_the_old_one(live: LiveState) -> None:
    old = live.open_stream("gz")
    live.update("gz", old, 7, summary("gz", 1), now=100.0)
    new = live.open_stream("gz")
    # A restarted site starts its seq again; the old stream's late messages are ignored.
    assert live.update("gz", new, 1, summary("gz", 2), now=100.1)
    assert not live.update("gz", old, 8, summary("gz", 9), now=100.2)
    live.close_stream("gz", old)
    gz = live.site("gz", 100.2)
    assert gz.streaming and gz.health is Health.UP
    assert gz.summary is not None and gz.summary.calls_waiting == 2


def test_etcd_is_the_fallback_and_the_newer_source_wins(live: LiveState, view: MembershipView) -> None:
    view.put("sz", summary("sz", 4), now=100.0)
    sz = live.site("sz", 101.0)
    assert (sz.health, sz.source, sz.registered, sz.streaming) == (Health.UP, "etcd", True, False)
    # Registered but the etcd value is too old and no stream: down.
    assert live.site("sz", 103.0).health is Health.DOWN

    token = live.open_stream("sz")
    live.update("sz", token, 1, summary("sz", 5), now=101.0)
    assert live.site("sz", 101.0).source == "stream"
    view.put("sz", summary("sz", 6), now=102.0)
    sz = live.site("sz", 102.0)
    assert sz.source == "etcd" and sz.summary is not None and sz.summary.calls_waiting == 6


def test_lease_gone_is_down_unless_the_site_streams(live: LiveState, view: MembershipView) -> None:
    view.put("gz", summary("gz"), now=100.0)
    token = live.open_stream("gz")
    live.update("gz", token, 1, summary("gz"), now=100.0)
    view.delete("gz", "lease expired")
    # Central may be the one cut from etcd: a site that streams is still up.
    assert live.site("gz", 100.5).health is Health.UP
    live.close_stream("gz", token)
    assert live.site("gz", 100.5).health is Health.DOWN


def test_a_broken_stream_stops_routing_at_once_until_the_lease_says_more(
    live: LiveState, view: MembershipView
) -> None:
    view.put("gz", summary("gz"), now=99.5)  # registered: its lease lives on for a while
    token = live.open_stream("gz")
    live.update("gz", token, 1, summary("gz", 2), now=100.0)
    assert live.site("gz", 100.1).health is Health.UP
    live.close_stream("gz", token)  # the site was killed, or cut off
    # Its last state is fresh and its lease alive, yet central stops routing to it now.
    assert live.site("gz", 100.1).health is Health.STALE
    # Alive after all (its etcd value moves on) but not streaming: up again from etcd.
    view.put("gz", summary("gz", 1), now=100.6)
    assert live.site("gz", 100.7).health is Health.UP
    view.delete("gz", "lease expired")
    assert live.site("gz", 100.8).health is Health.DOWN


def test_unknown_sites_are_refused(live: LiveState) -> None:
    assert not live.knows("zz")
    with pytest.raises(KeyError):
        live.open_stream("zz")
    with pytest.raises(KeyError):
        live.site("zz", 0.0)


async def test_updates_wake_the_router(live: LiveState) -> None:
    assert not live.changed.is_set()
    token = live.open_stream("gz")
    live.update("gz", token, 1, summary("gz"), now=1.0)
    assert live.changed.is_set()


def test_snapshot_for_the_router(live: LiveState) -> None:
    token = live.open_stream("gz")
    state = site_admin_pb2.SiteSummary(
        site_id="gz",
        resources=[
            site_admin_pb2.ResourceUsage(id="pstn", kind="trunk", busy=28, total=30),
            site_admin_pb2.ResourceUsage(id="pstn2", kind="trunk", busy=0, total=5),
            site_admin_pb2.ResourceUsage(id="tie:sz", kind="tie", busy=3, total=4),
            site_admin_pb2.ResourceUsage(id="tie:fs", kind="tie", busy=9, total=4),
            site_admin_pb2.ResourceUsage(id="ivr1", kind="ivr", busy=1, total=8),
            site_admin_pb2.ResourceUsage(id="rec", kind="recording", busy=0, total=2),
        ],
        skill_groups=[
            site_admin_pb2.SkillGroupSummary(
                skill_group="general",
                calls_waiting=2,
                oldest_wait_s=4.5,
                agents_ready=0,
                agents_logged_in=3,
                longest_idle_s=0.0,
                expected_wait_s=6.0,
            )
        ],
    )
    live.update("gz", token, 1, state, now=100.0)
    snaps = {s.site_id: convert.site_snapshot(s) for s in live.sites(100.25)}
    gz, sz = snaps["gz"], snaps["sz"]
    assert (gz.up, gz.state_age_s, gz.free_trunk, gz.free_board) == (True, 0.25, 7, 9)
    assert gz.free_tie == {"sz": 1, "fs": 0}
    g = gz.skills["general"]
    assert (g.calls_waiting, g.oldest_wait_s, g.ready_agents, g.logged_in, g.expected_wait_s) == (
        2,
        4.5,
        0,
        3,
        6.0,
    )
    assert (sz.up, sz.skills, sz.state_age_s) == (False, {}, float("inf"))


def test_presence_deltas_apply_in_order_and_a_gap_waits_for_a_whole_one(live: LiveState) -> None:
    full, delta = central_pb2.PRESENCE_UPDATE_FULL, central_pb2.PRESENCE_UPDATE_DELTA

    def msg(**states: str) -> site_admin_pb2.SiteSummary:
        return site_admin_pb2.SiteSummary(site_id="gz", agent_states=states)

    token = live.open_stream("gz")
    # A delta first on a stream cannot be applied: nothing to apply it to.
    assert live.update("gz", token, 1, msg(a="READY"), 100.0, delta) is Update.GAP
    assert live.site("gz", 100.0).presence_complete is False
    assert live.update("gz", token, 2, msg(a="READY", b="NOT_READY"), 100.1, full) is Update.ACCEPTED
    assert live.update("gz", token, 3, msg(a="TALKING"), 100.2, delta) is Update.ACCEPTED
    gz = live.site("gz", 100.2)
    assert (dict(gz.presence), gz.presence_complete) == ({"a": "TALKING", "b": "NOT_READY"}, True)
    assert gz.summary is not None and not gz.summary.agent_states, "no partial map to misread"
    # 4 is lost: 5 is a gap, asked for once, again only after RESYNC_AGAIN_AFTER more messages.
    assert live.update("gz", token, 5, msg(b="READY"), 100.3, delta) is Update.GAP
    results = [live.update("gz", token, n, msg(), 100.4, delta) for n in range(6, 6 + RESYNC_AGAIN_AFTER)]
    assert results[:-1] == [Update.ACCEPTED] * (RESYNC_AGAIN_AFTER - 1) and results[-1] is Update.GAP
    assert dict(live.site("gz", 100.4).presence) == {"a": "TALKING", "b": "NOT_READY"}
    assert live.gaps("gz") == 2
    # The figures of a message after a gap are taken all the same.
    assert live.update(
        "gz", token, 40, site_admin_pb2.SiteSummary(site_id="gz", calls_waiting=9), 100.5, delta
    )
    assert live.site("gz", 100.5).summary.calls_waiting == 9  # type: ignore[union-attr]
    assert live.update("gz", token, 41, msg(a="READY", b="READY"), 100.6, full) is Update.ACCEPTED
    gz = live.site("gz", 100.6)
    assert (dict(gz.presence), gz.presence_complete) == ({"a": "READY", "b": "READY"}, True)


def test_reordered_presence_deltas_are_a_gap_and_the_late_one_is_not_applied(live: LiveState) -> None:
    """Deltas 3 and 4 arrive as 4 then 3: 4 is a gap (resync asked); the late 3 is not applied over
    what came after it; the whole map that follows is exact again."""
    full, delta = central_pb2.PRESENCE_UPDATE_FULL, central_pb2.PRESENCE_UPDATE_DELTA

    def msg(**states: str) -> site_admin_pb2.SiteSummary:
        return site_admin_pb2.SiteSummary(site_id="gz", agent_states=states)

    token = live.open_stream("gz")
    assert live.update("gz", token, 1, msg(a="READY", b="READY"), 100.0, full) is Update.ACCEPTED
    assert live.update("gz", token, 2, msg(a="TALKING"), 100.1, delta) is Update.ACCEPTED
    # The site sent 3 (b -> TALKING) then 4 (b -> WRAP_UP); they come the other way round.
    assert live.update("gz", token, 4, msg(b="WRAP_UP"), 100.2, delta) is Update.GAP
    assert live.update("gz", token, 3, msg(b="TALKING"), 100.3, delta) is Update.IGNORED
    gz = live.site("gz", 100.3)
    assert (dict(gz.presence), gz.presence_complete) == ({"a": "TALKING", "b": "READY"}, False)
    assert live.update("gz", token, 5, msg(a="TALKING", b="WRAP_UP"), 100.4, full) is Update.ACCEPTED
    gz = live.site("gz", 100.4)
    assert (dict(gz.presence), gz.presence_complete) == ({"a": "TALKING", "b": "WRAP_UP"}, True)
