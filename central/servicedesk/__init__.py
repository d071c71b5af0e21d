"""The service desk at central: the data agents in every city share (SPEC F21, F29-F33).

Customers with several numbers and optimistic edits, tickets (投诉单/工单) with a pure state
machine, notifications to customers through a durable outbox, a knowledge base searched in
Chinese and English, and one interaction time line per customer. Pure modules (customers,
tickets, textsearch, timeline) hold the rules; the *_store modules the SQL; grpc_api the edge.
"""
