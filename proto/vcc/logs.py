"""Logging for every vcc process: one line per record, with the process's and the call's ids bound.

Two formats: `text` (the default, for a terminal) and `json` (one object per line, for a log
collector), chosen by `--log-format` or VCC_LOG_FORMAT. Ids are bound in a context variable
(`bind(call_id=..., agent_code=...)`, or `extra=` on one record) and land in every record made
in that context: the site id for the whole process, a call's id while its request is handled.

Phone numbers never reach a log line whole: a run of seven or more digits in a message, and the
`ani`/`phone` fields, are masked (13800000007 -> 138****0007). Call ids, which are not phone
numbers, are never all digits.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Literal

import orjson

LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")
LEVEL_ENV = "VCC_LOG_LEVEL"
FORMAT_ENV = "VCC_LOG_FORMAT"
# The ids a record may carry, in the order a text line shows them.
ID_FIELDS = ("site", "call_id", "agent_code", "replica", "offer_id", "skill_group")
# Fields that may hold a phone number: masked wherever they come from.
PHONE_FIELDS = ("ani", "phone")
# Extra fields a JSON line carries besides the ids, when a record has them.
EXTRA_FIELDS = ("event", "from_state", "to_state", "outcome", *PHONE_FIELDS)

_NO_IDS: Mapping[str, str] = MappingProxyType({})
_bound: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("vcc_log_ids", default=_NO_IDS)
# A digit run of 7+ that is a token of its own (not part of a hex id or a word).
_PHONE = re.compile(r"(?<![0-9A-Za-z])\d{7,}(?![0-9A-Za-z])")


def mask_phone(number: str) -> str:
    """138****0007: enough to tell two callers apart in a log, not enough to call them."""
    digits = len(number)
    if digits < 7:
        return "*" * digits
    head, tail = (3, 4) if digits >= 11 else (2, 2)
    return number[:head] + "*" * (digits - head - tail) + number[-tail:]


def mask_phones(text: str) -> str:
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), text)


@contextlib.contextmanager
def bind(**ids: str) -> Iterator[None]:
    """Bind ids to every record logged in this context (and the tasks it starts) until exit."""
    token = _bound.set({**_bound.get(), **{k: v for k, v in ids.items() if v}})
    try:
        yield
    finally:
        _bound.reset(token)


def bind_context(**ids: str) -> None:
    """Bind ids for the rest of this context: in a process's main task, the process's own (its
    site, its replica: every task inherits them); in an RPC's task, that RPC's call."""
    _bound.set({**_bound.get(), **{k: v for k, v in ids.items() if v}})


class _Context(logging.Filter):
    """Copies the bound ids onto each record (a record's own `extra=` ids win) and masks phones."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _bound.get().items():
            if getattr(record, key, None) in (None, ""):
                setattr(record, key, value)
        for key in PHONE_FIELDS:
            phone = getattr(record, key, None)
            if isinstance(phone, str) and phone:
                setattr(record, key, mask_phone(phone))
        return True


def _message(record: logging.LogRecord) -> str:
    return mask_phones(record.getMessage())


class TextFormatter(logging.Formatter):
    def __init__(self, process: str) -> None:
        super().__init__(datefmt="%Y-%m-%dT%H:%M:%S")
        self._process = process
        # The time to the second, formatted once per second rather than at every line.
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        ids = " ".join(f"{k}={v}" for k in ID_FIELDS[1:] if (v := getattr(record, k, None)) not in (None, ""))
        second = int(record.created)
        if second != self._second:
            self._second, self._stamp = second, self.formatTime(record, self.datefmt)
        line = (
            f"{self._stamp} {record.levelname} {self._process} {record.name}: "
            f"{_message(record)}{' [' + ids + ']' if ids else ''}"
        )
        if record.exc_info:
            line += "\n" + mask_phones(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, process, logger, msg, and the ids the record carries."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self._process = process

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "process": self._process,
            "logger": record.name,
            "msg": _message(record),
        }
        for key in (*ID_FIELDS, *EXTRA_FIELDS):
            value = getattr(record, key, None)
            if value not in (None, ""):
                out[key] = value
        if record.exc_info:
            out["exc"] = mask_phones(self.formatException(record.exc_info))
        # orjson: a sixth of json.dumps's cost per line, the same object (UTF-8, not escaped).
        return orjson.dumps(out, default=str).decode()


def log_format(value: str | None = None) -> LogFormat:
    """The format asked for (argument, else VCC_LOG_FORMAT, else text); ValueError for another."""
    raw = (value or os.environ.get(FORMAT_ENV, "") or "text").lower()
    if raw not in FORMATS:
        raise ValueError(f"log format: {' or '.join(FORMATS)}, not {raw!r}")
    return "json" if raw == "json" else "text"


def configure(process: str, level: str | None = None, fmt: str | None = None) -> None:
    """Log to stderr in the format asked for; VCC_LOG_LEVEL / VCC_LOG_FORMAT set the defaults."""
    lvl = (level or os.environ.get(LEVEL_ENV, "INFO")).upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Context())
    handler.setFormatter(JsonFormatter(process) if log_format(fmt) == "json" else TextFormatter(process))
    # No formatter here reads a record's source line, thread or process: not looking them up at
    # every record (the stack walk of findCaller above all) makes a site's line per transition
    # about a third cheaper.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    # grpc and etcd clients are chatty at INFO.
    for noisy in ("aetcd", "grpc", "asyncio", "sqlalchemy.engine", "aiosqlite"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
