"""Robot agents against a fake site at the gRPC boundary (tests/tools/fake_site.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.helpers import eventually
from tests.tools.fake_site import FakeCall, FakeSite
from tools.simulation.robots import RobotPolicy, RobotStats, run_robots, run_robots_until
from vcc.v1 import common_pb2

AGENTS = {"0101": "123456", "0102": "123456"}
FAST = RobotPolicy(handle_time_mean_s=0.02, handle_distribution="constant")


@pytest.fixture
async def site() -> AsyncIterator[FakeSite]:
    fake = FakeSite(agents=dict(AGENTS))
    await fake.start()
    yield fake
    await fake.kill()


class Robots:
    """run_robots in a background task, stopped and awaited by the test."""

    def __init__(self, site: FakeSite, policy: RobotPolicy, agents: dict[str, str] = AGENTS) -> None:
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(run_robots(site.address, list(agents.items()), policy, self.stop))

    async def finish(self) -> RobotStats:
        self.stop.set()
        return await asyncio.wait_for(self.task, 15)


async def all_ready(site: FakeSite, codes: list[str] | None = None) -> None:
    async def check() -> bool:
        for code in codes or list(site.agents):
            assert site.agents[code].state == common_pb2.AGENT_STATE_READY, code
            assert site.agents[code].streaming
        return True

    await eventually(check, what="robots ready")


async def test_robots_log_in_answer_hang_up_and_log_out(site: FakeSite) -> None:
    site.wrap_up_s = 60.0  # only the robots' EndWrapUp can make them ready again
    robots = Robots(site, FAST)
    await all_ready(site)
    calls = [site.new_call() for _ in range(6)]
    for call in calls:
        site.enqueue(call)

    async def all_answered() -> bool:
        assert all(c.outcome == common_pb2.CALL_OUTCOME_ANSWERED for c in calls)
        return True

    await eventually(all_answered, what="calls answered")
    stats = await robots.finish()
    assert stats.logged_in == 2
    assert stats.offered == 6
    assert stats.answered == 6
    assert stats.hung_up == 6
    assert stats.ignored == 0
    assert stats.errors == 0
    assert stats.logged_out == 2
    assert sum(a.end_wrap_ups for a in site.agents.values()) == 6
    assert all(a.state == common_pb2.AGENT_STATE_LOGGED_OUT for a in site.agents.values())


async def test_ignored_offer_rings_no_answer_and_robot_goes_ready_again(site: FakeSite) -> None:
    robots = Robots(site, RobotPolicy(no_answer_probability=1.0), {"0101": "123456"})
    await all_ready(site, ["0101"])
    call = site.new_call()
    site.enqueue(call)

    async def rang_again() -> bool:
        assert len(call.rung) >= 3
        return True

    await eventually(rang_again, what="ring-no-answer cycles")
    site.caller_hangs_up(call)
    stats = await robots.finish()
    # The last offer may still be in flight to the robot when it stops.
    assert stats.ignored >= len(call.rung) - 1 >= 2
    assert stats.answered == 0
    assert stats.errors == 0
    assert site.agents["0101"].ready_after_no_answer >= 2
    assert call.outcome == common_pb2.CALL_OUTCOME_ABANDONED


async def test_call_gone_while_answering_or_hanging_up_is_counted_not_fatal(site: FakeSite) -> None:
    robots = Robots(site, RobotPolicy(handle_time_mean_s=0.01), {"0101": "123456"})
    await all_ready(site, ["0101"])

    async def ended(call: FakeCall, outcome: common_pb2.CallOutcome.ValueType) -> None:
        async def check() -> bool:
            assert call.outcome == outcome
            return True

        await eventually(check)

    site.caller_hangs_up_on_answer = True  # Answer lands just after the caller hung up
    first = site.new_call()
    site.enqueue(first)
    await ended(first, common_pb2.CALL_OUTCOME_ABANDONED)
    site.caller_hangs_up_on_answer = False
    await all_ready(site, ["0101"])

    site.caller_hangs_up_on_agent_hang_up = True  # HangUp lands just after the caller hung up
    second = site.new_call()
    site.enqueue(second)
    await ended(second, common_pb2.CALL_OUTCOME_ANSWERED)
    site.caller_hangs_up_on_agent_hang_up = False
    await all_ready(site, ["0101"])

    third = site.new_call()
    site.enqueue(third)
    await ended(third, common_pb2.CALL_OUTCOME_ANSWERED)
    stats = await robots.finish()
    assert stats.errors == 0
    assert stats.refused >= 2  # the refused Answer and the refused HangUp
    assert (stats.offered, stats.answered, stats.hung_up) == (3, 2, 1)
    assert stats.logged_out == 1


async def test_site_timer_wrap_up_is_left_to_the_site(site: FakeSite) -> None:
    site.wrap_up_s = 0.05
    policy = RobotPolicy(handle_time_mean_s=0.01, handle_distribution="constant", wrap_up="site_timer")
    robots = Robots(site, policy, {"0101": "123456"})
    await all_ready(site, ["0101"])
    calls = [site.new_call() for _ in range(2)]
    for call in calls:
        site.enqueue(call)

    async def answered() -> bool:
        assert all(c.outcome == common_pb2.CALL_OUTCOME_ANSWERED for c in calls)
        return True

    await eventually(answered)
    await all_ready(site, ["0101"])
    stats = await robots.finish()
    assert site.agents["0101"].end_wrap_ups == 0
    assert stats.hung_up == 2
    assert stats.errors == 0


async def test_caller_hanging_up_while_talking_cancels_the_robots_hang_up(site: FakeSite) -> None:
    robots = Robots(
        site, RobotPolicy(handle_time_mean_s=30.0, handle_distribution="constant"), {"0101": "123456"}
    )
    await all_ready(site, ["0101"])
    call = site.new_call()
    site.enqueue(call)

    async def talking() -> bool:
        assert call.state == "talking"
        return True

    await eventually(talking)
    site.caller_hangs_up(call)
    await all_ready(site, ["0101"])
    stats = await robots.finish()
    assert stats.answered == 1
    assert stats.hung_up == 0
    assert stats.errors == 0
    assert stats.logged_out == 1


async def test_wrong_password_gives_up_without_stop(site: FakeSite) -> None:
    stats = await asyncio.wait_for(
        run_robots(site.address, [("0101", "000000")], FAST, asyncio.Event()), timeout=10
    )
    assert stats.logged_in == 0
    assert stats.errors == 1


async def test_robots_log_in_again_after_the_site_restarts(site: FakeSite) -> None:
    robots = Robots(site, FAST, {"0101": "123456"})
    await all_ready(site, ["0101"])
    port = int(site.address.rsplit(":", 1)[1])
    await site.kill()
    reborn = FakeSite(agents={"0101": "123456"})
    await reborn.start(port)
    try:
        await all_ready(reborn, ["0101"])
        call = reborn.new_call()
        reborn.enqueue(call)

        async def answered() -> bool:
            assert call.outcome == common_pb2.CALL_OUTCOME_ANSWERED
            return True

        await eventually(answered)
        stats = await robots.finish()
    finally:
        await reborn.kill()
    assert stats.logged_in == 2
    assert stats.answered == 1
    assert stats.errors >= 1  # the broken stream


async def test_run_robots_until_stops_after_duration(site: FakeSite) -> None:
    stats = await asyncio.wait_for(
        run_robots_until(site.address, list(AGENTS.items()), FAST, duration_s=0.3), timeout=15
    )
    assert stats.logged_in == 2
    assert stats.logged_out == 2
    assert stats.errors == 0


async def test_a_completed_transfer_counts_when_the_end_comes_before_the_reply(site: FakeSite) -> None:
    """A busy site's stream can tell the robot its part ended ("transferred") before the
    CompleteTransfer reply: the robot must not take that for the caller hanging up (a cancelled
    task lost every such transfer from the counts at load 5)."""
    site.reply_after_transfer_ended_s = 0.3
    policy = RobotPolicy(
        handle_time_mean_s=0.2,
        handle_distribution="constant",
        transfer_probability=1.0,
        transfer_kind="consult",
        transfer_targets=(("general", "sz"),),
    )
    robots = Robots(site, policy, {"0101": "123456"})
    await all_ready(site, ["0101"])
    site.enqueue(site.new_call())

    async def handed_over() -> bool:
        return len(site.completed_transfers) == 1

    await eventually(handed_over, what="the robot handed the call over")
    await all_ready(site, ["0101"])
    # The reply has no effect the site can see: give the robot's loop ample time to take it.
    await asyncio.sleep(2.0)
    stats = await robots.finish()
    assert (stats.transfers_attempted, stats.transfers_completed, stats.transfers_failed) == (1, 1, 0)
    assert stats.transfers_cross_site == 1
