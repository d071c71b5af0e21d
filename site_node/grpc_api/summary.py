"""The site's live summary (status RPC and etcd membership value), built from the switchboard."""

from __future__ import annotations

from site_node.callcontrol import Switchboard
from vcc.rpc import timestamp
from vcc.v1 import site_admin_pb2


def site_summary(
    sb: Switchboard,
    *,
    name: str,
    address: str,
    started_at: float,
    now: float,
    outbox_pending: int,
    agents: bool = True,
) -> site_admin_pb2.SiteSummary:
    """`agents=False` leaves `agent_states` out (the state stream sends presence as changes)."""
    pools = [*sb.trunks.values(), *sb.ties.values(), *sb.boards.values()]
    c = sb.counters
    groups = []
    for gid in sb.acd.skill_groups:
        members = sb.acd.members(gid)
        logged_in = sum(1 for code in members if sb.agents[code].state != "LOGGED_OUT")
        idle_since = sb.acd.longest_idle_since(gid)
        waiting = sb.acd.waiting(gid)
        groups.append(
            site_admin_pb2.SkillGroupSummary(
                skill_group=gid,
                calls_waiting=waiting,
                oldest_wait_s=sb.oldest_wait_s(gid, now),
                agents_ready=sb.acd.ready_count(gid),
                agents_logged_in=logged_in,
                longest_idle_s=0.0 if idle_since is None else now - idle_since,
                expected_wait_s=max(0.0, sb.expected_wait(gid, waiting + 1)),
            )
        )
    return site_admin_pb2.SiteSummary(
        site_id=sb.site_id,
        name=name,
        address=address,
        started_at=timestamp(started_at),
        updated_at=timestamp(now),
        agents_by_state=dict(sb.agents_by_state()),
        calls_waiting=sb.acd.total_waiting,
        calls_in_progress=len(sb.calls),
        resources=[
            site_admin_pb2.ResourceUsage(id=p.id, kind=p.kind, busy=p.busy, total=p.total, refused=p.refused)
            for p in pools
        ],
        skill_groups=groups,
        calls_offered=c.offered,
        calls_blocked=c.blocked,
        calls_answered=c.answered,
        calls_abandoned=c.abandoned,
        outbox_pending=outbox_pending,
        agent_states=presence(sb) if agents else {},
        calls_served_for_others=sb.served_for_others,
        calls_served_elsewhere=sb.served_elsewhere,
    )


def presence(sb: Switchboard) -> dict[str, str]:
    """Agent code -> AgentState name, for every agent of the site."""
    return {code: str(a.state) for code, a in sb.agents.items()}
