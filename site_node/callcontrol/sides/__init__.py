"""The call control's requests, grouped by who makes them: each side is a small object over the
shared parts (`parts.py`), and the facade (`switchboard.py`) composes them.

callers.py (the trunk: arrivals, digits, hang-ups, dial-outs), agent_desk.py (an agent's state
and calls), transfer_desk.py (an agent's transfers, consultations, conferences),
supervisor_desk.py (a group leader on its team), administration.py (agents added or changed,
customer records saved at central), central.py (routing answers, pushed targets, pooled pulls),
peers.py (legs to and from other cities), deadlines.py (the timers due).
"""
