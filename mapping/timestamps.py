"""RFC 3339 timestamps to integer nanoseconds since the Unix epoch, exactly (no float on the way)."""

from __future__ import annotations

import re
from datetime import date, datetime
from functools import lru_cache

_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))?"
)
_EPOCH_DAY = date(1970, 1, 1).toordinal()
_LAST_NS = 2**64 - 1
"""OTLP times are unsigned 64-bit nanoseconds: nothing after 2554-07-21T23:34:33.709551615Z."""


def parse_timestamp_ns(text: str) -> int | None:
    """Return ``text`` as nanoseconds since the epoch, or None when it is not a valid timestamp.

    Accepts RFC 3339 date-times (``T``, ``t`` or a space between date and time), with any number of
    fraction digits (digits past the ninth are dropped). A timestamp without an offset is UTC, as
    the ingest contract decides. Times before 1970 or after 2554-07-21T23:34:33.709551615Z are
    refused: OTLP cannot carry them.
    """
    if (
        len(text) == 32
        and text[26:] == "+00:00"
        and text[10] == "T"
        and text[19] == "."
        and text[4] == "-"
        and text[7] == "-"
        and text[13] == ":"
        and text[16] == ":"
    ):
        nanos = _sdk_shape_ns(text)
        if nanos is not None:
            return nanos
    return _general_ns(text)


def _general_ns(text: str) -> int | None:
    """Every RFC 3339 form the contract accepts (``parse_timestamp_ns``)."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, _, sign, off_h, off_m = match.groups()
    days = _days_since_epoch(year, month, day)
    if days is None or int(hour) > 23 or int(minute) > 59 or int(second) > 59:
        return None
    offset_s = 0
    if sign:
        if int(off_h) > 23 or int(off_m) > 59:
            return None
        offset_s = (int(off_h) * 3600 + int(off_m) * 60) * (1 if sign == "+" else -1)
    seconds = days * 86_400 + int(hour) * 3600 + int(minute) * 60 + int(second) - offset_s
    nanos = seconds * 1_000_000_000 + (int(fraction[:9].ljust(9, "0")) if fraction else 0)
    if seconds < 0 or nanos > _LAST_NS:
        return None
    return nanos


def _sdk_shape_ns(text: str) -> int | None:
    """``YYYY-MM-DDTHH:MM:SS.ffffff+00:00``, what the SDK's ``datetime.isoformat()`` writes, read in C.

    The caller checked the length and every separator; the standard library's parser checks the digits
    between them and the ranges. It is laxer than RFC 3339 in the fraction's six places (it reads a zone
    there), so an aware result is refused. None sends the text down the general path, which decides.
    """
    try:
        moment = datetime.fromisoformat(text[:26])
    except ValueError:
        return None
    if moment.tzinfo is not None:  # a zone inside the fraction's six places (".00000Z", ".000+01"): not this shape
        return None
    seconds = (moment.toordinal() - _EPOCH_DAY) * 86_400 + moment.hour * 3600 + moment.minute * 60 + moment.second
    nanos = seconds * 1_000_000_000 + moment.microsecond * 1000
    if seconds < 0 or nanos > _LAST_NS:
        return None
    return nanos


@lru_cache(maxsize=1024)
def _days_since_epoch(year: str, month: str, day: str) -> int | None:
    """Days from 1970-01-01 to the date (None for a date that does not exist); dates repeat, so cached."""
    try:
        return date(int(year), int(month), int(day)).toordinal() - _EPOCH_DAY
    except ValueError:
        return None
