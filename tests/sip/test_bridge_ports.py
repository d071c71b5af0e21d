"""The bridges' ports: from the top of the site's range, never inside rtpengine's, never shared by
two bridges (the pool alone, the config, and two real GStreamer bridges asking for one port)."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from site_node.media import ports
from site_node.media.bridge import BridgeError, Leg, MixBridge, free_rtp_port
from site_node.media.engine import MediaEngine
from tests.sip.test_units import province
from vcc.config import ConfigError, MediaEngineConfig, parse_province


def test_bridge_ports_come_from_the_top_of_the_range_never_from_rtpengines_and_never_twice() -> None:
    media = MediaEngineConfig(port_min=45000, port_max=45199, bridge_ports=20)
    engine = MediaEngine(media, dtmf_dest="127.0.0.1:9", log_path=Path("unused.log"))
    cmd = engine.command()
    assert "--port-min=45000" in cmd and "--port-max=45179" in cmd
    pool = ports.PortPool(media.bridge_min, media.port_max)
    taken = []
    with pytest.raises(ports.NoFreePort):
        while True:
            taken.append(pool.take())
    # Every even port with its odd neighbour inside the bridges' part: 45180..45198.
    assert taken == list(range(45180, 45199, 2))
    assert not [p for p in taken if media.port_min <= p + 1 and p <= media.rtp_max]
    # Given back, a port is handed out again; one bound by another process is skipped.
    pool.give_back([45184])
    assert pool.take() == 45184
    pool.give_back([45186, 45188])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", 45187))  # the RTCP neighbour of 45186
        assert pool.take() == 45188


def test_a_port_pinned_by_a_running_bridge_is_refused_to_another() -> None:
    pool = ports.PortPool(45300, 45309)
    a, b = pool.take(), pool.take()
    pool.pin([a, b])
    with pytest.raises(ports.NoFreePort):
        pool.pin([a, 45304])
    assert a in pool.held() and b in pool.held() and 45304 not in pool.held()
    pool.give_back([a])
    pool.pin([a])  # free again


def test_a_range_that_leaves_rtpengine_too_little_is_a_clear_config_error() -> None:
    sip = {"listen": "127.0.0.1:5061", "trunk_group": "pstn"}
    with pytest.raises(ConfigError, match="bridges"):
        parse_province(province({**sip, "media": {"port_min": 30000, "port_max": 30100, "bridge_ports": 99}}))
    # Two sites' blocks (RTP and bridges) overlap: refused, even when one engine is given.
    with pytest.raises(ConfigError, match="overlap"):
        parse_province(
            province(
                {**sip, "media": {"port_min": 30000, "port_max": 30999}},
                {"listen": "127.0.0.1:5062", "trunk_group": "pstn",
                 "media": {"ng": "127.0.0.1:2223", "port_min": 30950, "port_max": 31999}},
            )
        )  # fmt: skip


@pytest.mark.skipif(shutil.which("gst-launch-1.0") is None, reason="GStreamer missing")
async def test_two_bridges_never_share_a_port(tmp_path: Path) -> None:
    pool = ports.use_range(45400, 45419)
    first = MixBridge("a", [Leg("a", free_rtp_port(), 9), Leg("b", free_rtp_port(), 9)], tmp_path / "a.log")
    listen = first.legs[0].listen
    assert 45400 <= listen <= 45419
    try:
        await first.start({"a": ["b"], "b": ["a"]})
        # A second bridge told to listen on the first's port is refused before it runs.
        second = MixBridge("b", [Leg("a", listen, 9), Leg("b", free_rtp_port(), 9)], tmp_path / "b.log")
        with pytest.raises(BridgeError, match="another bridge"):
            await second.start({"a": ["b"], "b": ["a"]})
        assert second.pid is None and first.pid is not None
        await second.stop()
        # Ports handed out meanwhile are not the running bridge's.
        assert {free_rtp_port() for _ in range(4)}.isdisjoint({leg.listen for leg in first.legs})
        await first.stop()
        # Stopped, its ports are free for the next bridge.
        assert listen not in pool.held()
    finally:
        await first.stop()
        ports.use_range(*ports.DEFAULT_RANGE)
