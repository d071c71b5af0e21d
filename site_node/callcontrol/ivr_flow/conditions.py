"""A flow's conditions, tested on the caller's variables and on the time the call control gives."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from vcc.ivr.flow import WEEKDAYS, Calendar, Condition


def holds(cond: Condition, context: Mapping[str, str], now: float, calendar: Calendar) -> bool:
    if cond.all_ is not None:
        return all(holds(c, context, now, calendar) for c in cond.all_)
    if cond.any_ is not None:
        return any(holds(c, context, now, calendar) for c in cond.any_)
    if cond.not_ is not None:
        return not holds(cond.not_, context, now, calendar)
    if cond.open is not None:
        return is_open(calendar, cond.open, now)
    if cond.holiday is not None:
        return (local_time(calendar, now).date() in calendar.holidays) == cond.holiday
    assert cond.var is not None
    value = context.get(cond.var)
    if cond.exists is not None:
        return bool(value) == cond.exists
    if cond.eq is not None:
        return value == cond.eq
    if cond.ne is not None:
        return value != cond.ne
    if cond.in_ is not None:
        return value in cond.in_
    number = _number(value)
    if number is None:
        # A missing or non-numeric value satisfies no comparison (nor its opposite).
        return False
    if cond.gt is not None:
        return number > cond.gt
    if cond.ge is not None:
        return number >= cond.ge
    if cond.lt is not None:
        return number < cond.lt
    assert cond.le is not None
    return number <= cond.le


def local_time(calendar: Calendar, now: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(now, dt.timezone(dt.timedelta(hours=calendar.utc_offset_h)))


def is_open(calendar: Calendar, schedule: str, now: float) -> bool:
    local = local_time(calendar, now)
    day = WEEKDAYS[local.weekday()]
    holiday = local.date() in calendar.holidays
    for hours in calendar.hours.get(schedule, []):
        if holiday and hours.closed_on_holidays:
            continue
        if day in hours.days and hours.from_ <= local.time() < hours.to:
            return True
    return False


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None
