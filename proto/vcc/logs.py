"""Logging for every vcc process: one line per record, with the process's identity bound."""

from __future__ import annotations

import logging
import os
import sys


def configure(process: str, level: str | None = None) -> None:
    """Log to stderr as `time level process logger: message`; VCC_LOG_LEVEL overrides."""
    lvl = (level or os.environ.get("VCC_LOG_LEVEL", "INFO")).upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s {process} %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    # grpc and etcd clients are chatty at INFO.
    for noisy in ("aetcd", "grpc", "asyncio", "sqlalchemy.engine", "aiosqlite"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
