"""The trunk's signalling link on real processes (etcd, central, a site node): many calls on one
Signalling stream answered by robots, each recorded at central exactly once; the link cut with
calls on it ends every one of them, and the records stay exact."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import eventually
from tests.integration.support import (
    address,
    assert_reconciled,
    central_records,
    module_cluster,
    site_summary,
    traffic_with_robots,
)
from tools.province.cluster import Cluster
from tools.province.generate import SiteSpec
from vcc import rpc
from vcc.tls import TRUNK, site_server
from vcc.v1 import common_pb2, trunk_pb2, trunk_pb2_grpc

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    run_dir: Path = tmp_path_factory.mktemp("trunk-link")
    sites = [
        SiteSpec("gz", "Guangzhou", trunk_channels=40, agents={"general": 4}),
        # fs: nobody answers; its calls wait in the queue until their link is cut.
        SiteSpec("fs", "Foshan", trunk_channels=10, agents={"general": 1}),
    ]
    with module_cluster(run_dir, sites, ring_timeout_s=2.0, wrap_up_s=0.0, routing={"mode": "isolated"}) as c:
        yield c


async def test_many_calls_on_one_link_each_answered_and_recorded_once(cluster: Cluster) -> None:
    # run_traffic puts every call to a site on that site's one link (TrafficPlan.trunk_link).
    views, records = await traffic_with_robots(cluster, {"gz": 20.0}, 1.5, patience_s=None, handle_s=0.2)
    assert len(views) >= 10
    assert_reconciled(views, records)
    assert all(v.outcome == "answered" for v in views), [(v.outcome, v.error) for v in views][:5]
    for view in views:
        site_steps = sum(1 for kind, _, _ in view.progress if kind not in ("digits", "hang_up"))
        # A link's message is shared among the calls it carries: never more than a message a step.
        assert 0 < view.messages_in <= site_steps, (view.messages_in, site_steps)


async def test_a_cut_link_ends_every_call_on_it_and_records_stay_exact(cluster: Cluster) -> None:
    refs = [uuid.uuid4().hex for _ in range(4)]
    queued: set[str] = set()
    async with rpc.channel(address(cluster, "fs"), persona=TRUNK, expect=site_server("fs")) as ch:
        link = trunk_pb2_grpc.TrunkIngressServiceStub(ch).Signalling(timeout=120)
        signals = [
            trunk_pb2.CallSignal(call_ref=r, offer=trunk_pb2.CallOffer(ani=f"1380000000{i}", dnis="10000"))
            for i, r in enumerate(refs)
        ]
        await link.write(trunk_pb2.SignallingRequest(signals=signals))
        call_ids: dict[str, str] = {}
        async with asyncio.timeout(60):
            while len(queued) < len(refs):
                message = await link.read()
                assert isinstance(message, trunk_pb2.SignallingResponse)
                answers = []
                for report in message.reports:
                    assert report.WhichOneof("report") == "progress", report
                    step = report.progress
                    call_ids[report.call_ref] = step.call_id
                    kind = step.WhichOneof("progress")
                    if kind == "prompt":
                        press = trunk_pb2.CallerDigits(digits="1")
                        answers.append(trunk_pb2.CallSignal(call_ref=report.call_ref, digits=press))
                    elif kind == "queued":
                        queued.add(report.call_ref)
                if answers:
                    await link.write(trunk_pb2.SignallingRequest(signals=answers))
        assert (await site_summary(cluster, "fs")).calls_in_progress == len(refs)
        link.cancel()  # the network cut

    async def every_call_over_and_recorded() -> bool:
        if (await site_summary(cluster, "fs")).calls_in_progress:
            return False
        records = {r.call_id: r for r in await central_records(cluster) if r.call_id in call_ids.values()}
        ended = all(r.state == common_pb2.CALL_STATE_ENDED for r in records.values())
        return len(records) == len(refs) and ended

    await eventually(every_call_over_and_recorded, timeout_s=30, what="every call of the cut link recorded")
    mine = [r for r in await central_records(cluster) if r.call_id in call_ids.values()]
    assert sorted(r.call_id for r in mine) == sorted(call_ids.values())  # exactly once each
    assert {r.outcome for r in mine} == {common_pb2.CALL_OUTCOME_ABANDONED}
