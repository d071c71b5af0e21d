"""What one site counts of its calls: the figures of its live summary."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SiteCounters:
    offered: int = 0
    blocked: int = 0
    answered: int = 0
    abandoned: int = 0
    failed: int = 0
    ring_no_answer: int = 0
    ivr_bypassed: int = 0
    # Calls talking with our agents for another city, and ours talking with another city's.
    served_for_others: int = 0
    served_elsewhere: int = 0
