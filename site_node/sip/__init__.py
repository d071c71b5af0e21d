"""The SIP side of a site: the trunk from the local exchange (a user agent server on UDP).

A second adapter on the same call control as the gRPC trunk: an INVITE is an `offer()`, a
CANCEL or BYE is `caller_hang_up()`, digits reported by the media engine are `caller_digits()`;
the caller's progress (prompt, queued, connected, ended) becomes media commands and SIP answers.
"""
