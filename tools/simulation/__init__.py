"""Simulation: scenarios, the callers (traffic) and robot agents, the reports and invariants, the
runner on a real cluster, the virtual-time engines, and the demo. Built on tools.province."""
