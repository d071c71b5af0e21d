"""A SIP trunk for every site of a generated province: free UDP ports, disjoint RTP ranges."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

# Each managed rtpengine gets this many RTP ports (two per party per call, and room to spare).
DEFAULT_RTP_PORTS = 400


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def add_sip(
    raw: dict[str, Any],
    *,
    prompts_dir: str | Path,
    rtp_base: int = 30000,
    rtp_ports: int = DEFAULT_RTP_PORTS,
    busy_status: int = 503,
    language: str = "en",
) -> dict[str, Any]:
    """Give each site of `raw` (a province config dict) a SIP trunk on its first trunk group."""
    for i, site in enumerate(raw["sites"]):
        low = rtp_base + i * rtp_ports
        site["sip"] = {
            "listen": f"127.0.0.1:{free_udp_port()}",
            "trunk_group": site["trunk_groups"][0]["id"],
            "busy_status": busy_status,
            "prompts_dir": str(prompts_dir),
            "language": language,
            "media": {"port_min": low, "port_max": low + rtp_ports - 1},
        }
    return raw
