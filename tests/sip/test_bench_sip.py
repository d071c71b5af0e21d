"""`vcc bench sip` with its agents on real registered SIP phones (baresip, the robots' SIP mode):
a tiny real run (etcd, central, a site node and its rtpengine; SIPp callers). Every caller is
answered by the site; the agents' phones take some of them and talk while the rest wait with
music; the RTP probes are paired only with waiting callers (a phone's call is left alone)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.bench.sip import bench_sip

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]


async def test_the_sip_bench_answers_callers_on_its_agents_phones(tmp_path: Path) -> None:
    result = await bench_sip(tmp_path / "bench", concurrent=8, rate=4.0, steady_s=4.0, agents=2)
    assert result["calls_answered"] == 8 and result["calls_failed"] == 0, result
    assert result["agents_on_phones"] == 2
    # Both phones were talking with a caller at the window's end (each holds its first caller).
    assert result["calls_talking_to_phones"] == 2, result
    assert result["phone_answers"] >= 2, result
    # The probes heard waiting callers only (a probe on a phone's call would take its caller).
    assert result["rtp_probed_calls"] >= 1 and result["rtp_loss_pct"] is not None, result
    assert result["rtp_probes_left_to_phones"] == 2, result
