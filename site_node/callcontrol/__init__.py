"""A site's call control: pure, single-threaded, time as an argument, effects out.

Parts, each with its own state (built by parts.py; the requests reach them through one small
side per caller, sides/, which the facade, switchboard.py, composes):
trunk (arrivals, call loss, the end of a call), resources (trunk, tie and board channels), ivr,
screen_pop, queues (the ACD), ringing (offers to agents, ring-no-answer), agents (states,
wrap-up, desks), connected (answer, hold, hang-up), legs_out (our callers served elsewhere),
guests (other cities' callers served here), transfers and consults, timers and effects.
"""

from site_node.callcontrol.directory import TransferTarget
from site_node.callcontrol.guests import RemoteOfferIn
from site_node.callcontrol.screen_pop import CUSTOMER_WAIT_S
from site_node.callcontrol.switchboard import Switchboard

__all__ = ["CUSTOMER_WAIT_S", "RemoteOfferIn", "Switchboard", "TransferTarget"]
