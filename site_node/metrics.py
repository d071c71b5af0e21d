"""A site's Prometheus figures, read from its live parts at each scrape (no second set of counters).

Labels: site, skill group, agent state, channel pool and kind, outcome. Never a call id or an
agent code (those go in logs and spans).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from routing.agents import AgentState
from site_node.callcontrol import Switchboard
from site_node.callcontrol.domain import CallState


@dataclass(frozen=True)
class ShipperFigures:
    shipped: int
    failures: int
    dead_lettered: int


class SiteCollector(Collector):
    """Everything a city's operator watches, from the switchboard, the outbox and the links."""

    def __init__(
        self,
        sb: Switchboard,
        *,
        clock: Callable[[], float],
        outbox_pending: Callable[[], int],
        outbox_dead: Callable[[], int],
        shipper: Callable[[], ShipperFigures],
        leader_epoch: Callable[[], int | None],
        central_connected: Callable[[], bool],
        state_stream: Callable[[], tuple[int, int, int]] = lambda: (0, 0, 0),
        prompt_fallbacks: Callable[[], int] = lambda: 0,
    ) -> None:
        """`state_stream`: (messages, bytes, bytes had every message carried every agent)."""
        self._sb = sb
        self._clock = clock
        self._outbox_pending = outbox_pending
        self._outbox_dead = outbox_dead
        self._shipper = shipper
        self._leader_epoch = leader_epoch
        self._central_connected = central_connected
        self._state_stream = state_stream
        self._prompt_fallbacks = prompt_fallbacks

    def collect(self) -> Iterator[Metric]:
        sb = self._sb
        site = sb.site_id
        now = self._clock()
        c = sb.counters

        offered = CounterMetricFamily(
            "vcc_site_calls_offered", "Calls that arrived on this site's trunks.", labels=["site"]
        )
        offered.add_metric([site], c.offered)
        yield offered
        # Answered is counted when the call is answered (here or in another city), the others
        # when the call ends; a call that entered here is counted here.
        outcomes = CounterMetricFamily(
            "vcc_site_calls",
            "Calls that entered at this site, by outcome (answered anywhere, abandoned, blocked, failed).",
            labels=["site", "outcome"],
        )
        for outcome, value in (
            ("answered", c.answered),
            ("abandoned", c.abandoned),
            ("blocked", c.blocked),
            ("failed", c.failed),
        ):
            outcomes.add_metric([site, outcome], value)
        yield outcomes
        rna = CounterMetricFamily(
            "vcc_site_ring_no_answer", "Offers to an agent that rang out unanswered.", labels=["site"]
        )
        rna.add_metric([site], c.ring_no_answer)
        yield rna
        in_progress = GaugeMetricFamily(
            "vcc_site_calls_in_progress", "Live calls at this site (any state).", labels=["site"]
        )
        in_progress.add_metric([site], len(sb.calls))
        yield in_progress
        elsewhere = GaugeMetricFamily(
            "vcc_site_calls_served_elsewhere",
            "Calls of this site's trunks served by another city (direction out), or another city's "
            "calls served by this site's agents (direction in).",
            labels=["site", "direction"],
        )
        elsewhere.add_metric([site, "out"], sb.served_elsewhere)
        elsewhere.add_metric([site, "in"], sb.served_for_others)
        yield elsewhere

        waiting = GaugeMetricFamily(
            "vcc_site_calls_waiting",
            "Calls waiting in the queue, per skill group.",
            labels=["site", "skill_group"],
        )
        oldest = GaugeMetricFamily(
            "vcc_site_oldest_wait_seconds",
            "How long the longest-waiting call of a skill group has waited since it arrived (0: none waits).",
            labels=["site", "skill_group"],
        )
        ready = GaugeMetricFamily(
            "vcc_site_skill_agents_ready", "Agents ready for a skill group.", labels=["site", "skill_group"]
        )
        # Waiting as the caller hears it: queued, including calls held out of the ACD for a
        # moment while their screen pop is fetched (the ACD's own count leaves those out).
        queued: dict[str, list[float]] = {gid: [] for gid in sb.acd.skill_groups}
        for call in sb.calls.values():
            if call.state == CallState.QUEUED and call.skill_group in queued:
                queued[call.skill_group].append(call.arrived_at)
        for gid, arrivals in queued.items():
            waiting.add_metric([site, gid], len(arrivals))
            oldest.add_metric([site, gid], max(0.0, now - min(arrivals)) if arrivals else 0.0)
            ready.add_metric([site, gid], sb.acd.ready_count(gid))
        yield waiting
        yield oldest
        yield ready

        by_state = sb.agents_by_state()
        agents = GaugeMetricFamily(
            "vcc_site_agents", "This site's agents, by state.", labels=["site", "state"]
        )
        for state in AgentState:
            agents.add_metric([site, str(state)], by_state.get(str(state), 0))
        yield agents

        busy = GaugeMetricFamily(
            "vcc_site_channels_busy",
            "Channels in use: trunk groups, tie trunks to each peer city, boards.",
            labels=["site", "pool", "kind"],
        )
        total = GaugeMetricFamily(
            "vcc_site_channels", "Channels of each pool.", labels=["site", "pool", "kind"]
        )
        refused = CounterMetricFamily(
            "vcc_site_channels_refused",
            "Requests refused for want of a free channel.",
            labels=["site", "pool", "kind"],
        )
        for pool in [*sb.trunks.values(), *sb.ties.values(), *sb.boards.values()]:
            busy.add_metric([site, pool.id, pool.kind], pool.busy)
            total.add_metric([site, pool.id, pool.kind], pool.total)
            refused.add_metric([site, pool.id, pool.kind], pool.refused)
        yield busy
        yield total
        yield refused

        pending = GaugeMetricFamily(
            "vcc_site_outbox_pending",
            "Call events journaled here and not yet acknowledged by central.",
            labels=["site"],
        )
        pending.add_metric([site], self._outbox_pending())
        yield pending
        dead = GaugeMetricFamily(
            "vcc_site_outbox_dead_letters", "Events central refused for good, kept aside.", labels=["site"]
        )
        dead.add_metric([site], self._outbox_dead())
        yield dead
        fallbacks = CounterMetricFamily(
            "vcc_site_prompt_fallbacks",
            "Flow prompts a SIP caller heard as the menu file, their own not built (vcc prompts build).",
            labels=["site"],
        )
        fallbacks.add_metric([site], self._prompt_fallbacks())
        yield fallbacks
        shipper = self._shipper()
        shipped = CounterMetricFamily(
            "vcc_site_events_shipped", "Call events central acknowledged.", labels=["site"]
        )
        shipped.add_metric([site], shipper.shipped)
        yield shipped
        failures = CounterMetricFamily(
            "vcc_site_ship_failures", "Failed attempts to ship a batch of events to central.", labels=["site"]
        )
        failures.add_metric([site], shipper.failures)
        yield failures

        epoch = self._leader_epoch()
        leader = GaugeMetricFamily(
            "vcc_site_central_leader_epoch",
            "Epoch of the central leader this site follows (absent while etcd names none).",
            labels=["site"],
        )
        if epoch is not None:
            leader.add_metric([site], epoch)
        yield leader
        link = GaugeMetricFamily(
            "vcc_site_central_link_up",
            "1 while the live state stream to central is connected.",
            labels=["site"],
        )
        link.add_metric([site], 1 if self._central_connected() else 0)
        yield link
        messages, sent, whole = self._state_stream()
        stream = CounterMetricFamily(
            "vcc_site_state_stream_bytes",
            "Bytes of state messages sent to central (how=sent), and what they would have taken with "
            "every agent's state in each (how=whole, the stream before it was change-driven).",
            labels=["site", "how"],
        )
        stream.add_metric([site, "sent"], sent)
        stream.add_metric([site, "whole"], whole)
        yield stream
        count = CounterMetricFamily(
            "vcc_site_state_stream_messages", "State messages sent to central.", labels=["site"]
        )
        count.add_metric([site], messages)
        yield count
