"""RFC 3339 timestamps to integer nanoseconds since the Unix epoch, exactly (no float on the way)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))?"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LAST_NS = 2**64 - 1
"""OTLP times are unsigned 64-bit nanoseconds: nothing after 2554-07-21T23:34:33.709551615Z."""


def parse_timestamp_ns(text: str) -> int | None:
    """Return ``text`` as nanoseconds since the epoch, or None when it is not a valid timestamp.

    Accepts RFC 3339 date-times (``T``, ``t`` or a space between date and time), with any number of
    fraction digits (digits past the ninth are dropped). A timestamp without an offset is UTC, as
    the ingest contract decides. Times before 1970 or after 2554-07-21T23:34:33.709551615Z are
    refused: OTLP cannot carry them.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None
    fraction = (match.group(7) or "")[:9].ljust(9, "0")
    offset_s = 0
    if match.group(9):
        off_h, off_m = int(match.group(10)), int(match.group(11))
        if off_h > 23 or off_m > 59:
            return None
        offset_s = (off_h * 3600 + off_m * 60) * (1 if match.group(9) == "+" else -1)
    delta = moment - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds - offset_s
    nanos = seconds * 1_000_000_000 + int(fraction)
    if seconds < 0 or nanos > _LAST_NS:
        return None
    return nanos
